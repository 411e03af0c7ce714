"""QoS profiles by name, so a YAML parameter can choose them."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from nol_ros.errors import ConfigError


def sensor_qos(reliability: str = "reliable", depth: int = 5):
    """QoS for camera streams.

    ``reliable`` (default) matches the openni2 driver (reliable, keep-last 1). ``best_effort``
    also matches best-effort publishers, but measured here a best-effort reader lost every
    640x480 image of a reliable writer in another process; use it only for best-effort cameras.
    """
    rel = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
           "reliable": ReliabilityPolicy.RELIABLE}.get(reliability)
    if rel is None:
        raise ConfigError(f"qos_reliability '{reliability}' unknown; use best_effort or reliable")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)), reliability=rel)


def latched_qos(depth: int = 1):
    """QoS of a latched topic: reliable, the last ``depth`` messages kept for a subscriber that
    joins later (status, the last selection)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


SERVICE_QUEUE = 256  # requests a service keeps waiting (see service_qos)


def service_qos():
    """QoS of every service the nodes offer: reliable, with a request queue of SERVICE_QUEUE.
    ROS 2's default keeps the last 10: a burst of more requests than the node takes at once
    overwrote the oldest waiting ones, whose clients then waited for ever (measured: of 40
    requests sent at once 10 were answered; with this queue all 40)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=SERVICE_QUEUE,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
