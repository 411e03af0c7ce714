"""recognizer node: the trained detector + pose estimator on the live camera stream.

Subscribes (relative names, so a namespace applies; the reconstruction node's defaults):
  camera/rgb/image_raw (rgb8/bgr8/mono8), camera/depth_registered/image_raw (16UC1 mm or 32FC1
  m; used for the ICP pose refinement, `use_depth: false` = colour only), camera/rgb/camera_info.
  RGB and depth are paired by approximate time (`sync_slop_s`) with the `qos_*` profile, as in
  the reconstruction node.
Publishes:
  ~/detections  nol_ros/msg/DetectionArray, one per recognised image; header = the image's
                header (stamp, camera optical frame); per detection the class, score, box and,
                when the pose estimator found one, T_camera_object + pose_score
  /tf           camera optical frame -> `object_frame_prefix`NAME for every posed detection
                (pose_score >= min_pose_score), stamped with the image ("object_NAME_2" ... for
                further instances when max_per_class > 1)
  ~/status      nol_ros/msg/RecognizerStatus (latched; after every frame and at 1 Hz): frames
                received / processed / dropped while busy / rejected, latency, the models
                loaded, the last error
Services:
  ~/reload (std_srvs/Trigger): load `models_dir` again (also done when the parameter changes,
  and every `models_poll_s` when its recognition.json appeared or changed -- a trainer that
  writes new models is picked up without a restart). A folder that fails to load keeps the
  previous models running.

Work split: the callbacks only hand the newest message pair to one worker thread; conversion,
checks and Recognizer.recognize run there (about 0.3-3 s per 640x480 frame on the CPU), so the
executor never blocks. While the worker is busy one pair waits; a newer pair replaces it and
the replaced one is counted in frames_dropped_busy (the recogniser always works on the freshest
image). Bad input -- wrong encoding (BAD_ENCODING), image size different from CameraInfo or
depth (BAD_CAMERA_INFO, SIZE_MISMATCH), no CameraInfo (NO_CAMERA_INFO), no models (NO_MODELS:
missing or unreadable models_dir) -- is counted in frames_rejected and logged once per code as
one clear error (then at most every 10 s with the count); the node keeps running.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from nol_ros.errors import ConfigError, InputError, NolError


class NoModelsError(NolError):
    code = "NO_MODELS"


class SizeMismatchError(InputError):
    code = "SIZE_MISMATCH"


class NoCameraInfoError(InputError):
    code = "NO_CAMERA_INFO"


@dataclass(frozen=True)
class RecognizerNodeConfig:
    models_dir: str = "nol_workspace/_models"
    device: str = "cpu"
    rgb_topic: str = "camera/rgb/image_raw"
    depth_topic: str = "camera/depth_registered/image_raw"
    camera_info_topic: str = "camera/rgb/camera_info"
    use_depth: bool = True
    qos_reliability: str = "reliable"
    qos_depth: int = 10
    sync_slop_s: float = 0.02
    camera_info_wait_s: float = 1.0
    score_thresh: float = -1.0        # < 0: the models folder's default (recognition.json)
    max_per_class: int = 0            # 0: the models folder's default
    publish_tf: bool = True
    camera_frame: str = ""            # "" = the images' header.frame_id
    object_frame_prefix: str = "object_"
    min_pose_score: float = 0.0
    models_poll_s: float = 5.0        # 0 = load only at start, on ~/reload and on a new models_dir
    torch_threads: int = 0            # 0 = torch's default

    def __post_init__(self):
        if self.models_poll_s < 0 or self.camera_info_wait_s < 0 or self.torch_threads < 0:
            raise ConfigError("models_poll_s, camera_info_wait_s and torch_threads must be >= 0")


class FrameMailbox:
    """One worker, one waiting slot: ``put`` never blocks; a message that replaces a waiting one
    counts as dropped. ``get`` blocks until a message or ``close``."""

    def __init__(self):
        self._cv = threading.Condition()
        self._item = None
        self._closed = False
        self.busy = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cv:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cv.notify()

    def get(self):
        with self._cv:
            self.busy = False
            while self._item is None and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            self.busy = True
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


def detection_msgs(results, pose_msg):
    """Recognizer results -> [nol_ros/msg/Detection]."""
    from nol_ros.msg import Detection

    out = []
    for r in results:
        d = Detection()
        d.object_id, d.object_name, d.score = int(r.obj_id), str(r.name), float(r.score)
        d.x, d.y, d.width, d.height = (float(v) for v in r.box_xywh)
        d.has_pose = r.T_camera_object is not None
        if d.has_pose:
            d.pose = pose_msg(r.T_camera_object)
            d.pose_score = float(r.pose_score)
        out.append(d)
    return out


def object_frames(results, prefix: str, min_pose_score: float) -> list[tuple[str, object]]:
    """[(child frame, T_camera_object)] of the posed results: PREFIXNAME, then PREFIXNAME_2 ..."""
    seen: dict[str, int] = {}
    out = []
    for r in results:
        if r.T_camera_object is None or r.pose_score < min_pose_score:
            continue
        k = seen[r.name] = seen.get(r.name, 0) + 1
        out.append((f"{prefix}{r.name}" + (f"_{k}" if k > 1 else ""), r.T_camera_object))
    return out


def make_node(node_name: str = "recognizer", **node_kwargs):
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from nol_ros.learn import resolve_device
    from nol_ros.msg import DetectionArray, RecognizerStatus
    from nol_ros.ros.conversions import pose_from_matrix
    from nol_ros.ros.params import declare_and_read
    from nol_ros.ros.qos import sensor_qos
    from nol_ros.ros.runtime import ErrorReporter
    from nol_ros.streaming.messages import (
        camera_info_to_intrinsics,
        check_image_matches_info,
        depth_from_image,
        rgb_from_image,
        stamp_to_ns,
    )
    from nol_ros.streaming.sync import ApproximateTimeSync

    class RecognizerNode(Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: RecognizerNodeConfig = declare_and_read(self, RecognizerNodeConfig)
            cfg, log = self.cfg, self.get_logger()
            self.errors = ErrorReporter(log)
            self.device = resolve_device(cfg.device)
            if self.device != cfg.device:
                log.warning(f"device '{cfg.device}' is not available: running on {self.device}")
            if cfg.torch_threads:
                import torch

                torch.set_num_threads(cfg.torch_threads)
            self._lock = threading.Lock()
            self.recognizer = None
            self.models_dir = ""
            self._models_stamp = None
            self._models_error = ("", "")
            self._last_poll = time.monotonic()
            self._info = None
            self.counts = dict(received=0, processed=0, rejected=0, detections=0, poses=0)
            self._latency = 0.0
            self._rec_times: deque = deque(maxlen=20)
            self._last_error = ("", "")
            self.tf_pub = None
            if cfg.publish_tf:
                try:
                    from nol_ros.ros.tf import TfBroadcaster

                    self.tf_pub = TfBroadcaster(self)
                except Exception as e:  # tf2_msgs missing: detections still go out
                    log.error(f"TF broadcaster unavailable ({type(e).__name__}: {e}); object "
                              "poses are published in ~/detections only")
            self.det_pub = self.create_publisher(DetectionArray, "~/detections", 10)
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.status_pub = self.create_publisher(RecognizerStatus, "~/status", latched)
            self._conv = dict(pose=pose_from_matrix)

            self.mailbox = FrameMailbox()
            self._worker = threading.Thread(target=self._work, name="recognizer-worker",
                                            daemon=True)
            self._load(cfg.models_dir, "start")
            self._worker.start()

            sensors = MutuallyExclusiveCallbackGroup()
            qos = sensor_qos(cfg.qos_reliability, cfg.qos_depth)
            if cfg.use_depth:
                self.sync = ApproximateTimeSync(2, cfg.sync_slop_s, self._on_frame)

                def feed(i):
                    return lambda m: self.sync.add(i, stamp_to_ns(m.header.stamp), m)

                self.create_subscription(Image, cfg.rgb_topic, feed(0), qos,
                                         callback_group=sensors)
                self.create_subscription(Image, cfg.depth_topic, feed(1), qos,
                                         callback_group=sensors)
            else:
                self.sync = None
                self.create_subscription(Image, cfg.rgb_topic, lambda m: self._on_frame([m]),
                                         qos, callback_group=sensors)
            self.create_subscription(CameraInfo, cfg.camera_info_topic, self._on_info, qos,
                                     callback_group=MutuallyExclusiveCallbackGroup())
            control = MutuallyExclusiveCallbackGroup()
            self.create_service(Trigger, "~/reload", self._on_reload, callback_group=control)
            # wall-clock timer: with use_sim_time a finished bag stops /clock, and the status
            # and the models poll must go on
            self.create_timer(1.0, self._on_timer, callback_group=control,
                              clock=Clock(clock_type=ClockType.STEADY_TIME))
            self.add_on_set_parameters_callback(self._check_params)
            self.add_post_set_parameters_callback(self._params_changed)
            self._publish_status()
            log.info(f"recognising on {cfg.rgb_topic}"
                     + (f" + {cfg.depth_topic} (slop {cfg.sync_slop_s} s)" if cfg.use_depth
                        else "") + f", qos {cfg.qos_reliability}; device {self.device}")

        # -- models ----------------------------------------------------------------------------
        def _stamp(self, path: str):
            try:
                return (Path(path) / "recognition.json").stat().st_mtime_ns
            except OSError:
                return None

        def _load(self, path: str, why: str) -> tuple[bool, str]:
            from nol_ros.recognition.recognizer import Recognizer

            t0 = time.perf_counter()
            stamp = self._stamp(path)
            try:
                if not path:
                    raise NoModelsError("models_dir is empty; set it to a models folder (the "
                                        "trainer node writes <workspace_root>/_models)")
                if stamp is None:
                    raise NoModelsError(
                        f"models folder '{path}' has no recognition.json (missing or not trained "
                        "yet); train one with the trainer node (TrainDetector + "
                        "TrainPoseEstimator) or set models_dir")
                rec = Recognizer.load(path, self.device)
            except Exception as e:
                code = getattr(e, "code", "MODELS_LOAD_FAILED")
                msg = str(e) if isinstance(e, NolError) else f"{type(e).__name__}: {e}"
                with self._lock:
                    self._models_stamp, self._models_error = stamp, (code, msg)
                    keep = self.recognizer is not None
                    self._last_error = (code, msg)
                self.get_logger().error(f"models ({why}) [{code}]: {msg}" + (
                    f"; still using {self.models_dir}" if keep else
                    "; frames are not recognised until models load (~/reload)"))
                return False, msg
            names = [o.name for o in rec.objects.values()]
            with self._lock:
                self.recognizer, self.models_dir = rec, str(path)
                self._models_stamp, self._models_error = stamp, ("", "")
                self._last_error = ("", "")
            self.errors.clear()
            msg = (f"models from {path} ({why}): {', '.join(names)} in "
                   f"{time.perf_counter() - t0:.1f} s")
            self.get_logger().info(msg)
            return True, msg

        def _on_reload(self, req, resp):
            resp.success, resp.message = self._load(self.cfg.models_dir, "reload")
            self._publish_status()
            return resp

        def _check_params(self, params):
            for p in params:
                if p.name == "models_dir" and not isinstance(p.value, str):
                    return SetParametersResult(successful=False, reason="models_dir is a path")
            return SetParametersResult(successful=True)

        def _params_changed(self, params):
            for p in params:
                if p.name == "models_dir":
                    import dataclasses

                    self.cfg = dataclasses.replace(self.cfg, models_dir=p.value)
                    threading.Thread(target=self._reload_in_background, args=(p.value,),
                                     daemon=True).start()

        def _reload_in_background(self, path: str):
            self._load(path, "models_dir changed")
            self._publish_status()

        def _on_timer(self):
            poll = self.cfg.models_poll_s
            if poll > 0 and time.monotonic() - self._last_poll >= poll:
                self._last_poll = time.monotonic()
                st = self._stamp(self.cfg.models_dir)
                if st is not None and st != self._models_stamp:
                    self._load(self.cfg.models_dir, "new models")
            self._publish_status()

        # -- input -----------------------------------------------------------------------------
        def _on_info(self, msg):
            self._info = msg

        def _on_frame(self, msgs):
            with self._lock:
                self.counts["received"] += 1
            self.mailbox.put((time.monotonic(), msgs))

        def _reject(self, e: NolError):
            with self._lock:
                self.counts["rejected"] += 1
                self._last_error = (e.code, str(e))
            self.errors.report(e.code, str(e), "frame not recognised")

        def _work(self):
            while True:
                item = self.mailbox.get()
                if item is None:
                    return
                try:
                    self._process(*item)
                except NolError as e:
                    self._reject(e)
                except Exception as e:  # never let the worker die
                    if not self.context.ok():
                        return
                    traceback.print_exc()
                    err = NolError(f"{type(e).__name__}: {e}")
                    err.code = "INTERNAL_ERROR"
                    self._reject(err)
                # after every frame, so a client (a paced replay) sees it done at once
                self._publish_status()

        def _process(self, t_arrival, msgs):
            cfg = self.cfg
            with self._lock:
                rec = self.recognizer
                missing = self._models_error
            if rec is None:
                raise NoModelsError(missing[1] or f"no models loaded from '{cfg.models_dir}'")
            rgb_msg = msgs[0]
            deadline = time.monotonic() + cfg.camera_info_wait_s
            while self._info is None and time.monotonic() < deadline:
                time.sleep(0.01)
            info = self._info
            if info is None:
                raise NoCameraInfoError(
                    f"no CameraInfo on {cfg.camera_info_topic} (waited "
                    f"{cfg.camera_info_wait_s} s); check that it is published and remapped")
            rgb = rgb_from_image(rgb_msg)
            intr = camera_info_to_intrinsics(info)
            check_image_matches_info(rgb.shape[1], rgb.shape[0], info)
            depth = None
            if len(msgs) > 1:
                depth = depth_from_image(msgs[1])
                if depth.shape != rgb.shape[:2]:
                    raise SizeMismatchError(
                        f"depth is {depth.shape[1]}x{depth.shape[0]} but rgb is "
                        f"{rgb.shape[1]}x{rgb.shape[0]}; use the depth registered to the rgb "
                        "camera (e.g. camera/depth_registered/image_raw)")
            t0 = time.perf_counter()
            results = rec.recognize(rgb, intr, depth,
                                    score_thresh=None if cfg.score_thresh < 0
                                    else cfg.score_thresh,
                                    max_per_class=cfg.max_per_class or None)
            t_rec = time.perf_counter() - t0
            if not self.context.ok():
                return
            out = DetectionArray()
            out.header = rgb_msg.header
            out.detections = detection_msgs(results, self._conv["pose"])
            self.det_pub.publish(out)
            frames = object_frames(results, cfg.object_frame_prefix, cfg.min_pose_score)
            if frames and self.tf_pub is not None:
                cam = cfg.camera_frame or rgb_msg.header.frame_id
                st = stamp_to_ns(rgb_msg.header.stamp)
                self.tf_pub.send_many([(cam, child, st, T) for child, T in frames])
            with self._lock:
                c = self.counts
                c["processed"] += 1
                c["detections"] += len(results)
                c["poses"] += len(frames)
                self._latency = time.monotonic() - t_arrival
                self._rec_times.append(t_rec)

        # -- status ----------------------------------------------------------------------------
        def status_msg(self):
            m = RecognizerStatus()
            m.header.stamp = self.get_clock().now().to_msg()
            with self._lock:
                rec, c = self.recognizer, dict(self.counts)
                m.models_dir = self.models_dir if rec is not None else ""
                m.models_loaded = rec is not None
                m.object_names = [o.name for o in rec.objects.values()] if rec else []
                m.frames_received, m.frames_processed = c["received"], c["processed"]
                m.frames_dropped_busy = self.mailbox.dropped
                m.frames_rejected = c["rejected"]
                m.messages_unpaired = self.sync.dropped if self.sync is not None else 0
                m.detections_published, m.poses_published = c["detections"], c["poses"]
                m.last_latency_s = float(self._latency)
                m.mean_recognize_s = (float(sum(self._rec_times) / len(self._rec_times))
                                      if self._rec_times else 0.0)
                m.error_code, m.message = self._last_error
            return m

        def _publish_status(self):
            try:
                self.status_pub.publish(self.status_msg())
            except Exception:  # shutting down
                pass

        def prepare_shutdown(self):
            if getattr(self, "mailbox", None) is not None:
                self.mailbox.close()
                if self._worker.is_alive():
                    self._worker.join(10)

        def destroy_node(self):
            self.prepare_shutdown()
            return super().destroy_node()

    return RecognizerNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
