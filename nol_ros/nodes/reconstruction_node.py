"""reconstruction node: synchronised RGB-D ingest (and, as the pipeline grows, tracking + TSDF).

Subscribes (relative names, so a namespace applies):
  camera/rgb/image_raw (rgb8/bgr8/mono8), camera/depth_registered/image_raw (16UC1 mm or
  32FC1 m), camera/rgb/camera_info.
Services:
  ~/get_buffer_status (nol_ros/srv/GetBufferStatus): what was received, dropped and why.
  ~/reset (std_srvs/Trigger): clears the buffer.
Bad frames are counted and the last error is reported in the status; the node keeps running.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from nol_ros.errors import NolError
from nol_ros.ros.ingest import IngestConfig, RgbdIngest


@dataclass(frozen=True)
class ReconstructionNodeConfig:
    rgb_topic: str = "camera/rgb/image_raw"
    depth_topic: str = "camera/depth_registered/image_raw"
    camera_info_topic: str = "camera/rgb/camera_info"
    qos_reliability: str = "reliable"  # see config/reconstruction.yaml
    qos_depth: int = 10
    sync_slop_s: float = 0.02
    ingest: IngestConfig = field(default_factory=IngestConfig)


def make_node(node_name: str = "reconstruction", **node_kwargs):
    """Create the node (rclpy must be initialised)."""
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from nol_ros.ros.conversions import ns_to_stamp, stamp_to_ns
    from nol_ros.ros.params import declare_and_read
    from nol_ros.ros.qos import sensor_qos
    from nol_ros.ros.sync import ApproximateTimeSync
    from nol_ros.srv import GetBufferStatus

    class ReconstructionNode(Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: ReconstructionNodeConfig = declare_and_read(self, ReconstructionNodeConfig)
            self.ingest = RgbdIngest(self.cfg.ingest)
            self._info = None
            qos = sensor_qos(self.cfg.qos_reliability, self.cfg.qos_depth)
            self.sync = ApproximateTimeSync(2, self.cfg.sync_slop_s, self._on_pair)
            def feed(i):
                return lambda m: self.sync.add(i, stamp_to_ns(m.header.stamp), m)

            self.create_subscription(Image, self.cfg.rgb_topic, feed(0), qos)
            self.create_subscription(Image, self.cfg.depth_topic, feed(1), qos)
            self.create_subscription(CameraInfo, self.cfg.camera_info_topic, self._on_info, qos)
            self.create_service(GetBufferStatus, "~/get_buffer_status", self._on_status)
            self.create_service(Trigger, "~/reset", self._on_reset)
            self.get_logger().info(
                f"listening on {self.cfg.rgb_topic}, {self.cfg.depth_topic}, "
                f"{self.cfg.camera_info_topic} (qos {self.cfg.qos_reliability}, "
                f"slop {self.cfg.sync_slop_s} s)")
            self._ns_to_stamp = ns_to_stamp

        def _on_info(self, msg):
            self._info = msg

        def _on_pair(self, msgs):
            rgb, depth = msgs
            try:
                self.ingest.add(rgb, depth, self._info)
            except NolError as e:
                self.get_logger().error(f"frame rejected [{e.code}]: {e}",
                                        throttle_duration_sec=5.0)

        def _on_status(self, request, response):
            s = self.ingest.status
            response.frames_received = s.frames_received
            response.frames_dropped = s.frames_dropped
            response.messages_unpaired = self.sync.dropped
            response.width, response.height = s.width, s.height
            response.rgb_encoding, response.depth_encoding = s.rgb_encoding, s.depth_encoding
            response.last_valid_depth_fraction = s.last_valid_depth_fraction
            response.last_median_depth_m = s.last_median_depth_m
            response.last_stamp = self._ns_to_stamp(s.last_stamp_ns)
            response.error_code, response.message = s.error_code, s.message
            return response

        def _on_reset(self, request, response):
            self.ingest.clear()
            response.success, response.message = True, "buffer cleared"
            return response

    return ReconstructionNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
