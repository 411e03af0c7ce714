"""reconstruction node: synchronised RGB-D ingest, live tracking, self-annotated pose on /tf.

Subscribes (relative names, so a namespace applies):
  camera/rgb/image_raw (rgb8/bgr8/mono8), camera/depth_registered/image_raw (16UC1 mm or
  32FC1 m), camera/rgb/camera_info; /tf and /tf_static for the odometry prior.
Publishes:
  /tf                 the self-annotated pose (see "TF" below), stamped with the image stamp
  ~/keyframes         nol_ros/msg/Keyframe: each new keyframe (images, CameraInfo, T_map_camera)
  ~/status            nol_ros/msg/TrackingStatus: counts (received, rejected, tracked, skipped,
                      failed), backlog, fps, latency, tf mode, last error (status_rate_hz + 1 Hz)
Services:
  ~/get_buffer_status (nol_ros/srv/GetBufferStatus): what was received, dropped and why
  ~/reset (std_srvs/Trigger): clears the buffer and the tracker
  ~/save_mesh (nol_ros/srv/SaveMesh): TSDF over the tracked frames -> .ply/.obj
  ~/export_sequence (nol_ros/srv/ExportSequence): the buffer as a BOP scene folder + live poses
  (what LearnObject / SelectViews with the live buffer as source read)

Work split: the executor thread converts and checks each pair (a few ms) and buffers it; the
tracker runs on its own thread (nol_ros.ros.live.LiveTracker) with a bounded backlog, so a slow
tracker skips frames (counted in frames_skipped, still buffered and exported) and never blocks
the subscriptions. Bad frames are counted, the first of each kind is logged as one clear error,
and the node keeps running.

TF: published ONLY for frames whose alignment passed every check (``tracking_ok``). A frame that
failed (or came while tracking is lost) gets no TF at all -- a robot must never act on a guessed
pose --, is counted in ``frames_tf_withheld`` and reported (TRACKING_FAILED / TRACKING_LOST with
the reason) in ~/status; the tracker re-localises against its keyframes and the TF resumes with
the first trusted frame.
The tracker estimates T_map_camera. Which transform carries it depends on odometry:
  - odometry present (odom -> camera frame resolvable in TF at the first frame): the node
    publishes map -> odom = T_map_camera @ inv(T_odom_camera). The camera frame already has a
    parent (base_link, via the robot's odometry and mount); in a TF tree every frame has exactly
    one parent, so publishing map -> camera would give it a second one and break the tree.
    A correction on top of odometry is what a localiser (REP 105) publishes: the odometry stays
    smooth and continuous, the map frame absorbs its drift. The map frame starts equal to odom.
  - no odometry (a hand-held camera, a bag without /tf): the camera frame is a root, so the
    node publishes map -> camera directly; the map frame is the first camera pose.
  A camera with a static mount but no odometry: set odom_frame to the mount's root (base_link);
  the correction then goes to map -> base_link. tracking.odometry_mode chooses auto (default;
  decided at the first frame, one warning when odometry is absent), required (frames without
  odometry are refused with a TF_* error code) or none.
Bag loops: a frame stamped more than tracking.reset_on_time_jump_s before the previous one
resets buffer and tracker (like tf2 on a time jump), so a looping replay starts a new sequence.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

from nol_ros.errors import InputError, NolError
from nol_ros.reconstruction.tracking import TrackerConfig
from nol_ros.ros.live import (
    TF_MAP_CAMERA,
    TF_MAP_ODOM,
    LiveTracker,
    LiveTrackingConfig,
    export_sequence,
    integrate_scene_mesh,
    time_jumped_back,
    write_mesh_file,
)
from nol_ros.streaming.ingest import IngestConfig, RgbdIngest
from nol_ros.streaming.tf_buffer import FrameLookupError, TransformError


@dataclass(frozen=True)
class ReconstructionNodeConfig:
    rgb_topic: str = "camera/rgb/image_raw"
    depth_topic: str = "camera/depth_registered/image_raw"
    camera_info_topic: str = "camera/rgb/camera_info"
    qos_reliability: str = "reliable"  # see config/reconstruction.yaml
    qos_depth: int = 10
    sync_slop_s: float = 0.02
    map_frame: str = "map"
    odom_frame: str = "odom"
    camera_frame: str = ""             # "" = the rgb images' header.frame_id
    publish_tf: bool = True
    keyframe_images: bool = True       # false: Keyframe messages carry pose + CameraInfo only
    status_rate_hz: float = 5.0
    camera_info_wait_s: float = 1.0    # pairs wait this long for the first CameraInfo
    export_dir: str = "nol_live_sequence"
    export_wait_for_tracking_s: float = 5.0
    mesh_weight_threshold: float = 2.0
    ingest: IngestConfig = field(default_factory=IngestConfig)
    tracking: LiveTrackingConfig = field(default_factory=LiveTrackingConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


def tracking_status_msg(ingest_status, unpaired: int, live_status, map_frame: str):
    """Ingest + sync + live tracker state -> nol_ros/msg/TrackingStatus."""
    from nol_ros.msg import TrackingStatus
    from nol_ros.ros.conversions import ns_to_stamp

    m = TrackingStatus()
    m.header.frame_id = map_frame
    m.header.stamp = ns_to_stamp(live_status.last_stamp_ns)
    m.frames_received = ingest_status.frames_received
    m.frames_rejected = ingest_status.frames_dropped
    m.messages_unpaired = int(unpaired)
    for k in ("frames_tracked", "frames_tracking_failed", "frames_relocalised",
              "frames_tf_withheld", "frames_skipped",
              "frames_without_odometry", "frames_tf_refused", "backlog", "keyframes"):
        setattr(m, k, int(getattr(live_status, k)))
    m.tracking_ok = bool(live_status.tracking_ok)
    m.tracking_state = live_status.tracking_state
    m.fitness = float(live_status.fitness)
    m.tracking_fps = float(live_status.tracking_fps)
    m.latency_s = float(live_status.latency_s)
    m.tf_mode = live_status.tf_mode
    # the most recent problem, whichever stage it came from
    m.error_code = live_status.error_code or ingest_status.error_code
    m.message = live_status.message or ingest_status.message
    return m


def make_node(node_name: str = "reconstruction", **node_kwargs):
    """Create the node (rclpy must be initialised)."""
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

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
    from nol_ros.ros.runtime import ErrorReporter
    from nol_ros.srv import ExportSequence, GetBufferStatus, SaveMesh
    from nol_ros.streaming.messages import stamp_to_ns
    from nol_ros.streaming.sync import ApproximateTimeSync

    class ReconstructionNode(Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: ReconstructionNodeConfig = declare_and_read(self, ReconstructionNodeConfig)
            cfg = self.cfg
            log = self.get_logger()
            self.errors = ErrorReporter(log)
            if cfg.tracking.enabled:
                import open3d  # noqa: F401  (seconds on a loaded machine: not on the first frame)
            self.ingest = RgbdIngest(cfg.ingest)
            self._info = None
            self._pending: deque = deque()  # (wall time, rgb, depth) waiting for a CameraInfo
            self._pending_lock = threading.Lock()
            self._last_stamp_ns = 0
            self._generation = 0
            self._status_lock = threading.Lock()
            self._last_status_pub = 0.0
            # TF: listener for the odometry prior, broadcaster for the pose
            self.tf, self._tf_problem = None, ""
            if cfg.tracking.enabled and cfg.tracking.odometry_mode != "none":
                try:
                    from nol_ros.ros.tf import TfClient

                    self.tf = TfClient(self)
                except Exception as e:  # tf2_msgs missing: say so once, run without odometry
                    self._tf_problem = (f"TF listener unavailable ({type(e).__name__}: {e}); "
                                        "run `make setup` (it builds tf2_msgs) or install "
                                        "tf2_ros/tf2_msgs")
                    log.error(self._tf_problem)
            self.tf_pub = None
            if cfg.publish_tf:
                try:
                    from nol_ros.ros.tf import TfBroadcaster

                    self.tf_pub = TfBroadcaster(self)
                except Exception as e:
                    log.error(f"TF broadcaster unavailable ({type(e).__name__}: {e}); the "
                              "pose is published in the Keyframe/status messages only")
            self.live = LiveTracker(cfg.tracking, cfg.tracker, lookup_prior=self._lookup_prior,
                                    on_result=self._on_result, on_error=self._on_live_error,
                                    on_info=log.warning, max_results=cfg.ingest.max_frames)
            self.keyframe_pub = self.create_publisher(Keyframe, "~/keyframes", 5)
            self.status_pub = self.create_publisher(TrackingStatus, "~/status", 10)

            sensors = MutuallyExclusiveCallbackGroup()
            queries = ReentrantCallbackGroup()       # status and reset answer during exports
            heavy = MutuallyExclusiveCallbackGroup()  # export and mesh, one at a time
            qos = sensor_qos(cfg.qos_reliability, cfg.qos_depth)
            self.sync = ApproximateTimeSync(2, cfg.sync_slop_s, self._on_pair)

            def feed(i):
                return lambda m: self.sync.add(i, stamp_to_ns(m.header.stamp), m)

            self.create_subscription(Image, cfg.rgb_topic, feed(0), qos, callback_group=sensors)
            self.create_subscription(Image, cfg.depth_topic, feed(1), qos,
                                     callback_group=sensors)
            # own group: CameraInfo must not queue behind the image callbacks
            self.create_subscription(CameraInfo, cfg.camera_info_topic, self._on_info, qos,
                                     callback_group=MutuallyExclusiveCallbackGroup())
            self.create_service(GetBufferStatus, "~/get_buffer_status", self._on_status,
                                callback_group=queries)
            self.create_service(Trigger, "~/reset", self._on_reset, callback_group=queries)
            self.create_service(SaveMesh, "~/save_mesh", self._on_save_mesh,
                                callback_group=heavy)
            self.create_service(ExportSequence, "~/export_sequence", self._on_export,
                                callback_group=heavy)
            # wall clock: with use_sim_time the status and the CameraInfo wait must go on
            # when a bag (and its /clock) has ended
            self.create_timer(1.0, self._on_timer, callback_group=queries,
                              clock=Clock(clock_type=ClockType.STEADY_TIME))
            self._conv = dict(depth_to_image=depth_to_image, numpy_to_image=numpy_to_image,
                              info=intrinsics_to_camera_info, ns_to_stamp=ns_to_stamp,
                              tf=transform_from_matrix)
            log.info(f"listening on {cfg.rgb_topic}, {cfg.depth_topic}, {cfg.camera_info_topic} "
                     f"(qos {cfg.qos_reliability}, slop {cfg.sync_slop_s} s); tracking "
                     f"{'on' if cfg.tracking.enabled else 'off'}, odometry "
                     f"{cfg.tracking.odometry_mode} ({cfg.odom_frame}), backlog "
                     f"{cfg.tracking.max_backlog}")

        # -- input -------------------------------------------------------------------------
        def _on_info(self, msg):
            self._info = msg  # pending pairs are flushed by the next pair (sensor group only)

        def _flush_pending(self):
            """Pairs that came before the first CameraInfo: ingest them once it is there; reject
            (counted, 'no CameraInfo') those older than camera_info_wait_s. Called for each
            pair and by the 1 Hz timer (so waiting pairs are reported even if no more come)."""
            now = time.monotonic()
            while True:
                with self._pending_lock:
                    if not self._pending:
                        return
                    t, rgb, depth = self._pending[0]
                    if self._info is None and now - t < self.cfg.camera_info_wait_s:
                        return
                    self._pending.popleft()
                self._ingest(rgb, depth)

        def _on_pair(self, msgs):
            rgb, depth = msgs
            if self._info is None:
                with self._pending_lock:
                    self._pending.append((time.monotonic(), rgb, depth))
                self._flush_pending()
                return
            self._flush_pending()
            self._ingest(rgb, depth)

        def _ingest(self, rgb, depth):
            stamp = stamp_to_ns(rgb.header.stamp)
            if time_jumped_back(self._last_stamp_ns, stamp, self.cfg.tracking.reset_on_time_jump_s):
                self.get_logger().warning(
                    f"image time jumped back by {(self._last_stamp_ns - stamp) / 1e9:.1f} s "
                    "(bag loop or restart): buffer and tracker reset, a new sequence starts")
                self._reset()
            self._last_stamp_ns = stamp
            try:
                frame = self.ingest.add(rgb, depth, self._info)
            except NolError as e:
                self.errors.report(e.code, str(e), "frame rejected")
                return
            self.live.submit(frame)

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

        # -- output (tracker thread) -------------------------------------------------------
        def _on_result(self, res, frame):
            if not self.context.ok():  # shutting down (Ctrl-C): nothing to publish into
                return
            cfg, c = self.cfg, self._conv
            cam = cfg.camera_frame or res.frame_id or "camera"
            try:
                # never a TF for a pose the tracker does not trust (the status says why)
                if self.tf_pub is not None and res.track.ok:
                    if res.tf_mode == TF_MAP_ODOM and res.T_map_odom is not None:
                        self.tf_pub.send(cfg.map_frame, cfg.odom_frame, res.stamp_ns,
                                         res.T_map_odom)
                    elif res.tf_mode == TF_MAP_CAMERA:
                        self.tf_pub.send(cfg.map_frame, cam, res.stamp_ns,
                                         res.track.T_world_camera)
                if res.track.keyframe:
                    kf = Keyframe()
                    kf.header.stamp = c["ns_to_stamp"](res.stamp_ns)
                    kf.header.frame_id = cfg.map_frame
                    kf.frame_index = int(res.index)
                    if cfg.keyframe_images:
                        kf.rgb = c["numpy_to_image"](frame.rgb, "rgb8", kf.header.stamp, cam)
                        kf.depth = c["depth_to_image"](frame.depth_m, "16UC1",
                                                       c["ns_to_stamp"](frame.depth_stamp_ns), cam)
                    kf.camera_info = c["info"](frame.intrinsics, kf.header.stamp, cam)
                    kf.t_world_camera = c["tf"](res.track.T_world_camera)
                    kf.tracking_ok = bool(res.track.ok)
                    kf.tracking_fitness = float(res.track.fitness)
                    self.keyframe_pub.publish(kf)
                now = time.monotonic()
                if now - self._last_status_pub >= 1.0 / max(cfg.status_rate_hz, 1e-3):
                    self._publish_status()
            except Exception as e:  # a failed publish must not kill the tracker
                if self.context.ok():
                    self.errors.report("PUBLISH_FAILED", f"{type(e).__name__}: {e}")

        def _on_live_error(self, code, message):
            self.errors.report(code, message, "tracking")

        def _status_msg(self):
            return tracking_status_msg(self.ingest.status, self.sync.dropped, self.live.status(),
                                       self.cfg.map_frame)

        def _on_timer(self):
            self._flush_pending()
            self._publish_status()

        def _publish_status(self):
            with self._status_lock:
                self._last_status_pub = time.monotonic()
                try:
                    self.status_pub.publish(self._status_msg())
                except Exception:  # shutting down
                    pass

        # -- services ----------------------------------------------------------------------
        def _on_status(self, request, response):
            s = self.ingest.status
            response.frames_received = s.frames_received
            response.frames_dropped = s.frames_dropped
            response.messages_unpaired = self.sync.dropped
            response.width, response.height = s.width, s.height
            response.rgb_encoding, response.depth_encoding = s.rgb_encoding, s.depth_encoding
            response.last_valid_depth_fraction = s.last_valid_depth_fraction
            response.last_median_depth_m = s.last_median_depth_m
            response.last_stamp = self._conv["ns_to_stamp"](s.last_stamp_ns)
            response.error_code, response.message = s.error_code, s.message
            response.tracking = self._status_msg()
            return response

        def _reset(self):
            with self._pending_lock:
                self._pending.clear()
            self.live.reset()
            self.ingest.clear()
            self.errors.clear()
            self._generation += 1
            self._last_stamp_ns = 0

        def _on_reset(self, request, response):
            self._reset()
            response.success, response.message = True, "buffer and tracker cleared"
            return response

        def _fail(self, response, what, e):
            if isinstance(e, NolError):
                response.error_code, response.message = e.code, str(e)
            else:
                traceback.print_exc()
                response.error_code = "INTERNAL_ERROR"
                response.message = f"{type(e).__name__}: {e}"
            response.success = False
            self.get_logger().error(f"{what} failed [{response.error_code}]: {response.message}")
            return response

        def _on_save_mesh(self, request, response):
            try:
                if not request.path:
                    raise InputError("SaveMesh.path is empty; give an output .ply or .obj path")
                self.live.wait_idle(self.cfg.export_wait_for_tracking_s)
                mesh, n = integrate_scene_mesh(self.ingest.snapshot(), self.live.snapshot(),
                                               self.cfg.tracker, self.cfg.mesh_weight_threshold)
                path = write_mesh_file(request.path, mesh)
                response.success, response.path = True, str(path)
                response.frames_integrated = int(n)
                response.vertices, response.triangles = len(mesh.vertices), len(mesh.triangles)
                response.message = (f"{response.triangles} triangles from {n} frames -> "
                                    f"{path}")
                self.get_logger().info(f"scene mesh: {response.message}")
            except Exception as e:
                self._fail(response, "SaveMesh", e)
            return response

        def _on_export(self, request, response):
            try:
                out = request.output_dir or self.cfg.export_dir
                if not self.live.wait_idle(self.cfg.export_wait_for_tracking_s):
                    self.get_logger().info(
                        f"exporting while {self.live.status().backlog} frames still wait for "
                        "the tracker (their poses are interpolated)")
                frames = self.ingest.snapshot()
                results = self.live.snapshot()
                version = (f"{self._generation}:{frames[0].index}:{frames[-1].index}:"
                           f"{len(results)}" if frames else "")
                s = export_sequence(frames, results, out, step=request.step, version=version,
                                    meta={"node": self.get_fully_qualified_name()},
                                    map_frame=self.cfg.map_frame,
                                    camera_frame=self.cfg.camera_frame)
                response.success, response.path, response.frames = True, s.path, s.frames
                response.frames_tracked, response.unchanged = s.frames_tracked, s.unchanged
                response.message = (f"{s.frames} frames ({s.frames_tracked} tracked) -> {s.path}"
                                    + (" (unchanged)" if s.unchanged else ""))
                self.get_logger().info(f"export: {response.message}")
            except Exception as e:
                self._fail(response, "ExportSequence", e)
            return response

        def prepare_shutdown(self):
            if getattr(self, "live", None) is not None:
                self.live.shutdown()

        def destroy_node(self):
            if getattr(self, "live", None) is not None:  # also when __init__ failed
                self.live.shutdown()
            return super().destroy_node()

    return ReconstructionNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

