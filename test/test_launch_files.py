"""launch/ cannot be executed here (launch_ros is not installable from PyPI), so every launch
file is checked statically, and against the bring-up graph of the same name
(config/bringup/NAME.yaml, what `nol-ros bringup` starts in a pip install): the same
executables, node names, parameter files, remappings, command-line arguments and launch
arguments with the same defaults. Every executable is a console script of setup.py and an
executable of CMakeLists.txt; every parameter file exists and holds parameters for its node in
any namespace; every parameter in config/*.yaml is a field of the node's config dataclass (types
checked), and every field is listed there (set, or commented with the core default)."""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _ev(node):
    """A launch-file expression as plain data: LaunchConfiguration('x') -> '${x}',
    os.path.join(..., 'f.yaml') -> 'f.yaml', lists of text/substitutions concatenated."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Call):
        fn = getattr(node.func, "id", getattr(node.func, "attr", None))
        if fn == "LaunchConfiguration":
            return "${" + node.args[0].value + "}"
        if fn == "join":
            return _ev(node.args[-1])
        raise AssertionError(f"unexpected call {fn} in a launch argument")
    if isinstance(node, ast.List):
        return [_ev(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_ev(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_ev(k): _ev(v) for k, v in zip(node.keys, node.values)}
    raise AssertionError(f"cannot evaluate {ast.dump(node)[:80]}")


def _kw(call, key, default=None):
    for k in call.keywords:
        if k.arg == key:
            return _ev(k.value)
    return default


def _text(v):
    return "".join(v) if isinstance(v, list) else v


def launch_graph(path):
    """(arguments {name: default or None}, nodes [dict]) of a launch file."""
    tree = ast.parse(path.read_text())
    args = {}
    for c in _calls(tree, "DeclareLaunchArgument"):
        args[c.args[0].value] = _kw(c, "default_value")
    nodes = []
    for n in _calls(tree, "Node"):
        params = _kw(n, "parameters", [])
        nodes.append({
            "executable": _kw(n, "executable"), "name": _kw(n, "name"),
            "namespace": _kw(n, "namespace"),
            "parameters": [p for p in params if isinstance(p, str)],
            "inline": [p for p in params if isinstance(p, dict)],
            "remappings": [(_text(a), _text(b)) for a, b in _kw(n, "remappings", [])],
            "arguments": [_text(a) for a in _kw(n, "arguments", [])]})
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    return args, nodes, used


def _setup_nodes():
    tree = ast.parse((ROOT / "setup.py").read_text())
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NODES":
            return _ev(n.value)
    raise AssertionError("setup.py has no NODES")


def _cmake_executables():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"set\(NOL_ROS_EXECUTABLES(.*?)\)", cmake, re.S).group(1)
    return dict(e.split("=", 1) for e in re.findall(r'"([^"]+)"', block))


def test_executables_agree_between_setup_and_cmake():
    import importlib

    setup, cmake = _setup_nodes(), _cmake_executables()
    assert {k: v for k, v in cmake.items() if k != "nol-ros"} == setup
    for target in cmake.values():
        mod, func = target.split(":")
        assert callable(getattr(importlib.import_module(mod), func)), target


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_existing_things_and_matches_its_bringup_graph(path):
    from nol_ros.commands.bringup import commands, load_graph

    args, nodes, used = launch_graph(path)
    assert nodes, f"{path.name} starts no node"
    assert used <= set(args), f"{path.name}: undeclared arguments {used - set(args)}"
    setup = _setup_nodes()
    for n in nodes:
        assert n["executable"] in setup, f"{path.name}: {n['executable']} is not an executable"
        assert {"use_sim_time": "${use_sim_time}"} in n["inline"], \
            f"{path.name}: {n['name']} does not get use_sim_time"
        assert n["namespace"] == "${namespace}", f"{path.name}: {n['name']} ignores namespace"
        for f in n["parameters"]:
            p = ROOT / "config" / f
            assert p.exists(), f"{path.name}: config/{f} missing"
            keys = set(yaml.safe_load(p.read_text()))
            assert f"/**/{n['name']}" in keys, f"config/{f} has no '/**/{n['name']}' section"
            assert all("ros__parameters" in v for v in yaml.safe_load(p.read_text()).values())
    # ... and the bring-up graph of the same name starts exactly this
    gpath = ROOT / "config" / "bringup" / path.name.replace(".launch.py", ".yaml")
    assert gpath.exists(), f"{path.name} has no bring-up graph {gpath.name}"
    graph = load_graph(gpath)
    assert graph.arguments == args, f"{gpath.name} arguments differ from {path.name}"
    assert [(n.executable, n.name) for n in graph.nodes] == \
        [(n["executable"], n["name"]) for n in nodes]
    for g, n in zip(graph.nodes, nodes):
        assert g.parameters == n["parameters"], g.name
        assert g.remappings == n["remappings"], g.name
        assert g.arguments == n["arguments"], g.name
    values = {k: (v if v is not None else "x") for k, v in graph.arguments.items()}
    for spec, cmd in commands(graph, values):  # executables and parameter files resolve
        assert Path(cmd[0]).exists() and "--ros-args" in cmd, spec.name


def _commented_defaults(text: str) -> dict:
    """'# name: value' lines inside ros__parameters (documented core defaults)."""
    out = {}
    for m in re.finditer(r"^    # ([A-Za-z_][\w.]*): (.+?)(?:[ \t]+#.*)?$", text, re.M):
        out[m.group(1)] = yaml.safe_load(m.group(2))
    return out


CONFIGS = [("reconstruction", "nol_ros.services.reconstruction:ReconstructionConfig", ""),
           ("nol", "nol_ros.services.learning:LearningConfig", ""),
           ("view_selection", "nol_ros.services.selection:SelectionConfig", ""),
           ("trainer", "nol_ros.services.training:TrainingConfig", ""),
           ("recognizer", "nol_ros.services.recognition:RecognitionConfig", ""),
           ("transfer", "nol_ros.services.transfer:TransferServiceConfig", "")]


@pytest.mark.parametrize("name,target,_", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_config_files_document_every_parameter_of_the_node(name, target, _):
    import importlib

    from nol_ros.config import flatten, from_dict
    from nol_ros.ros.params import load_params_file

    mod, cls_name = target.split(":")
    cls = getattr(importlib.import_module(mod), cls_name)
    path = ROOT / "config" / f"{name}.yaml"
    params = load_params_file(path, name)
    fields = flatten(cls())
    assert set(params) <= set(fields), f"unknown parameters {set(params) - set(fields)}"
    from_dict(cls, params)  # types check
    commented = _commented_defaults(path.read_text())
    assert set(commented) <= set(fields), f"unknown commented {set(commented) - set(fields)}"
    for k, v in commented.items():
        assert v == fields[k], f"config/{name}.yaml documents {k}: {v}, the default is {fields[k]}"
    listed = set(params) | set(commented)
    missing = {k for k in fields if k not in listed
               and not (name == "view_selection" and k.startswith("self_annotation."))}
    assert not missing, f"config/{name}.yaml does not document {sorted(missing)}"


@pytest.mark.parametrize("name,target,_", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_every_parameter_has_a_description(name, target, _):
    """What ros2 param describe shows (nol_ros.ros.params.declare_and_read): the comment in
    config/NAME.yaml or, for the core configs a node embeds, beside the field in the code."""
    import importlib

    from nol_ros.config import flat_field_docs, flatten
    from nol_ros.ros.params import parameter_docs

    mod, cls_name = target.split(":")
    cls = getattr(importlib.import_module(mod), cls_name)
    docs = {**flat_field_docs(cls), **{k: v for k, v in parameter_docs(name).items() if v}}
    missing = [k for k in flatten(cls()) if not docs.get(k)]
    assert not missing, f"parameters without a description: {missing}"


def test_field_docs_read_the_comments_of_a_config():
    from dataclasses import dataclass

    from nol_ros.config import field_docs

    @dataclass(frozen=True)
    class C:
        a: float = 1.0       # the first
        #                      and its second line
        b: int = 2
        # a group comment: not b's
        c: str = "x"  # third

    assert field_docs(C) == {"a": "the first and its second line", "c": "third"}


def test_params_file_keys_apply_in_any_namespace(tmp_path):
    """The /**/NAME keys: a namespaced node gets its parameters (rcl's own matching)."""
    import subprocess
    import sys

    code = ("import rclpy, sys; from rclpy.node import Node; rclpy.init(args=sys.argv); "
            "n = Node('reconstruction', namespace='/robot'); "
            "n.declare_parameter('sync_slop_s', 0.5); print(n.get_parameter('sync_slop_s').value)")
    out = subprocess.run([sys.executable, "-c", code, "--ros-args", "--params-file",
                          str(ROOT / "config" / "reconstruction.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.02"
