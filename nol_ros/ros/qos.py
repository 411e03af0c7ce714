"""QoS profiles by name, so a YAML parameter can choose them."""

from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

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
