"""reconstruction node: synchronised RGB-D ingest, live tracking, self-annotated pose on /tf. The
work is nol_ros.services.reconstruction (ingest, stamp checks, the live tracker, export and mesh
confined to `export_root`); this node maps messages onto it and publishes its results.

Subscribes (relative names, so a namespace applies):
  camera/rgb/image_raw (rgb8/bgr8/mono8), camera/depth_registered/image_raw (16UC1 mm or
  32FC1 m), camera/rgb/camera_info; /tf and /tf_static for the odometry prior.
Publishes:
  /tf                 the self-annotated pose (see "TF" below), stamped with the image stamp
  ~/keyframes         nol_ros/msg/Keyframe: each new keyframe (images, CameraInfo, T_map_camera)
  ~/status            nol_ros/msg/TrackingStatus: counts, backlog, fps, latency, tf mode, state
                      and the last error (status_rate_hz, and every 1 s)
Services:
  ~/get_buffer_status (nol_ros/srv/GetBufferStatus): what was received, dropped and why
  ~/reset (std_srvs/Trigger): clears the buffer and the tracker
  ~/save_mesh (nol_ros/srv/SaveMesh): TSDF over the trusted frames -> .ply/.obj in export_root
  ~/export_sequence (nol_ros/srv/ExportSequence): the buffer as a BOP scene folder + live poses,
  in export_root (what LearnObject / SelectViews with the live buffer as source read)

TF: published ONLY for frames whose alignment passed every check. A failed frame (or one while
tracking is lost) gets no TF -- a robot must never act on a guessed pose --, is counted in
frames_tf_withheld and reported (TRACKING_FAILED / TRACKING_LOST) in ~/status; the tracker
re-localises against its keyframes and the TF resumes with the first trusted frame.
With odometry (odom -> camera frame in TF at the first frame) the node publishes map -> odom =
T_map_camera @ inv(T_odom_camera): the camera frame already has a parent, and a correction on
top of odometry is what a localiser publishes (REP 105). Without odometry (a hand-held camera)
it publishes map -> camera; the map frame is the first camera pose. tracking.odometry_mode:
auto (default), required (frames without odometry refused, TF_*), none.
All parameters are read-only (set them at start).
"""

from __future__ import annotations

import sys
import time
import traceback

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from nol_ros.errors import NolError
from nol_ros.msg import Keyframe, TrackingStatus
from nol_ros.ros.conversions import (
    depth_to_image,
    intrinsics_to_camera_info,
    ns_to_stamp,
    numpy_to_image,
    transform_from_matrix,
)
from nol_ros.ros.params import declare_and_read
from nol_ros.ros.qos import sensor_qos
from nol_ros.ros.runtime import ErrorReporter, log_to
from nol_ros.services.reconstruction import LiveReconstruction, ReconstructionConfig
from nol_ros.srv import ExportSequence, GetBufferStatus, SaveMesh
from nol_ros.streaming.live import TF_MAP_CAMERA, TF_MAP_ODOM
from nol_ros.streaming.messages import stamp_to_ns
from nol_ros.streaming.sync import ApproximateTimeSync
from nol_ros.streaming.tf_buffer import FrameLookupError, TransformError

RANGES = {"qos_depth": (1, 1000), "sync_slop_s": (0.0, 1.0), "status_rate_hz": (0.01, 100.0),
          "camera_info_wait_s": (0.0, 3600.0), "export_wait_for_tracking_s": (0.0, 3600.0),
          "stamp_jump_s": (0.001, 86400.0), "stamp_future_s": (0.001, 86400.0),
          "stamp_jump_frames": (1, 1000), "ingest.max_frames": (1, 100000),
          "tracking.max_backlog": (1, 10000)}


def tracking_status_msg(ingest_status, unpaired: int, live_status, map_frame: str):
    """Ingest + sync + live tracker state -> nol_ros/msg/TrackingStatus."""
    m = TrackingStatus()
    m.header.frame_id = map_frame
    m.header.stamp = ns_to_stamp(live_status.last_stamp_ns)
    m.frames_received = ingest_status.frames_received
    m.frames_rejected = ingest_status.frames_dropped
    m.messages_unpaired = int(unpaired)
    for k in ("frames_tracked", "frames_tracking_failed", "frames_relocalised",
              "frames_tf_withheld", "frames_skipped", "frames_without_odometry",
              "frames_tf_refused", "backlog", "keyframes"):
        setattr(m, k, int(getattr(live_status, k)))
    m.tracking_ok, m.tracking_state = bool(live_status.tracking_ok), live_status.tracking_state
    m.fitness, m.tracking_fps = float(live_status.fitness), float(live_status.tracking_fps)
    m.latency_s, m.tf_mode = float(live_status.latency_s), live_status.tf_mode
    # the most recent problem, whichever stage it came from
    m.error_code = live_status.error_code or ingest_status.error_code
    m.message = live_status.message or ingest_status.message
    return m


