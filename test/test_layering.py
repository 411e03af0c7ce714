"""The layers of the package, checked on the source: the core (everything but the ROS layer and
the applications) imports neither rclpy, nor ROS message packages, nor the ROS layer; the ROS
layer does not import the applications. Imports inside functions count too."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "nol_ros"
ROS_LAYER = ("nol_ros.ros", "nol_ros.nodes")
APPS = ("nol_ros.commands", "nol_ros.cli", "nol_ros.demo")
# rclpy and the rosidl-generated message packages (nol_ros.msg/srv/action are nol_ros's own)
ROS_PACKAGES = ("rclpy", "rosidl_runtime_py", "sensor_msgs", "geometry_msgs", "std_msgs",
                "std_srvs", "builtin_interfaces", "tf2_msgs", "rosgraph_msgs", "action_msgs",
                "rcl_interfaces", "nol_ros.msg", "nol_ros.srv", "nol_ros.action")


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")
                base = ".".join(up[:len(up) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(mod: str) -> str:
    if _under(mod, ROS_LAYER):
        return "ros"
    if _under(mod, APPS):
        return "app"
    return "core"


def test_core_never_imports_ros_and_the_ros_layer_never_imports_the_apps():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        mod = _module(path)
        layer = _layer(mod)
        for name in sorted(_imports(path)):
            if layer == "core" and (_under(name, ROS_PACKAGES) or _under(name, ROS_LAYER)
                                    or _under(name, APPS)):
                bad.append(f"{mod} (core) imports {name}")
            elif layer == "ros" and _under(name, APPS):
                bad.append(f"{mod} (ROS layer) imports {name}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checker itself: a function-level import and a relative import are found."""
    p = PKG / "_layering_probe.py"
    try:
        p.write_text("def f():\n    import rclpy\n    from .ros import conversions\n")
        names = _imports(p)
    finally:
        p.unlink()
    assert "rclpy" in names and "nol_ros.ros.conversions" in names
    assert _layer("nol_ros.streaming.live") == "core" and _layer("nol_ros.nodes.x") == "ros"


# -- imports at module level ----------------------------------------------------------------
def _lazy_without_reason(path: Path) -> list[int]:
    """Line numbers of imports inside a function of ``path`` that have no ``# lazy: REASON``
    comment: on the import's own line, or on the line above the block of consecutive import
    lines it belongs to (one reason may cover a block of imports, e.g. torch + torchvision)."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src, str(path))
    import_lines: dict[int, int] = {}   # first line -> last line of every import statement
    in_function: list[ast.stmt] = []

    def walk(node, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                import_lines[child.lineno] = child.end_lineno
                if inside:
                    in_function.append(child)
            walk(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    walk(tree, False)
    ends = {end: start for start, end in import_lines.items()}

    def has_reason(line_no: int) -> bool:
        text = lines[line_no - 1]
        return "# lazy:" in text and text.split("# lazy:", 1)[1].strip() != ""

    bad = []
    for node in in_function:
        first = node.lineno
        while first - 1 in ends:        # walk up the block of consecutive imports
            first = ends[first - 1]
        if not (has_reason(node.lineno) or has_reason(node.end_lineno)
                or (first > 1 and lines[first - 2].strip().startswith("# lazy:")
                    and has_reason(first - 1))):
            bad.append(node.lineno)
    return bad


def test_imports_are_at_module_level_unless_a_reason_says_why():
    """Every import inside a function under nol_ros/ carries a '# lazy: REASON' comment: an
    optional or heavy dependency (torch, torchvision, open3d, ...) loaded only when used, the
    CLI's start-up (nol-ros --help imports every command module), or a circular import.
    Everything else is imported at the top of its module."""
    bad = [f"{path.relative_to(PKG.parent)}:{line}" for path in sorted(PKG.rglob("*.py"))
           for line in _lazy_without_reason(path)]
    assert not bad, ("imports inside functions without a '# lazy: REASON' comment (move them to "
                     "the top of the module, or say why they must wait):\n" + "\n".join(bad))


def test_the_import_check_finds_an_unexplained_function_level_import(tmp_path):
    """The checker itself: a bare function-level import is reported (file:line), a commented
    one, a block under one comment and a module-level import are not."""
    p = tmp_path / "probe.py"
    p.write_text("import json\n\n\n"
                 "def f():\n"
                 "    import os\n"                                   # line 5: no reason
                 "    # lazy: torch (~2 s to import)\n"
                 "    import torch\n"
                 "    import torchvision\n"                          # same block: covered
                 "\n"
                 "    import open3d  # lazy: open3d (~3 s)\n"
                 "    from x import (\n"                             # line 11: no reason
                 "        y)\n"
                 "    # lazy:\n"
                 "    import z\n")                                    # line 14: empty reason
    assert _lazy_without_reason(p) == [5, 11, 14]
