"""The recogniser on a live stream, its models folder watched: what the recognizer node offers,
without ROS.

Frames come in as they arrive (:meth:`RecognitionService.put`, never blocks): one worker thread
decodes, checks and recognises them; while it is busy one frame waits and a newer one replaces
it (counted in ``dropped_busy``: the recogniser always works on the freshest image, never a
queue of stale ones). Bad input -- wrong encoding, image size different from CameraInfo or
depth, no CameraInfo, no models -- is counted in ``rejected`` with its code; the service keeps
running. Models: :meth:`load` (at start, on request, when ``models_dir`` changes) and
:meth:`poll` (every ``models_poll_s``: a trainer that writes new models is picked up without a
restart); a folder that fails to load keeps the previous models running.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nol_ros.errors import ConfigError, InputError, NolError
from nol_ros.recognition.recognizer import Recognizer
from nol_ros.streaming.messages import (
    camera_info_to_intrinsics,
    check_image_matches_info,
    depth_from_image,
    rgb_from_image,
    stamp_to_ns,
)


class NoModelsError(NolError):
    code = "NO_MODELS"


class SizeMismatchError(InputError):
    code = "SIZE_MISMATCH"


class NoCameraInfoError(InputError):
    code = "NO_CAMERA_INFO"


@dataclass(frozen=True)
class RecognitionConfig:
    """The recognizer node's parameters."""

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
    appearance: bool = True           # turn a pose to where the learnt print fits (if learnt)
    publish_tf: bool = True
    camera_frame: str = ""            # "" = the images' header.frame_id
    object_frame_prefix: str = "object_"
    min_pose_score: float = 0.0
    models_poll_s: float = 5.0        # 0 = load only at start, on ~/reload and on a new models_dir
    torch_threads: int = 0            # 0 = torch's default
    pose_workers: int = 0             # detections posed side by side; 0 = the models' (4)

    def __post_init__(self):
        if (self.models_poll_s < 0 or self.camera_info_wait_s < 0 or self.torch_threads < 0
                or self.pose_workers < 0):
            raise ConfigError("models_poll_s, camera_info_wait_s, torch_threads and "
                              "pose_workers must be >= 0")


@dataclass(frozen=True)
class Frame:
    """A decoded frame: rgb (H, W, 3) uint8, depth (H, W) float32 m or None, its intrinsics,
    the stamp (ns) and the camera frame id; t_arrival: time.monotonic() when it came."""

    rgb: np.ndarray
    depth: np.ndarray | None
    intrinsics: object
    stamp_ns: int
    frame_id: str
    t_arrival: float


def frame_from_messages(msgs, info, t_arrival: float) -> Frame:
    """[rgb Image] or [rgb, depth Image] messages + their CameraInfo -> Frame; the InputError
    (BAD_ENCODING, BAD_CAMERA_INFO, SIZE_MISMATCH) that rejects them."""
    rgb = rgb_from_image(msgs[0])
    check_image_matches_info(rgb.shape[1], rgb.shape[0], info)
    depth = depth_from_image(msgs[1]) if len(msgs) > 1 else None
    if depth is not None and depth.shape != rgb.shape[:2]:
        raise SizeMismatchError(
            f"depth is {depth.shape[1]}x{depth.shape[0]} but rgb is {rgb.shape[1]}x"
            f"{rgb.shape[0]}; use the depth registered to the rgb camera (e.g. "
            "camera/depth_registered/image_raw)")
    h = msgs[0].header
    return Frame(rgb, depth, camera_info_to_intrinsics(info), stamp_to_ns(h.stamp),
                 h.frame_id, t_arrival)


@dataclass
class RecognitionState:
    models_dir: str = ""
    models_loaded: bool = False
    object_names: list = field(default_factory=list)
    received: int = 0
    processed: int = 0
    dropped_busy: int = 0
    rejected: int = 0
    detections: int = 0
    poses: int = 0
    last_latency_s: float = 0.0
    mean_recognize_s: float = 0.0
    error_code: str = ""
    message: str = ""


class FrameMailbox:
    """One worker, one waiting slot: ``put`` never blocks; an item that replaces a waiting one
    counts as dropped. ``get`` blocks until an item or ``close``."""

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


def object_frames(results, prefix: str, min_pose_score: float) -> list[tuple[str, np.ndarray]]:
    """[(child frame, T_camera_object)] of the posed results: PREFIXNAME, then PREFIXNAME_2 ..."""
    seen: dict[str, int] = {}
    out = []
    for r in results:
        if r.T_camera_object is None or r.pose_score < min_pose_score:
            continue
        k = seen[r.name] = seen.get(r.name, 0) + 1
        out.append((f"{prefix}{r.name}" + (f"_{k}" if k > 1 else ""), r.T_camera_object))
    return out


