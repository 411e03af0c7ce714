"""``nol-ros bringup``: start the ROS graph from one command in a pip install (no ``launch``).

A graph file (``config/bringup/NAME.yaml``) lists the executables with their node names,
parameter files, remappings and arguments, and declares launch-style arguments with defaults;
``launch/NAME.launch.py`` describes the same graph for ``ros2 launch`` and
test/test_launch_files.py checks that the two name the same executables, node names, parameter
files, remappings and arguments, so they cannot drift. Both pass the same ``config/*.yaml``
parameter files.

One process per node, as ``ros2 launch`` does: bring-up then behaves exactly like the launch
files (names, remapping, parameters, logging); the nodes do not share one Python interpreter
lock (the reconstruction node must keep up with 30 Hz images while a learning job computes for
minutes next to it); and one node failing (e.g. out of memory in a job) does not take the camera
ingest down with it. The cost is one Python process (~0.2-0.8 GB) per node and DDS over
loopback between them (13 ms per 640x480 image measured here, far below the frame period).

The supervisor prefixes every output line with the node name, forwards Ctrl-C/SIGTERM to all
nodes, and stops the graph (exit 1) if a required node dies; nodes marked ``required: false``
(the bag player) may finish on their own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.commands._common import EXIT_FAILED, EXIT_OK, add_command
from nol_ros.errors import ConfigError, FileFormatError
from nol_ros.processes import stop_processes

ORDER = 10
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def register(sub) -> None:
    p = add_command(
        sub, "bringup", "start the ROS graph (one process per node) from a graph file",
        "Start the nodes of a graph file (config/bringup/NAME.yaml, the same graph as "
        "launch/NAME.launch.py) with their parameter files, one process per node; arguments "
        "are set like ros2 launch ones, NAME:=VALUE. Ctrl-C stops every node (exit 0); a "
        "required node that dies stops the graph (exit 1).",
        ["nol-ros bringup --config replay bag:=data/demo/bags/train_000001",
         "nol-ros bringup --config robot namespace:=robot",
         "nol-ros bringup --config config/bringup/learn.yaml --dry-run"],
        run_bringup)
    p.add_argument("--config", required=True, metavar="GRAPH",
                   help="graph name (robot, replay, learn) or path to a graph .yaml")
    p.add_argument("assignments", nargs="*", metavar="NAME:=VALUE",
                   help="graph arguments (see the graph file's 'arguments')")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands that would run and exit")
    p.add_argument("--log-dir", default="", help="also write each node's output to DIR/NAME.log")
    p.add_argument("--stop-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a node gets to exit after Ctrl-C before it is killed")


# -- graph files --------------------------------------------------------------------------------
@dataclass
class NodeSpec:
    executable: str
    name: str
    parameters: list[str] = field(default_factory=list)   # files in the config folder
    remappings: list[tuple[str, str]] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    required: bool = True


@dataclass
class Graph:
    path: Path
    config_dir: Path
    description: str
    arguments: dict[str, str | None]                        # name -> default (None = required)
    nodes: list[NodeSpec]


def config_dirs() -> list[Path]:
    """Where the package's config/ folder may be: the source tree, then installed shares."""
    out = [Path(__file__).resolve().parents[2] / "config",
           Path(sys.prefix) / "share" / "nol_ros" / "config"]
    try:
        # lazy: CLI start-up (nol-ros --help imports every command module)
        from ament_index_python.packages import get_package_share_directory

        out.append(Path(get_package_share_directory("nol_ros")) / "config")
    except Exception:  # not a ROS install: the first two are enough
        pass
    return out


def find_graph(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileFormatError(f"graph file '{p}' does not exist")
        return p
    for d in config_dirs():
        cand = d / "bringup" / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in config_dirs() for f in (d / "bringup").glob("*.yaml")})
    raise FileFormatError(f"no graph '{name_or_path}'; known: {known} (or give a .yaml path)")


