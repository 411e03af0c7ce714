"""QoS profiles by name, so a YAML parameter can choose them."""

from __future__ import annotations

from nol_ros.errors import ConfigError


def sensor_qos(reliability: str = "best_effort", depth: int = 5):
    """QoS for camera streams.

    ``best_effort`` (default) matches both reliable publishers (the openni2 driver: reliable,
    keep-last 1) and best-effort ones; ``reliable`` only matches reliable publishers.
    """
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    rel = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
           "reliable": ReliabilityPolicy.RELIABLE}.get(reliability)
    if rel is None:
        raise ConfigError(f"qos_reliability '{reliability}' unknown; use best_effort or reliable")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)), reliability=rel)