class RecognitionService:
    """See the module doc. ``on_result(frame, results, object_frames)`` and ``on_error(code,
    message)`` are called on the worker thread; ``log(level, text)``."""

    def __init__(self, cfg: RecognitionConfig, device: str,
                 on_result: Callable[[Frame, list, list], None] | None = None,
                 on_error: Callable[[str, str], None] | None = None,
                 log: Callable[[str, str], None] | None = None):
        self.cfg, self.device = cfg, device
        if cfg.torch_threads:
            import torch  # lazy: ~2 s to import; the models load it anyway, later

            torch.set_num_threads(cfg.torch_threads)
        self.on_result = on_result or (lambda *a: None)
        self.on_error = on_error or (lambda code, msg: None)
        self.log = log or (lambda level, text: None)
        self._lock = threading.Lock()
        self.recognizer = None
        self._state = RecognitionState()
        self._models_stamp = None
        self._models_error = ("", "")
        self._last_poll = time.monotonic()
        self._rec_times: deque = deque(maxlen=20)
        self.mailbox = FrameMailbox()
        self._worker = threading.Thread(target=self._work, name="recognizer-worker",
                                        daemon=True)
        self.load(cfg.models_dir, "start")
        self._worker.start()

    # -- models ----------------------------------------------------------------------------
    @staticmethod
    def _stamp(path: str):
        try:
            return (Path(path) / "recognition.json").stat().st_mtime_ns
        except OSError:
            return None

    def load(self, path: str, why: str) -> tuple[bool, str]:
        """Load the models folder ``path``; on failure the previous models stay."""
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
            if self.cfg.pose_workers:
                rec.config = replace(rec.config, pose_workers=self.cfg.pose_workers)
        except Exception as e:
            code = getattr(e, "code", "MODELS_LOAD_FAILED")
            msg = str(e) if isinstance(e, NolError) else f"{type(e).__name__}: {e}"
            with self._lock:
                self._models_stamp, self._models_error = stamp, (code, msg)
                keep = self.recognizer is not None
                self._state.error_code, self._state.message = code, msg
            self.log("error", f"models ({why}) [{code}]: {msg}" + (
                f"; still using {self._state.models_dir}" if keep else
                "; frames are not recognised until models load (~/reload)"))
            return False, msg
        with self._lock:
            self.recognizer = rec
            self._state.models_dir = str(path)
            # the models' own error is over; the last frame's rejection (bad encoding, ...)
            # still says why that frame was rejected (a reload cleared it, and a test waiting
            # for it timed out when a poll reloaded the folder in between)
            if self._state.error_code in (self._models_error[0], "NO_MODELS"):
                self._state.error_code, self._state.message = "", ""
            self._models_stamp, self._models_error = stamp, ("", "")
        msg = (f"models from {path} ({why}): {', '.join(o.name for o in rec.objects.values())} "
               f"in {time.perf_counter() - t0:.1f} s")
        self.log("info", msg)
        return True, msg

    def poll(self) -> None:
        """Every models_poll_s: load the folder again when its recognition.json changed."""
        poll = self.cfg.models_poll_s
        if poll > 0 and time.monotonic() - self._last_poll >= poll:
            self._last_poll = time.monotonic()
            st = self._stamp(self.cfg.models_dir)
            if st is not None and st != self._models_stamp:
                self.load(self.cfg.models_dir, "new models")

    def reconfigure(self, cfg: RecognitionConfig) -> None:
        """A changed configuration (dynamic parameters); a new models_dir loads in the
        background."""
        old, self.cfg = self.cfg, cfg
        if cfg.models_dir != old.models_dir:
            threading.Thread(target=self.load, args=(cfg.models_dir, "models_dir changed"),
                             daemon=True).start()

    # -- frames ----------------------------------------------------------------------------
    def put(self, decode: Callable[[], Frame]) -> None:
        """A frame that arrived; ``decode()`` (run on the worker) turns it into a Frame or raises
        the InputError that rejects it."""
        with self._lock:
            self._state.received += 1
        self.mailbox.put((time.monotonic(), decode))

    def reject(self, e: NolError) -> None:
        with self._lock:
            self._state.rejected += 1
            self._state.error_code, self._state.message = e.code, str(e)
        self.on_error(e.code, str(e))

    def _work(self) -> None:
        while True:
            item = self.mailbox.get()
            if item is None:
                return
            try:
                self._process(*item)
            except NolError as e:
                self.reject(e)
            except Exception as e:  # never let the worker die
                traceback.print_exc()
                err = NolError(f"{type(e).__name__}: {e}")
                err.code = "INTERNAL_ERROR"
                self.reject(err)

    def _process(self, t_arrival: float, decode) -> None:
        cfg = self.cfg
        with self._lock:
            rec, missing = self.recognizer, self._models_error
        if rec is None:
            raise NoModelsError(missing[1] or f"no models loaded from '{cfg.models_dir}'")
        f = decode()
        t0 = time.perf_counter()
        results = rec.recognize(f.rgb, f.intrinsics, f.depth,
                                score_thresh=None if cfg.score_thresh < 0 else cfg.score_thresh,
                                max_per_class=cfg.max_per_class or None,
                                appearance=cfg.appearance)
        t_rec = time.perf_counter() - t0
        frames = object_frames(results, cfg.object_frame_prefix, cfg.min_pose_score)
        with self._lock:
            s = self._state
            s.processed += 1
            s.detections += len(results)
            s.poses += len(frames)
            s.last_latency_s = time.monotonic() - t_arrival
            self._rec_times.append(t_rec)
        self.on_result(replace(f, t_arrival=t_arrival), results, frames)

    def state(self) -> RecognitionState:
        with self._lock:
            rec = self.recognizer
            s = replace(self._state, dropped_busy=self.mailbox.dropped,
                        models_loaded=rec is not None,
                        object_names=[o.name for o in rec.objects.values()] if rec else [],
                        mean_recognize_s=float(np.mean(self._rec_times))
                        if self._rec_times else 0.0)
            if rec is None:
                s.models_dir = ""
            return s

    def shutdown(self) -> None:
        self.mailbox.close()
        if self._worker.is_alive():
            self._worker.join(10)