def load_graph(path: str | Path) -> Graph:
    """Read and check a graph file (see config/bringup/*.yaml for the format)."""
    # lazy: CLI start-up (nol-ros --help imports every command module)
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise FileFormatError(f"cannot read graph file '{path}': {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise FileFormatError(f"graph file '{path}' needs a 'nodes' list")
    args = data.get("arguments") or {}
    if not isinstance(args, dict):
        raise FileFormatError(f"'{path}': 'arguments' must map names to defaults")
    nodes = []
    for i, n in enumerate(data["nodes"]):
        where = f"'{path}': node {i}"
        if not isinstance(n, dict) or not n.get("executable") or not n.get("name"):
            raise FileFormatError(f"{where} needs 'executable' and 'name'")
        unknown = set(n) - {"executable", "name", "parameters", "remappings", "arguments",
                            "required"}
        if unknown:
            raise FileFormatError(f"{where}: unknown keys {sorted(unknown)}")
        remaps = []
        for r in n.get("remappings") or []:
            if not (isinstance(r, list) and len(r) == 2):
                raise FileFormatError(f"{where}: a remapping is [from, to], got {r!r}")
            remaps.append((str(r[0]), str(r[1])))
        nodes.append(NodeSpec(executable=str(n["executable"]), name=str(n["name"]),
                              parameters=[str(x) for x in n.get("parameters") or []],
                              remappings=remaps,
                              arguments=[str(x) for x in n.get("arguments") or []],
                              required=bool(n.get("required", True))))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise FileFormatError(f"'{path}': node names repeat: {names}")
    return Graph(path=path, config_dir=path.resolve().parent.parent,
                 description=str(data.get("description", "")),
                 arguments={str(k): (None if v is None else str(v)) for k, v in args.items()},
                 nodes=nodes)


def parse_assignments(items: list[str], graph: Graph) -> dict[str, str]:
    values = dict(graph.arguments)
    for it in items:
        if ":=" not in it:
            raise ConfigError(f"argument '{it}' must look like NAME:=VALUE (e.g. bag:=my_bag)")
        k, v = it.split(":=", 1)
        if k not in graph.arguments:
            raise ConfigError(f"graph '{graph.path.stem}' has no argument '{k}'; it has "
                              f"{sorted(graph.arguments)}")
        values[k] = v
    missing = [k for k, v in values.items() if v is None]
    if missing:
        need = ", ".join(f"{k}:=..." for k in missing)
        raise ConfigError(f"graph '{graph.path.stem}' needs {need}")
    return values  # type: ignore[return-value]


def substitute(text: str, values: dict[str, str]) -> str:
    def one(m):
        if m.group(1) not in values:
            raise ConfigError(f"'${{{m.group(1)}}}' is not an argument of the graph")
        return values[m.group(1)]

    return _VAR.sub(one, text)


def _executable(name: str) -> str:
    """A node executable: the pip console script (next to the interpreter, or on PATH), else
    lib/nol_ros/NAME of a colcon install (what `ros2 run nol_ros NAME` runs)."""
    cands = [os.path.join(os.path.dirname(sys.executable), name), shutil.which(name)]
    try:
        # lazy: CLI start-up (nol-ros --help imports every command module)
        from ament_index_python.packages import get_package_prefix

        cands.append(os.path.join(get_package_prefix("nol_ros"), "lib", "nol_ros", name))
    except Exception:  # no ament index: a pip install
        pass
    for cand in cands:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise ConfigError(f"executable '{name}' not found next to {sys.executable}, on PATH or in "
                      "lib/nol_ros of a ROS install; run `make setup` (pip install -e .) so the "
                      "console scripts exist")


def commands(graph: Graph, values: dict[str, str]) -> list[tuple[NodeSpec, list[str]]]:
    """The command line of every node (checked: executables and parameter files exist)."""
    ns = values.get("namespace", "").strip("/")
    out = []
    for n in graph.nodes:
        cmd = [_executable(n.executable), *(substitute(a, values) for a in n.arguments),
               "--ros-args", "-r", f"__node:={n.name}"]
        if ns:
            cmd += ["-r", f"__ns:=/{ns}"]
        for f in n.parameters:
            p = graph.config_dir / f
            if not p.is_file():
                raise FileFormatError(f"parameter file '{p}' of node '{n.name}' does not exist")
            cmd += ["--params-file", str(p)]
        if "use_sim_time" in values:
            sim = values["use_sim_time"].lower()
            if sim not in ("true", "false"):
                raise ConfigError(f"use_sim_time must be true or false, got '{sim}'")
            cmd += ["-p", f"use_sim_time:={sim}"]
        for a, b in n.remappings:
            cmd += ["-r", f"{substitute(a, values)}:={substitute(b, values)}"]
        out.append((n, cmd))
    return out


# -- supervisor -----------------------------------------------------------------------------------
def _pump(name: str, stream, log_file) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()
        if log_file is not None:
            log_file.write(line)
            log_file.flush()
    stream.close()


def run_bringup(args) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.ros.environment import default_ros_env

    graph = load_graph(find_graph(args.config))
    values = parse_assignments(args.assignments, graph)
    cmds = commands(graph, values)
    if args.dry_run:
        for _n, cmd in cmds:
            print(" ".join(cmd))
        return EXIT_OK
    default_ros_env()
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: list[tuple[NodeSpec, subprocess.Popen]] = []
    pumps = []
    code = EXIT_OK
    print(f"[bringup] {graph.path.name}: {', '.join(n.name for n in graph.nodes)} "
          f"({', '.join(f'{k}={v}' for k, v in values.items())})", flush=True)
    try:
        for n, cmd in cmds:
            lf = open(log_dir / f"{n.name}.log", "w") if log_dir else None  # noqa: SIM115
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, start_new_session=True)
            t = threading.Thread(target=_pump, args=(n.name, p.stdout, lf), daemon=True)
            t.start()
            procs.append((n, p))
            pumps.append((t, lf))
        finished: set[str] = set()
        while not stop.is_set():
            for n, p in procs:
                rc = p.poll()
                if rc is None or n.name in finished:
                    continue
                finished.add(n.name)
                if n.required:
                    print(f"[bringup] required node '{n.name}' exited with code {rc}; "
                          "stopping the graph", flush=True)
                    code = EXIT_FAILED
                    stop.set()
                else:
                    print(f"[bringup] '{n.name}' finished (code {rc})", flush=True)
            stop.wait(0.2)
    finally:
        names = {id(p): n.name for n, p in procs}
        stop_processes([p for _, p in procs], args.stop_timeout, lambda p: print(
            f"[bringup] '{names[id(p)]}' did not stop in {args.stop_timeout:.0f} s: killed",
            flush=True))
        for t, lf in pumps:
            t.join(2)
            if lf is not None:
                lf.close()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"[bringup] stopped (exit {code})", flush=True)
    return code
