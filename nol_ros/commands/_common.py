"""Helpers shared by the ``nol-ros`` subcommands (no rclpy import at module level)."""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

EXIT_CODES = ("exit codes: 0 ok, 1 failed while running, 2 bad arguments or input (the message "
              "names the problem)")


def add_command(subparsers, name: str, help: str, description: str, examples: list[str],
                func) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with examples and the exit codes."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + EXIT_CODES
    p = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``[... --ros-args ROS... [--] ...]`` into (our arguments, ROS arguments)."""
    if "--ros-args" not in argv:
        return list(argv), []
    i = argv.index("--ros-args")
    rest = argv[i + 1:]
    if "--" in rest:
        j = rest.index("--")
        return argv[:i] + rest[j + 1:], rest[:j]
    return argv[:i], rest


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def remap_pair(text: str) -> tuple[str, str]:
    """'FROM:=TO' (ROS remapping syntax) -> (FROM, TO)."""
    if ":=" not in text:
        raise argparse.ArgumentTypeError(f"remapping '{text}' must look like FROM:=TO, e.g. "
                                         "/camera/rgb/image_raw:=/robot/camera/rgb/image_raw")
    a, b = text.split(":=", 1)
    if not a or not b:
        raise argparse.ArgumentTypeError(f"remapping '{text}' has an empty side")
    return a, b


def topic_count(text: str) -> tuple[str, int]:
    """'TOPIC=N' -> (TOPIC, N), N >= 1."""
    topic, _, n = text.rpartition("=")
    if not topic or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must look like TOPIC=N with N >= 1, e.g. "
                                         "/camera/rgb/image_raw=2")
    return topic, int(n)


def init_ros(ros_args: list[str], node_name: str):
    """rclpy.init with the ROS arguments, then a node; returns (context-free) node."""
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.ros.environment import default_ros_env

    default_ros_env()
    # lazy: CLI start-up (nol-ros --help imports every command module)
    import rclpy

    rclpy.init(args=["nol-ros", "--ros-args", *ros_args] if ros_args else None)
    return rclpy.create_node(node_name)
