"""reconstruction node: RGB-D ingest, live tracking, the camera pose on /tf, keyframes, status,
the buffer's export and scene mesh (inside `export_root`); the work is
nol_ros.services.reconstruction. A TF goes out ONLY for frames the tracker trusts (map -> odom
with odometry, REP 105; map -> camera without): a robot must never act on a guessed pose.
Topics, services and parameters: docs/ros_api.md."""

from __future__ import annotations

import sys
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from nol_ros.msg import Keyframe, TrackingStatus
from nol_ros.ros.conversions import (
    buffer_status_response,
    export_response,
    keyframe_msg,
    mesh_response,
    tracking_status_msg,
)
from nol_ros.ros.job_services import answer
from nol_ros.ros.params import declare_and_read
from nol_ros.ros.qos import sensor_qos
from nol_ros.ros.runtime import (
    ErrorReporter,
    OwnExecutorSubscriptions,
    ShutsDown,
    log_to,
    offer_service,
    publish_quietly,
    run_nodes,
    send_tracking_tf,
    tf_endpoints,
    tf_prior,
    wall_timer,
)
from nol_ros.services.reconstruction import LiveReconstruction, ReconstructionConfig
from nol_ros.srv import ExportSequence, GetBufferStatus, SaveMesh
from nol_ros.streaming.messages import stamp_to_ns
from nol_ros.streaming.sync import ApproximateTimeSync

RANGES = {"qos_depth": (1, 1000), "sync_slop_s": (0.0, 1.0), "status_rate_hz": (0.01, 100.0),
          "camera_info_wait_s": (0.0, 3600.0), "export_wait_for_tracking_s": (0.0, 3600.0),
          "stamp_jump_s": (0.001, 86400.0), "stamp_future_s": (0.001, 86400.0), "stamp_jump_frames":
          (1, 1000), "ingest.max_frames": (1, 100000), "tracking.max_backlog": (1, 10000)}


class ReconstructionNode(ShutsDown, Node):
    shutdown_attr = ("images", "recon")   # the image thread first: nothing feeds recon

    def __init__(self, node_name: str = "reconstruction", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.cfg: ReconstructionConfig = declare_and_read(self, ReconstructionConfig,
                                                          "reconstruction", ranges=RANGES)
        cfg, log = self.cfg, self.get_logger()
        self.errors = ErrorReporter(log)
        self._last_status_pub = 0.0
        self.tf, self.tf_pub, self._tf_problem = tf_endpoints(
            self, cfg.tracking.enabled and cfg.tracking.odometry_mode != "none", cfg.publish_tf)
        if self._tf_problem:  # run without TF: frames are tracked, no pose goes out on /tf
            log.error(self._tf_problem)
        prior = tf_prior(self.tf, self._tf_problem, cfg.odom_frame, cfg.camera_frame,
                         lambda: self.live.status().tf_mode == "")
        self.recon = LiveReconstruction(cfg, prior, self._on_result,
                                        lambda code, msg: self.errors.report(code, msg, "frame"),
                                        log_to(log))
        self.live, self.ingest = self.recon.live, self.recon.ingest
        self.keyframe_pub = self.create_publisher(Keyframe, "~/keyframes", 5)
        self.status_pub = self.create_publisher(TrackingStatus, "~/status", 10)
        queries = ReentrantCallbackGroup()       # status and reset answer during exports
        heavy = MutuallyExclusiveCallbackGroup()  # export and mesh, one at a time
        qos = sensor_qos(cfg.qos_reliability, cfg.qos_depth)
        self.sync = ApproximateTimeSync(2, cfg.sync_slop_s, lambda m: self.recon.add_pair(*m))
        # the images on an executor of their own: on the shared one frames were lost
        self.images = OwnExecutorSubscriptions(self)
        for i, topic in enumerate((cfg.rgb_topic, cfg.depth_topic)):
            self.images.subscribe(
                Image, topic, lambda m, i=i: self.sync.add(i, stamp_to_ns(m.header.stamp), m),
                qos)
        self.images.start()
        # own group: CameraInfo must not queue behind the image callbacks
        self.create_subscription(CameraInfo, cfg.camera_info_topic, self.recon.set_camera_info,
                                 qos, callback_group=MutuallyExclusiveCallbackGroup())
        offer_service(self, GetBufferStatus, "~/get_buffer_status", self._on_status, queries)
        offer_service(self, Trigger, "~/reset", self._on_reset, queries)
        offer_service(self, SaveMesh, "~/save_mesh", self._on_save_mesh, heavy)
        offer_service(self, ExportSequence, "~/export_sequence", self._on_export, heavy)
        wall_timer(self, 1.0, self._on_timer, queries)  # status, the CameraInfo wait
        log.info(f"listening on {cfg.rgb_topic}, {cfg.depth_topic}; tracking "
                 f"{cfg.tracking.enabled}, odometry {cfg.tracking.odometry_mode}")

    # -- output (tracker thread) ---------------------------------------------------------------
    def _on_result(self, res, frame):
        if not self.context.ok():  # shutting down (Ctrl-C): nothing to publish into
            return
        cfg, cam = self.cfg, self.cfg.camera_frame or res.frame_id or "camera"
        try:
            # never a TF for a pose the tracker does not trust (the status says why)
            if self.tf_pub is not None:
                send_tracking_tf(self.tf_pub, res, cfg.map_frame, cfg.odom_frame, cam)
            if res.track.keyframe:
                self.keyframe_pub.publish(keyframe_msg(res, frame, cfg.map_frame, cam,
                                                       cfg.keyframe_images))
            if time.monotonic() - self._last_status_pub >= 1.0 / max(cfg.status_rate_hz, 1e-3):
                self._publish_status()
        except Exception as e:  # a failed publish must not kill the tracker
            if self.context.ok():
                self.errors.report("PUBLISH_FAILED", f"{type(e).__name__}: {e}")

    def _status_msg(self):
        return tracking_status_msg(self.ingest.status, self.sync.dropped, self.live.status(),
                                   self.cfg.map_frame)

    def _on_timer(self):
        self.recon.flush_pending()
        self._publish_status()

    def _publish_status(self):
        self._last_status_pub = time.monotonic()
        publish_quietly(self.status_pub, self._status_msg)

    # -- services ------------------------------------------------------------------------------
    def _on_status(self, request, response):
        return buffer_status_response(response, self.ingest.status, self.sync.dropped,
                                      self._status_msg())

    def _on_reset(self, request, response):
        self.recon.reset()
        self.errors.clear()
        response.success, response.message = True, "buffer and tracker cleared"
        return response

    def _on_save_mesh(self, request, response):
        return answer(self.get_logger(), response, "SaveMesh",
                      lambda: mesh_response(response, *self.recon.save_mesh(request.path)))

    def _on_export(self, request, response):
        meta = {"node": self.get_fully_qualified_name()}
        return answer(self.get_logger(), response, "ExportSequence", lambda: export_response(
            response, self.recon.export(request.output_dir, request.step, meta)))


def main(argv: list[str] | None = None) -> int:
    return run_nodes([ReconstructionNode], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
