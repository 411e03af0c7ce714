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