class ReconstructionNode(Node):
    def __init__(self, node_name: str = "reconstruction", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.cfg: ReconstructionConfig = declare_and_read(self, ReconstructionConfig,
                                                          "reconstruction", ranges=RANGES)
        cfg, log = self.cfg, self.get_logger()
        self.errors = ErrorReporter(log)
        self._last_status_pub = 0.0
        self.tf, self._tf_problem, self.tf_pub = None, "", None
        try:
            from nol_ros.ros.tf import TfBroadcaster, TfClient  # needs tf2_msgs (make setup)

            if cfg.tracking.enabled and cfg.tracking.odometry_mode != "none":
                self.tf = TfClient(self)
            if cfg.publish_tf:
                self.tf_pub = TfBroadcaster(self)
        except Exception as e:  # tf2_msgs missing: say so once, run without TF
            self._tf_problem = (f"TF unavailable ({type(e).__name__}: {e}); run `make setup` "
                                "(it builds tf2_msgs) or install tf2_ros/tf2_msgs")
            log.error(self._tf_problem)
        self.recon = LiveReconstruction(cfg, self._lookup_prior, self._on_result,
                                        lambda code, msg: self.errors.report(code, msg, "frame"),
                                        log_to(log))
        self.live, self.ingest = self.recon.live, self.recon.ingest
        self.keyframe_pub = self.create_publisher(Keyframe, "~/keyframes", 5)
        self.status_pub = self.create_publisher(TrackingStatus, "~/status", 10)
        sensors = MutuallyExclusiveCallbackGroup()
        queries = ReentrantCallbackGroup()       # status and reset answer during exports
        heavy = MutuallyExclusiveCallbackGroup()  # export and mesh, one at a time
        qos = sensor_qos(cfg.qos_reliability, cfg.qos_depth)
        self.sync = ApproximateTimeSync(2, cfg.sync_slop_s, lambda m: self.recon.add_pair(*m))
        for i, topic in enumerate((cfg.rgb_topic, cfg.depth_topic)):
            self.create_subscription(
                Image, topic, lambda m, i=i: self.sync.add(i, stamp_to_ns(m.header.stamp), m),
                qos, callback_group=sensors)
        # own group: CameraInfo must not queue behind the image callbacks
        self.create_subscription(CameraInfo, cfg.camera_info_topic, self.recon.set_camera_info,
                                 qos, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(GetBufferStatus, "~/get_buffer_status", self._on_status,
                            callback_group=queries)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=queries)
        self.create_service(SaveMesh, "~/save_mesh", self._on_save_mesh, callback_group=heavy)
        self.create_service(ExportSequence, "~/export_sequence", self._on_export,
                            callback_group=heavy)
        # wall clock: with use_sim_time the status and the CameraInfo wait go on after a bag
        self.create_timer(1.0, self._on_timer, callback_group=queries,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        log.info(f"listening on {cfg.rgb_topic}, {cfg.depth_topic}, {cfg.camera_info_topic} "
                 f"(qos {cfg.qos_reliability}); tracking "
                 f"{'on' if cfg.tracking.enabled else 'off'}, odometry "
                 f"{cfg.tracking.odometry_mode} ({cfg.odom_frame}); exports in {cfg.export_root}")

    @property
    def _info(self):
        return self.recon.info

    def _lookup_prior(self, frame, timeout_s: float):
        if self.tf is None:
            raise TransformError(self._tf_problem or "no TF listener")
        cam = self.cfg.camera_frame or frame.frame_id
        if not cam:
            raise FrameLookupError("the images have an empty header.frame_id; set the "
                                   "camera_frame parameter")
        deadline = time.monotonic() + timeout_s
        first = self.live.status().tf_mode == ""
        while True:
            try:
                return self.tf.lookup(self.cfg.odom_frame, cam, frame.stamp_ns)
            except FrameLookupError:
                # an unknown frame only comes later at the start (/tf_static after images)
                if not first or time.monotonic() >= deadline:
                    raise
            except TransformError:  # not there yet (TF comes after the image): wait
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    # -- output (tracker thread) ---------------------------------------------------------------
    def _on_result(self, res, frame):
        if not self.context.ok():  # shutting down (Ctrl-C): nothing to publish into
            return
        cfg = self.cfg
        cam = cfg.camera_frame or res.frame_id or "camera"
        try:
            # never a TF for a pose the tracker does not trust (the status says why)
            if self.tf_pub is not None and res.track.ok:
                if res.tf_mode == TF_MAP_ODOM and res.T_map_odom is not None:
                    self.tf_pub.send(cfg.map_frame, cfg.odom_frame, res.stamp_ns, res.T_map_odom)
                elif res.tf_mode == TF_MAP_CAMERA:
                    self.tf_pub.send(cfg.map_frame, cam, res.stamp_ns, res.track.T_world_camera)
            if res.track.keyframe:
                kf = Keyframe()
                kf.header.stamp, kf.header.frame_id = ns_to_stamp(res.stamp_ns), cfg.map_frame
                kf.frame_index = int(res.index)
                if cfg.keyframe_images:
                    kf.rgb = numpy_to_image(frame.rgb, "rgb8", kf.header.stamp, cam)
                    kf.depth = depth_to_image(frame.depth_m, "16UC1",
                                              ns_to_stamp(frame.depth_stamp_ns), cam)
                kf.camera_info = intrinsics_to_camera_info(frame.intrinsics, kf.header.stamp, cam)
                kf.t_world_camera = transform_from_matrix(res.track.T_world_camera)
                kf.tracking_ok, kf.tracking_fitness = bool(res.track.ok), float(res.track.fitness)
                self.keyframe_pub.publish(kf)
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
        try:
            self.status_pub.publish(self._status_msg())
        except Exception:  # shutting down
            pass

    # -- services ------------------------------------------------------------------------------
    def _on_status(self, request, response):
        s = self.ingest.status
        response.frames_received, response.frames_dropped = s.frames_received, s.frames_dropped
        response.messages_unpaired = self.sync.dropped
        response.width, response.height = s.width, s.height
        response.rgb_encoding, response.depth_encoding = s.rgb_encoding, s.depth_encoding
        response.last_valid_depth_fraction = s.last_valid_depth_fraction
        response.last_median_depth_m = s.last_median_depth_m
        response.last_stamp = ns_to_stamp(s.last_stamp_ns)
        response.error_code, response.message = s.error_code, s.message
        response.tracking = self._status_msg()
        return response

    def _on_reset(self, request, response):
        self.recon.reset()
        self.errors.clear()
        response.success, response.message = True, "buffer and tracker cleared"
        return response

    def _fail(self, response, what, e):
        if isinstance(e, NolError):
            response.error_code, response.message = e.code, str(e)
        else:
            traceback.print_exc()
            response.error_code, response.message = "INTERNAL_ERROR", f"{type(e).__name__}: {e}"
        response.success = False
        self.get_logger().error(f"{what} failed [{response.error_code}]: {response.message}")
        return response

    def _on_save_mesh(self, request, response):
        try:
            path, mesh, n = self.recon.save_mesh(request.path)
            response.success, response.path, response.frames_integrated = True, str(path), n
            response.vertices, response.triangles = len(mesh.vertices), len(mesh.triangles)
            response.message = f"{response.triangles} triangles from {n} frames -> {path}"
            self.get_logger().info(f"scene mesh: {response.message}")
        except Exception as e:
            self._fail(response, "SaveMesh", e)
        return response

    def _on_export(self, request, response):
        try:
            s = self.recon.export(request.output_dir, request.step,
                                  {"node": self.get_fully_qualified_name()})
            response.success, response.path, response.frames = True, s.path, s.frames
            response.frames_tracked, response.unchanged = s.frames_tracked, s.unchanged
            response.message = (f"{s.frames} frames ({s.frames_tracked} tracked) -> {s.path}"
                                 + (" (unchanged)" if s.unchanged else ""))
            self.get_logger().info(f"export: {response.message}")
        except Exception as e:
            self._fail(response, "ExportSequence", e)
        return response

    def prepare_shutdown(self):
        if getattr(self, "recon", None) is not None:
            self.recon.shutdown()

    def destroy_node(self):
        self.prepare_shutdown()
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([ReconstructionNode], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
