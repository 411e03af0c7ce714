"""The documentation against the code (fast: no ROS graph, no training).

docs/ros_api.md must name every service, action and topic a node module creates with a literal
name, every interface of msg/ srv/ action/, and every parameter of every node's config
dataclass (the flattened, dotted names ``declare_and_read`` declares). README.md must stay a
short page that starts with the two commands. The bad-input catalogue of docs/reliability.md
lists the same cases, categories, codes and tests as ``CASES`` of
test/test_bad_input_catalogue.py. Every command the README, BENCHMARKS.md and docs/ give (bench
scripts, ``python -m`` modules, ``nol-ros`` subcommands, make targets) names a file, command
and options that exist, so each runs from the repository root.
"""

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS_API = ROOT / "docs" / "ros_api.md"
README = ROOT / "README.md"
NODE_FILES = sorted((ROOT / "nol_ros" / "nodes").glob("*_node.py"))
ROS_FILES = sorted((ROOT / "nol_ros" / "ros").glob("*.py"))

# create_service(Type, "name" / offer_service(node, Type, "name" / create_publisher(Type,
# "name" / create_subscription(Type, "name" / ActionServer(node, Type, "name": the literal
# name strings
_NAMED = re.compile(r"(?:create_service\(|offer_service\(\s*\w+,|create_publisher\(|"
                    r"create_subscription\()\s*\w+,\s*"
                    r"\"([^\"]+)\"|ActionServer\(\s*\w+,\s*\w+,\s*\"([^\"]+)\"")
_CONFIG = re.compile(r"declare_and_read\(\s*self,\s*(\w+)")


def _doc() -> str:
    return ROS_API.read_text()


def _created_names() -> list[tuple[str, str]]:
    out = []
    for path in NODE_FILES + ROS_FILES:
        for m in _NAMED.finditer(path.read_text()):
            out.append((path.name, m.group(1) or m.group(2)))
    return out


def _node_configs() -> list[tuple[str, type]]:
    """(node module, its config dataclass), the class found by name in nol_ros.services."""
    import nol_ros.services as services

    mods = [importlib.import_module(f"nol_ros.services.{m.name}")
            for m in pkgutil.iter_modules(services.__path__)]
    out = []
    for path in NODE_FILES:
        m = _CONFIG.search(path.read_text())
        assert m, f"{path.name}: no declare_and_read(self, Config, ...) found"
        cls = next((getattr(mod, m.group(1)) for mod in mods if hasattr(mod, m.group(1))), None)
        assert cls is not None, f"{path.name}: {m.group(1)} is not in nol_ros.services"
        out.append((path.stem, cls))
    return out


def test_the_scan_finds_what_the_nodes_create():
    names = {n for _, n in _created_names()}
    # a few names every version of the graph has: the scan itself must keep working
    assert {"~/learn_object", "~/progress", "~/status", "~/detections", "/tf"} <= names
    assert len(_node_configs()) == len(NODE_FILES) >= 5


def test_ros_api_names_every_service_action_and_topic_of_the_nodes():
    doc = _doc()
    missing = sorted({f"{f}: {n}" for f, n in _created_names() if f"`{n}`" not in doc})
    assert not missing, f"docs/ros_api.md does not mention (in backticks): {missing}"


def test_ros_api_names_every_interface():
    doc = _doc()
    files = [p for d in ("msg", "srv", "action") for p in sorted((ROOT / d).iterdir())]
    missing = [p.name for p in files if p.stem not in doc]
    assert not missing, f"docs/ros_api.md does not mention the interfaces {missing}"


def test_ros_api_names_every_node_and_its_executable():
    doc = _doc()
    for path in NODE_FILES:
        name = path.stem.removesuffix("_node")
        assert path.stem in doc and f"`{name}`" in doc, f"docs/ros_api.md misses {path.stem}"


@pytest.mark.parametrize("node", [p.stem for p in NODE_FILES])
def test_ros_api_documents_every_parameter_of_the_node(node):
    from nol_ros.config import flatten

    cls = dict(_node_configs())[node]
    doc = _doc()
    section = doc.split(f"## {node}", 1)
    assert len(section) == 2, f"docs/ros_api.md has no section '## {node}'"
    text = section[1].split("\n## ", 1)[0]
    missing = [k for k in flatten(cls()) if f"`{k}`" not in text]
    assert not missing, f"docs/ros_api.md, section {node}, misses the parameters {missing}"


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; at most 150"
    body = [ln for ln in lines if ln.strip() and not ln.startswith("# ")]
    assert body[0] == "```bash", "README.md must start with the bash block of the two commands"
    assert re.match(r"make demo +# \S", body[1]), body[1]
    assert re.match(r"make test +# \S", body[2]), body[2]
    assert body[3] == "```"


