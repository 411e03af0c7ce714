"""Live tracking of the buffered RGB-D stream, scene mesh and sequence export (no rclpy).

The reconstruction node hands every synchronised frame to :meth:`LiveTracker.submit`, which
never blocks: one worker thread tracks the frames in arrival order with the core
:class:`~nol_ros.reconstruction.tracking.RgbdTracker`. When the tracker is slower than the
camera, at most ``max_backlog`` frames wait; a further frame pushes the OLDEST waiting one out
(``frames_skipped``: it stays in the buffer and is exported with an interpolated pose, it is just
not tracked). So the pose stays recent, memory is bounded, and nothing ever waits on the
executor; the skips are counted and reported in the tracking status.

Odometry prior (``odometry_mode``): ``auto`` asks the node for T_odom_camera at each frame's
stamp (waiting up to ``tf_timeout_s`` for the transform, ``first_tf_timeout_s`` for the first
frame); if the FIRST frame has it, the map
frame is anchored to odom (T_map_odom = identity at the start) and the tf mode is ``map->odom``;
if not, the tracker runs on vision alone from then on (``map->camera``, no more lookups, one
warning). In ``map->odom`` mode a frame whose odometry does not arrive in time is not
tracked (``frames_without_odometry``; it is buffered and exported with an interpolated pose).
``required`` refuses to track frames without the prior (counted, error TF_*).
``none`` never asks. Why the two tf modes: see :mod:`nol_ros.nodes.reconstruction_node`.

Export (:func:`export_sequence`) writes the buffer as a BOP scene (+ the live poses that fused
odometry as ``odometry.json``, which :func:`nol_ros.datasets.bag_import.load_odometry` reads
as the motion prior of the offline chain); :func:`integrate_scene_mesh` builds the TSDF mesh
from the tracked poses.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nol_ros.datasets.bop import BopSceneWriter
from nol_ros.enums import OdometryMode, parse_field
from nol_ros.errors import ConfigError, InputError, NolError
from nol_ros.geometry import interpolate_T
from nol_ros.io_utils import atomic_write_json, atomic_write_mesh
from nol_ros.reconstruction.tracking import RgbdTracker, TrackerConfig, TrackResult
from nol_ros.streaming.ingest import RgbdFrame
from nol_ros.streaming.tf_buffer import ExtrapolationError, TransformError

TF_MAP_ODOM, TF_MAP_CAMERA = "map->odom", "map->camera"
EXPORT_MARKER = "nol_export.json"
TMP_MARKER = ".nol_export_tmp"
# the live poses go with an export as motion prior only when at least this share of its tracked
# frames was trusted and fused odometry (else the offline chain re-tracks from the images alone)
MIN_TRUSTED_FOR_PRIOR = 0.5
# ... and a frame the live node did not trust gets a prior only when trusted frames this close
# in time (s) bracket it: across a longer gap (the track lost, the node far behind) a pose
# interpolated in a straight line is not where the camera went, and the offline chain's
# odometry check would refuse its right alignments (fr1/desk at 1x through the graph: lost
# over 283 frames against such a prior, tracked from the images alone)
PRIOR_MAX_GAP_S = 0.1


class NoFramesError(NolError):
    """The buffer holds no (tracked) frames yet."""

    code = "NO_FRAMES"


@dataclass(frozen=True)
class LiveTrackingConfig:
    """How the reconstruction node tracks the live stream (see the module doc)."""

    enabled: bool = True
    max_backlog: int = 15              # frames waiting for the tracker; more -> oldest skipped
    odometry_mode: OdometryMode = OdometryMode.AUTO  # auto | required | none
    tf_timeout_s: float = 1.0          # wait this long for a frame's odometry transform (it
    #                                    normally comes within ms; 0.3 s was missed in a test on
    #                                    a machine at load 11)
    first_tf_timeout_s: float = 2.0    # ... and this long for the first frame's (it decides
    #                                    map->odom or map->camera; /tf_static may come late)
    max_keyframes: int = 100           # keyframes keeping images + features (~0.4 MB each at
    #                                    640x480 input): the live tracker's memory budget

    def __post_init__(self):
        parse_field(self, "odometry_mode", OdometryMode)
        if self.max_backlog < 1:
            raise ConfigError(f"tracking.max_backlog must be >= 1, got {self.max_backlog}")
        if self.tf_timeout_s < 0 or self.first_tf_timeout_s < 0:
            raise ConfigError(f"tracking.tf_timeout_s ({self.tf_timeout_s}) and "
                              f"first_tf_timeout_s ({self.first_tf_timeout_s}) must be >= 0")


@dataclass
class LiveResult:
    """One tracked frame (buffer index, stamp, camera frame id), the tracker's result
    (T_world_camera = T_map_camera) and the odometry pose used as prior (None without). The
    images stay in the ingest buffer only, so old results cost no image memory."""

    index: int
    stamp_ns: int
    frame_id: str
    track: TrackResult
    T_odom_camera: np.ndarray | None
    tf_mode: str
    received_s: float
    done_s: float

    @property
    def T_map_odom(self) -> np.ndarray | None:
        if self.T_odom_camera is None:
            return None
        return self.track.T_world_camera @ np.linalg.inv(self.T_odom_camera)


@dataclass
class LiveStatus:
    frames_tracked: int = 0
    frames_tracking_failed: int = 0
    frames_relocalised: int = 0
    frames_tf_withheld: int = 0         # untrusted poses: no TF published for them
    tracking_state: str = ""
    frames_skipped: int = 0
    frames_without_odometry: int = 0
    frames_tf_refused: int = 0
    backlog: int = 0
    keyframes: int = 0
    tracking_ok: bool = False
    fitness: float = 0.0
    tracking_fps: float = 0.0
    latency_s: float = 0.0
    last_stamp_ns: int = 0
    tf_mode: str = ""
    error_code: str = ""
    message: str = ""
    errors_by_code: dict = field(default_factory=dict)


# (frame, timeout_s) -> T_odom_camera (4, 4); raises TransformError when it is not available
PriorFn = Callable[[RgbdFrame, float], np.ndarray]


class LiveTracker:
    """Track submitted frames on a worker thread (see the module doc).

    ``lookup_prior(frame, timeout_s)``: T_odom_camera or raise TransformError (the node's TF).
    ``on_result(LiveResult, RgbdFrame)`` and ``on_error(code, message)`` are called on the
    worker thread. At most ``max_results`` results are kept (the oldest go first), like the
    ingest buffer's ``max_frames``.
    """

    def __init__(self, config: LiveTrackingConfig = LiveTrackingConfig(),
                 tracker_config: TrackerConfig = TrackerConfig(),
                 lookup_prior: PriorFn | None = None,
                 on_result: Callable[[LiveResult], None] | None = None,
                 on_error: Callable[[str, str], None] | None = None,
                 on_info: Callable[[str], None] | None = None, max_results: int = 100000):
        self.cfg, self.tracker_cfg = config, tracker_config
        # Aligning to the last keyframe never touches the tracker's own TSDF (the mesh and the
        # offline chain integrate their own), so the live tracker gets a small one: the default
        # 60000 blocks cost 1.3 s and 600 MB at start-up (measured) for nothing.
        self._live_tracker_cfg = (replace(tracker_config,
                                          block_count=min(tracker_config.block_count, 256))
                                  if tracker_config.reference != "model" else tracker_config)
        # bounded memory: the live tracker runs for hours (the offline chain keeps its own)
        self._live_tracker_cfg = replace(self._live_tracker_cfg,
                                         max_keyframes=min(max(1, config.max_keyframes),
                                                           tracker_config.max_keyframes or
                                                           config.max_keyframes))
        self.max_results = max(1, int(max_results))
        self.lookup_prior = lookup_prior
        self.on_result, self.on_error, self.on_info = on_result, on_error, on_info
        self._cv = threading.Condition()
        self._queue: deque[tuple[RgbdFrame, float]] = deque()
        self._track_lock = threading.Lock()  # held while the tracker runs; reset waits for it
        self._stop = False
        self._generation = 0
        self._busy = False
        self.tracker = None
        self.results: dict[int, LiveResult] = {}   # by buffer frame index
        self._status = LiveStatus()
        self._durations: deque[float] = deque(maxlen=30)
        self._worker = threading.Thread(target=self._run, name="live-tracker", daemon=True)
        self._worker.start()

    # -- API ------------------------------------------------------------------------------------
    def submit(self, frame: RgbdFrame) -> None:
        """Queue a frame for tracking (never blocks; skips the oldest waiting frame when the
        backlog is full)."""
        if not self.cfg.enabled:
            return
        with self._cv:
            if len(self._queue) >= self.cfg.max_backlog:
                self._queue.popleft()
                self._status.frames_skipped += 1
            self._queue.append((frame, time.monotonic()))
            self._status.backlog = len(self._queue)
            self._cv.notify_all()

    def reset(self) -> None:
        """Forget every frame, result and the tracker (waits for a running frame to finish)."""
        with self._cv:
            self._generation += 1
            self._queue.clear()
        with self._track_lock, self._cv:
            self.tracker = None
            self.results = {}
            self._status = LiveStatus()
            self._durations.clear()

    def status(self) -> LiveStatus:
        with self._cv:
            return replace(self._status, backlog=len(self._queue),
                           errors_by_code=dict(self._status.errors_by_code))

    def snapshot(self) -> dict[int, LiveResult]:
        with self._cv:
            return dict(self.results)

    def idle(self) -> bool:
        with self._cv:
            return not self._queue and not self._busy

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the backlog is tracked (True) or ``timeout_s`` passed (False)."""
        t0 = time.monotonic()
        with self._cv:
            while self._queue or self._busy:
                left = timeout_s - (time.monotonic() - t0)
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._queue.clear()
            self._cv.notify_all()
        self._worker.join(timeout_s)

    # -- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                frame, t_recv = self._queue.popleft()
                self._status.backlog = len(self._queue)
                gen = self._generation
                self._busy = True
            try:
                res = self._track(frame, t_recv, gen)
                if res is not None and self.on_result is not None:
                    self.on_result(res, frame)
            except NolError as e:
                self._error(e.code, str(e))
            except Exception as e:  # never kill the worker: report and go on
                traceback.print_exc()
                self._error("INTERNAL_ERROR", f"tracking frame {frame.index} failed: "
                                              f"{type(e).__name__}: {e}")
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _error(self, code: str, message: str) -> None:
        with self._cv:
            s = self._status
            s.error_code, s.message = code, message
            s.errors_by_code[code] = s.errors_by_code.get(code, 0) + 1
        if self.on_error is not None:
            self.on_error(code, message)

    def _prior(self, frame: RgbdFrame) -> tuple[np.ndarray | None, bool]:
        """(T_odom_camera or None, refuse this frame)."""
        mode = self.cfg.odometry_mode
        with self._cv:
            tf_mode = self._status.tf_mode
        if mode == OdometryMode.NONE or self.lookup_prior is None or tf_mode == TF_MAP_CAMERA:
            return None, False
        timeout = self.cfg.first_tf_timeout_s if tf_mode == "" else self.cfg.tf_timeout_s
        try:
            T = np.asarray(self.lookup_prior(frame, timeout), dtype=np.float64)
            return T, False
        except TransformError as e:
            if mode == OdometryMode.REQUIRED:
                with self._cv:
                    self._status.frames_tf_refused += 1
                self._error(e.code, f"frame {frame.index} not tracked: odometry_mode is "
                                    f"'required' and the odometry TF is missing: {e}")
                return None, True
            if tf_mode == "" and not isinstance(e, ExtrapolationError):
                if self.on_info is not None:
                    self.on_info(f"no odometry TF for the first frame ({e}); tracking on vision "
                                 f"alone and publishing {TF_MAP_CAMERA} (set "
                                 "tracking.odometry_mode: required to insist on odometry)")
                return None, False
            # map->odom: a frame without its odometry is not tracked (it stays buffered and is
            # exported with an interpolated pose). Tracking it on vision alone would hand the
            # tracker an odometry gap: its next prediction would add the skipped frame's motion
            # twice (measured: 6 of 29 frames then failed their checks on the small bag).
            # The same for a first frame whose odometry exists but is late (extrapolation): one
            # late message must not switch the whole run to vision alone (measured: runs of
            # the node on vision alone with frames skipped published poses 1.8 m off;
            # bench_ros_throughput.py, BENCHMARKS.md).
            with self._cv:
                self._status.frames_without_odometry += 1
            self._error(e.code, f"frame {frame.index} not tracked: its odometry transform "
                                f"did not arrive within {timeout} s: {e}")
            return None, True

    def _track(self, frame: RgbdFrame, t_recv: float, gen: int) -> LiveResult | None:
        prior, refuse = self._prior(frame)
        if refuse:
            return None
        with self._track_lock:
            with self._cv:
                if gen != self._generation:
                    return None  # reset while we waited
            if self.tracker is None:
                tf_mode = TF_MAP_ODOM if prior is not None else TF_MAP_CAMERA
                # the live results are kept (bounded) in self.results; the tracker keeps few
                self.tracker = RgbdTracker(frame.intrinsics, self._live_tracker_cfg,
                                           T_world_first=prior, max_results=10)
                with self._cv:
                    self._status.tf_mode = tf_mode
            elif frame.intrinsics != self.tracker.intr:
                raise InputError(f"frame {frame.index}: the CameraInfo changed ({frame.intrinsics}"
                                 f" vs {self.tracker.intr} at the start); call ~/reset to start "
                                 "a new sequence with the new camera")
            t0 = time.perf_counter()
            tr = self.tracker.process(frame.rgb, frame.depth_m, prior, frame.stamp_ns)
            dt = time.perf_counter() - t0
            with self._cv:
                tf_mode = self._status.tf_mode
                res = LiveResult(index=frame.index, stamp_ns=frame.stamp_ns,
                                 frame_id=frame.frame_id, track=tr,
                                 T_odom_camera=prior if tf_mode == TF_MAP_ODOM else None,
                                 tf_mode=tf_mode, received_s=t_recv, done_s=time.monotonic())
                self.results[frame.index] = res
                while len(self.results) > self.max_results:
                    del self.results[next(iter(self.results))]
                self._durations.append(dt)
                s = self._status
                s.frames_tracked += 1
                s.frames_tracking_failed += int(not tr.ok)
                s.frames_tf_withheld += int(not tr.ok)
                s.frames_relocalised += int(tr.state == "relocalised")
                s.tracking_state = tr.state
                s.keyframes += int(tr.keyframe)
                s.tracking_ok, s.fitness = bool(tr.ok), float(tr.fitness)
                s.tracking_fps = len(self._durations) / max(sum(self._durations), 1e-9)
                s.latency_s = res.done_s - t_recv
                s.last_stamp_ns = frame.stamp_ns
        if not tr.ok:
            code = "TRACKING_LOST" if tr.state == "lost" else "TRACKING_FAILED"
            self._error(code, f"frame {frame.index} (stamp {frame.stamp_ns}): pose not trusted, "
                              f"no TF published: {tr.message}")
        elif tr.state == "relocalised" and self.on_info is not None:
            self.on_info(f"frame {frame.index}: re-localised against keyframe {tr.ref_keyframe} "
                         f"(fitness {tr.fitness:.2f}); tracking resumed")
        return res


# -- poses of every buffered frame -------------------------------------------------------------
def poses_for_frames(frames: list[RgbdFrame], results: dict[int, LiveResult],
                     max_gap_s: float | None = None
                     ) -> tuple[list[np.ndarray | None], list[bool]]:
    """T_map_camera for every frame: tracked ones as tracked, the others interpolated in time
    between the nearest tracked neighbours (nearest one at the ends). With ``max_gap_s`` a frame
    not tracked gets None unless tracked frames at most that far apart bracket it (no guess
    across a long gap or past the ends). Returns (poses, tracked)."""
    tracked = [f.index in results for f in frames]
    known = [(f.stamp_ns, results[f.index].track.T_world_camera) for f in frames
             if f.index in results]
    if not known:
        raise NoFramesError("no buffered frame has been tracked yet; wait for the tracker (see "
                            "the tracking status) or check tracking.enabled")
    known.sort(key=lambda x: x[0])
    stamps = np.array([k[0] for k in known], dtype=np.int64)
    out: list[np.ndarray | None] = []
    for f, is_tracked in zip(frames, tracked):
        if is_tracked:
            out.append(np.asarray(results[f.index].track.T_world_camera, dtype=np.float64))
            continue
        i = int(np.searchsorted(stamps, f.stamp_ns))
        inside = 0 < i < len(known)
        if max_gap_s is not None and not (inside and (stamps[i] - stamps[i - 1]) * 1e-9
                                          <= max_gap_s):
            out.append(None)
        elif i == 0:
            out.append(known[0][1].copy())
        elif i >= len(known):
            out.append(known[-1][1].copy())
        else:
            t0, t1 = stamps[i - 1], stamps[i]
            a = 0.0 if t1 == t0 else (f.stamp_ns - t0) / (t1 - t0)
            out.append(interpolate_T(known[i - 1][1], known[i][1], float(a)))
    return out, tracked


# -- export ------------------------------------------------------------------------------------
@dataclass
class ExportSummary:
    path: str
    frames: int
    frames_tracked: int
    unchanged: bool = False


def _is_export(d: Path) -> bool:
    return (d / EXPORT_MARKER).is_file()


def export_sequence(frames: list[RgbdFrame], results: dict[int, LiveResult], out_dir: str | Path,
                    step: int = 1, version: str = "", meta: dict | None = None,
                    map_frame: str = "map", camera_frame: str = "", consume: bool = False
                    ) -> ExportSummary:
    """Write ``frames`` (every ``step``-th) as a BOP scene folder with ``odometry.json`` (the
    live T_map_camera of each exported frame, where the live tracking fused odometry: the
    offline chain's motion prior, :func:`poses_for_frames` within ``PRIOR_MAX_GAP_S``) and
    ``live_trajectory.json`` (the live poses, tracked or interpolated). ``out_dir`` must not
    exist, be empty, or be a previous export (it holds nol_export.json); the folder is written
    next to it and swapped in at the end, so a reader never sees half an export. With the same
    ``version`` as the existing export nothing is written (``unchanged``).

    Each frame's images are let go as soon as they are written. ``consume``: ``frames`` (a list)
    is emptied at once, so this function holds the only references: a frame the ring buffer
    evicts while a long export runs is then freed once it is written (or at once when ``step``
    skips it), instead of every frame of the snapshot staying in memory next to the buffer's
    new ones until the export ends (up to twice the buffer's memory)."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"export path '{out}' is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_export(out):
        raise InputError(f"export folder '{out}' exists, is not empty and is not a previous "
                         f"export (no {EXPORT_MARKER}); choose another folder (nothing is "
                         "overwritten)")
    given = frames
    frames = list(frames)[::max(1, int(step))]
    if consume:
        given.clear()
    if not frames:
        raise NoFramesError("the buffer holds no frames yet; is the camera publishing (see "
                            "~/get_buffer_status)?")
    if version and _is_export(out):
        try:
            old = json.loads((out / EXPORT_MARKER).read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("version") == version and old.get("step") == max(1, int(step)):
            return ExportSummary(str(out), int(old.get("frames", len(frames))),
                                 int(old.get("frames_tracked", 0)), unchanged=True)
    # only trusted poses feed the prior: an untrusted frame's pose is the tracker's guess
    trusted = {k: r for k, r in results.items() if r.track.ok}
    n_trusted = sum(f.index in trusted for f in frames)
    n_tracked = sum(f.index in results for f in frames)  # trusted or not (others skipped)
    # ... and only poses that fused odometry (map->odom) carry what the offline chain does not
    # have: vision-alone live poses are the same tracker's on a fraction of the frames
    # (fr1/desk at 1x through the graph: 6.0 cm ATE with them as prior, 1.76 without)
    fused = {k: r for k, r in trusted.items() if r.tf_mode == TF_MAP_ODOM}
    n_fused = sum(f.index in fused for f in frames)
    if trusted and n_trusted >= MIN_TRUSTED_FOR_PRIOR * n_tracked:
        poses, tracked = poses_for_frames(frames, trusted)
    else:
        poses, tracked = None, [f.index in trusted for f in frames]
    if fused and n_fused >= MIN_TRUSTED_FOR_PRIOR * n_tracked:
        prior = poses_for_frames(frames, fused, PRIOR_MAX_GAP_S)[0]
    else:
        # vision alone, tracking off, or lost for most of the tracked frames (a tracker starved
        # by load): images only, the offline chain tracks from scratch
        prior = None
    intr = frames[0].intrinsics
    cam = camera_frame or frames[0].frame_id or "camera"
    rows = [(f.index, f.stamp_ns) for f in frames]   # what the files below need of each frame
    tmp = out.parent / f".{out.name}.tmp"
    if tmp.exists():
        if not (tmp / TMP_MARKER).is_file():   # only what this code made is ever deleted
            raise InputError(f"'{tmp}' is in the way and was not made by an export; move it "
                             "or choose another export folder")
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / TMP_MARKER).write_text("an unfinished nol_ros export; safe to delete\n")
    try:
        writer = BopSceneWriter(tmp, intr, depth_scale=1.0)
        for k, f in enumerate(frames):
            if f.intrinsics != intr:
                raise InputError(f"frame {f.index} has another camera ({f.intrinsics}) than the "
                                 f"first ({intr}); reset the node between sequences")
            writer.add_frame(k, f.rgb, f.depth_m, None, [], stamp_ns=f.stamp_ns,
                             depth_stamp_ns=f.depth_stamp_ns)
            frames[k] = f = None   # written: its images may go (see consume)
        writer.close()
        if prior is not None:
            atomic_write_json(tmp / "odometry.json", {
                "frame": map_frame, "child": cam, "tf_source": "live_tracking",
                "note": "live tracked T_map_camera (interpolated across short gaps, null where "
                        "the live track had no trusted pose near): a motion prior for the "
                        "offline chain, not ground truth",
                "T_odom_camera": {str(k): None if T is None else T.tolist()
                                  for k, T in enumerate(prior)}})
        traj = []
        for k, ((index, stamp_ns), tr) in enumerate(zip(rows, tracked)):
            r = results.get(index)
            traj.append({"index": k, "buffer_index": index, "stamp_ns": stamp_ns,
                         "T_world_camera": poses[k].tolist() if poses is not None else None,
                         "tracked": tr,
                         "ok": bool(r.track.ok) if r else False,
                         "state": r.track.state if r else "not tracked",
                         "fitness": float(r.track.fitness) if r else 0.0,
                         "keyframe": bool(r.track.keyframe) if r else False,
                         "T_odom_camera": (r.T_odom_camera.tolist()
                                           if r is not None and r.T_odom_camera is not None
                                           else None)})
        atomic_write_json(tmp / "live_trajectory.json", traj)
        n_tracked = int(sum(tracked))
        atomic_write_json(tmp / EXPORT_MARKER, {
            "version": version, "step": max(1, int(step)), "frames": len(frames),
            "frames_tracked": n_tracked, "created_unix_s": time.time(), **(meta or {})})
        (tmp / TMP_MARKER).unlink()
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportSummary(str(out), len(frames), n_tracked)


# -- scene mesh --------------------------------------------------------------------------------
def integrate_scene_mesh(frames: list[RgbdFrame], results: dict[int, LiveResult],
                         tracker_config: TrackerConfig = TrackerConfig(),
                         weight_threshold: float = 2.0):
    """TSDF over the tracked frames whose alignment passed (every ``integrate_every``-th and
    all keyframes, as the offline chain does) -> (Open3D legacy TriangleMesh, frames used)."""
    usable = [f for f in frames if f.index in results and results[f.index].track.ok]
    if not usable:
        raise NoFramesError("no tracked frame to integrate yet; wait for the tracker (see the "
                            "tracking status)")
    mesher = RgbdTracker(usable[0].intrinsics, tracker_config)
    mesher.result.frames = [replace(results[f.index].track, index=k)
                            for k, f in enumerate(usable)]
    n = mesher.integrate_frames(lambda k: (usable[k].rgb, usable[k].depth_m))
    return mesher.extract_mesh(weight_threshold=weight_threshold), n


def write_mesh_file(path: str | Path, mesh) -> Path:
    """Write an Open3D TriangleMesh (.ply or .obj) atomically; returns the absolute path."""

    p = Path(path).expanduser().resolve()
    if p.suffix.lower() not in (".ply", ".obj"):
        raise InputError(f"mesh path '{path}' must end in .ply or .obj")
    if len(mesh.triangles) == 0:
        raise NoFramesError("the TSDF holds no surface yet (too few integrated frames or "
                            "weights below mesh_weight_threshold)")

    return atomic_write_mesh(p, mesh)
