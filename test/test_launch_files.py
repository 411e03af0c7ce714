"""launch/ cannot be executed here (launch_ros is not installable from PyPI), so every launch
file is checked statically: each executable it names is a console script of setup.py and a
node script of CMakeLists.txt, each config file it names exists and holds parameters for the
node name it is given, and each LaunchConfiguration has a DeclareLaunchArgument."""

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call, key):
    for k in call.keywords:
        if k.arg == key and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def test_launch_files_reference_existing_executables_and_configs():
    files = sorted((ROOT / "launch").glob("*.launch.py"))
    assert files, "no launch files"
    setup = (ROOT / "setup.py").read_text()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    cmake_nodes = re.search(r"foreach\(node ([^)]*)\)", cmake).group(1).split()
    for f in files:
        tree = ast.parse(f.read_text())
        nodes = _calls(tree, "Node")
        assert nodes, f"{f.name} starts no node"
        for n in nodes:
            exe = _kw(n, "executable")
            assert f'"{exe}"' in setup, f"{f.name}: {exe} is not a console script"
            assert exe in cmake_nodes, f"{f.name}: {exe} is not installed by CMakeLists.txt"
        configs = [c.value for c in ast.walk(tree) if isinstance(c, ast.Constant)
                   and isinstance(c.value, str) and c.value.endswith(".yaml")]
        for cfg in configs:
            p = ROOT / "config" / cfg
            assert p.exists(), f"{f.name}: config/{cfg} missing"
            data = yaml.safe_load(p.read_text())
            assert all("ros__parameters" in v for v in data.values())
        names = {_kw(n, "name") for n in nodes}
        for cfg in configs:
            data = yaml.safe_load((ROOT / "config" / cfg).read_text())
            assert set(data) & names, f"config/{cfg} has parameters for none of {names}"
        declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
        used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
        assert used <= declared, f"{f.name}: undeclared arguments {used - declared}"


def test_config_files_match_the_node_config_dataclasses():
    """Every parameter in config/*.yaml is a field of the node's config dataclass."""
    from nol_ros.nodes.nol_node import NolNodeConfig
    from nol_ros.nodes.reconstruction_node import ReconstructionNodeConfig
    from nol_ros.ros.params import config_from_flat, flatten_config

    for name, cls in [("reconstruction", ReconstructionNodeConfig), ("nol", NolNodeConfig)]:
        data = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
        params = data[name]["ros__parameters"]
        known = set(flatten_config(cls()))
        assert set(params) <= known, f"unknown parameters {set(params) - known}"
        config_from_flat(cls, params)  # types check
