"""Starting and stopping nodes the same way everywhere (console scripts, bring-up, tests)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence


def default_ros_env() -> None:
    """Keep DDS discovery on this host unless the user chose otherwise."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def run_nodes(factories: Sequence[Callable[[], object]], argv: Sequence[str] | None = None,
              threads: int = 4) -> int:
    """Init rclpy with ``argv`` (ROS args honoured), create the nodes, spin a multi-threaded
    executor until Ctrl-C, shut down cleanly. Returns a process exit code."""
    default_ros_env()
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=list(argv) if argv is not None else None)
    nodes = []
    executor = MultiThreadedExecutor(num_threads=threads)
    try:
        for make in factories:
            node = make()
            nodes.append(node)
            executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