def _catalogue_rows() -> dict[str, list[str]]:
    """id -> cells of the table in docs/reliability.md's "Bad-input catalogue" section."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("\n## Bad-input catalogue\n", 1)
    assert len(section) == 2, "docs/reliability.md has no section '## Bad-input catalogue'"
    rows = {}
    for line in section[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not line.startswith("| ") or cells[0] in ("id", "---") or set(cells[0]) <= {"-"}:
            continue
        assert cells[0] not in rows, f"docs/reliability.md lists {cells[0]} twice"
        rows[cells[0]] = cells
    return rows


def test_the_bad_input_catalogue_in_the_docs_is_the_tested_one():
    from test_bad_input_catalogue import CASES, where_tested

    rows = _catalogue_rows()
    cases = {c.id: c for c in CASES}
    assert sorted(rows) == sorted(cases), (
        f"only in docs/reliability.md: {sorted(rows.keys() - cases.keys())}; only in "
        f"test/test_bad_input_catalogue.py: {sorted(cases.keys() - rows.keys())}")
    for cid, (_, category, _, code, where) in rows.items():
        c = cases[cid]
        want = c.code if c.code.startswith("exit") else f"`{c.code}`"
        if c.send and c.send[0] == "cli":
            want = f"exit {c.exit}, {want}"
        assert (category, code, where) == (c.category, want, f"`{where_tested(c)}`"), cid


# -- every command the docs give runs from the repository root -------------------------------
DOC_FILES = [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _code_spans(text: str) -> list[str]:
    """Inline code spans and the logical lines of code blocks (fenced or indented 4 spaces;
    a line ending in a backslash continues on the next), comments after '#' dropped."""
    spans, block, fenced = [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            block.append(line.strip())
            if not line.rstrip().endswith("\\"):
                line = " ".join(s.rstrip("\\") for s in block)
                spans.append(re.sub(r"(^|\s)#.*", "", line).strip())
                block = []
            continue
        spans += [s.replace("\\|", " ") for s in re.findall(r"`([^`\n]+)`", line)]
    return spans


def _documented_commands() -> list[tuple[str, str]]:
    out = []
    for path in DOC_FILES:
        for span in _code_spans(path.read_text()):
            if re.search(r"(^|\s)(\.venv/bin/python|python|nol-ros|make)\s", span + " "):
                out.append((path.name, span))
    return out


def _nol_ros_options() -> dict[str, set[str]]:
    """Subcommand -> its option strings, from the real parser."""
    from nol_ros.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and hasattr(a, "_name_parser_map"))
    return {name: {o for act in p._actions for o in act.option_strings}
            for name, p in sub.choices.items()}


def test_the_command_scan_finds_the_documented_commands():
    spans = [s for _, s in _documented_commands()]
    assert any("bench/bench_tracking.py --stretch 0:595" in s and "--trackers" in s
               for s in spans), "a continued code line was not joined"
    assert any(s.startswith("nol-ros learn") for s in spans)
    assert any(s.startswith("make demo") for s in spans)


def test_every_documented_command_names_a_script_and_options_that_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    cli = _nol_ros_options()
    problems = []
    for doc, cmd in _documented_commands():
        flags = set(_FLAG.findall(cmd))
        for script in re.findall(r"(?:^|\s)((?:bench|tools)/[\w/]+\.(?:py|sh))", cmd):
            if not (ROOT / script).is_file():
                problems.append(f"{doc}: `{cmd}`: no file {script}")
                continue
            src = (ROOT / script).read_text()
            problems += [f"{doc}: `{cmd}`: {script} has no option {f}" for f in sorted(flags)
                         if f'"{f}"' not in src and f"'{f}'" not in src]
        for mod in re.findall(r"python -m ([\w.]+)", cmd):
            rel = Path(*mod.split("."))
            if not ((ROOT / rel).with_suffix(".py").is_file()
                    or (ROOT / rel / "__main__.py").is_file()):
                problems.append(f"{doc}: `{cmd}`: no module {mod}")
                continue
            src = ((ROOT / rel).with_suffix(".py") if (ROOT / rel).with_suffix(".py").is_file()
                   else ROOT / rel / "__main__.py").read_text()
            problems += [f"{doc}: `{cmd}`: {mod} has no option {f}" for f in sorted(flags)
                         if f'"{f}"' not in src and f"'{f}'" not in src]
        for sub, rest in re.findall(r"(?:^|\s)nol-ros ([a-z][\w-]*)((?:\s[^|]*)?)", cmd):
            if sub not in cli:
                problems.append(f"{doc}: `{cmd}`: nol-ros has no command {sub}")
                continue
            problems += [f"{doc}: `{cmd}`: nol-ros {sub} has no option {f}"
                         for f in sorted(set(_FLAG.findall(rest)) - cli[sub])]
        for target in re.findall(r"(?:^|\s)make ([a-z][\w-]*)", cmd):
            if target not in targets:
                problems.append(f"{doc}: `{cmd}`: the Makefile has no target {target}")
    assert not problems, "\n".join(problems)
