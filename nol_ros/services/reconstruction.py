"""Live reconstruction of the RGB-D stream: what the reconstruction node offers, without ROS.

Pairs of colour and depth messages come in (:meth:`LiveReconstruction.add_pair`, cheap: the
executor thread converts and checks them, a few ms) and are buffered (nol_ros.streaming.ingest);
the tracker runs on its own thread (:class:`nol_ros.streaming.live.LiveTracker`) with a bounded
backlog. Pairs that come before the first CameraInfo wait ``camera_info_wait_s`` for it.

Stamps: a frame stamped more than ``stamp_jump_s`` before the previous one, or more than
``stamp_future_s`` after it, is held, not believed: a single glitched stamp is dropped (counted,
BAD_STAMP) when the next frame continues the old timeline; when ``stamp_jump_frames`` frames in
a row continue the new one (a bag that loops or restarts, a new recording), buffer and tracker
are reset and a new sequence starts with them.

SaveMesh and ExportSequence write only inside ``export_root`` (a relative path is taken inside
it; anything resolving outside is refused, BAD_PATH), and an export only replaces a folder that
is empty or a previous export.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.errors import ConfigError, InputError, NolError
from nol_ros.reconstruction.tracking import TrackerConfig
from nol_ros.streaming.ingest import IngestConfig, RgbdFrame, RgbdIngest
from nol_ros.streaming.live import (
    LiveTracker,
    LiveTrackingConfig,
    export_sequence,
    integrate_scene_mesh,
    write_mesh_file,
)
from nol_ros.streaming.messages import stamp_to_ns
from nol_ros.workspace import confine


class StampError(InputError):
    code = "BAD_STAMP"


@dataclass(frozen=True)
class ReconstructionConfig:
    """The reconstruction node's parameters."""

    rgb_topic: str = "camera/rgb/image_raw"
    depth_topic: str = "camera/depth_registered/image_raw"
    camera_info_topic: str = "camera/rgb/camera_info"
    qos_reliability: str = "reliable"  # see config/reconstruction.yaml
    qos_depth: int = 30                # images the subscription holds while the executor is
    #                                    busy (~1 s at 30 Hz; 10 lost up to 15 % of the frames)
    sync_slop_s: float = 0.02
    map_frame: str = "map"
    odom_frame: str = "odom"
    camera_frame: str = ""             # "" = the rgb images' header.frame_id
    publish_tf: bool = True
    keyframe_images: bool = True       # false: Keyframe messages carry pose + CameraInfo only
    status_rate_hz: float = 5.0
    camera_info_wait_s: float = 1.0    # pairs wait this long for the first CameraInfo
    export_root: str = "nol_workspace"  # SaveMesh / ExportSequence write only in here
    export_dir: str = "nol_live_sequence"  # ExportSequence's default folder, in export_root
    export_wait_for_tracking_s: float = 5.0
    mesh_weight_threshold: float = 2.0
    stamp_jump_s: float = 1.0          # a frame this much older than the previous one ...
    stamp_future_s: float = 10.0       # ... or this much newer is held, not believed
    stamp_jump_frames: int = 3         # this many in a row on the new timeline: a new sequence
    ingest: IngestConfig = field(default_factory=IngestConfig)
    tracking: LiveTrackingConfig = field(default_factory=LiveTrackingConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self):
        if self.stamp_jump_s <= 0 or self.stamp_future_s <= 0 or self.stamp_jump_frames < 1:
            raise ConfigError("stamp_jump_s and stamp_future_s must be > 0, stamp_jump_frames "
                              ">= 1")


class StampGuard:
    """Decides, per frame stamp, whether it continues the timeline (see the module doc):
    ``check(stamp)`` -> ("ok", []) | ("hold", [earlier held stamps it contradicts: dropped]) |
    ("drop", [held stamps dropped]) | ("reset", [held stamps, the new sequence's first
    frames]). Every stamp ends up exactly once as ok, dropped, reset-included or still held."""

    def __init__(self, jump_s: float, future_s: float, frames: int):
        self.jump_ns, self.future_ns, self.frames = int(jump_s * 1e9), int(future_s * 1e9), frames
        self.last = 0
        self.held: list[int] = []

    def _off(self, ref: int, st: int) -> bool:
        return st < ref - self.jump_ns or st > ref + self.future_ns

    def check(self, st: int) -> tuple[str, list[int]]:
        if self.last == 0:
            self.last = st
            return "ok", []
        top = max(self.held) if self.held else 0
        continues_held = bool(self.held) and top <= st < self.last and not self._off(top, st)
        # (after a loop, the new timeline's frames can come within jump_s of the old last one)
        if not continues_held and not self._off(self.last, st):
            dropped, self.held = self.held, []
            self.last = max(self.last, st)
            return ("drop", dropped) if dropped else ("ok", [])
        dropped = []
        if self.held and self._off(top, st):
            dropped, self.held = self.held, []   # not even consistent with the other held ones
        self.held.append(st)
        if len(self.held) >= self.frames:
            held, self.held = self.held, []
            self.last = max(held)
            return "reset", held
        return "hold", dropped

    def clear(self) -> None:
        self.last, self.held = 0, []


@dataclass
class ExportResult:
    path: str
    frames: int
    frames_tracked: int
    unchanged: bool


class LiveReconstruction:
    """See the module doc. ``lookup_prior(frame, timeout_s)`` -> T_odom_camera (the node's TF);
    ``on_result(LiveResult, RgbdFrame)`` on the tracker thread; ``on_error(code, message)``;
    ``log(level, text)``."""

    def __init__(self, cfg: ReconstructionConfig, lookup_prior=None, on_result=None,
                 on_error: Callable[[str, str], None] | None = None,
                 log: Callable[[str, str], None] | None = None):
        self.cfg = cfg
        self.on_error = on_error or (lambda code, msg: None)
        self.log = log or (lambda level, text: None)
        if cfg.tracking.enabled:
            # lazy: open3d (~3 s) to import, loaded only when this runs
            import open3d  # noqa: F401  (seconds on a loaded machine: not on the first frame)
        self.ingest = RgbdIngest(cfg.ingest)
        self.live = LiveTracker(cfg.tracking, cfg.tracker, lookup_prior=lookup_prior,
                                on_result=on_result, on_error=self.on_error,
                                on_info=lambda text: self.log("warning", text),
                                max_results=cfg.ingest.max_frames)
        self.info = None
        self._pending: deque = deque()   # (wall time, rgb, depth) waiting for a CameraInfo
        self._held: list[tuple] = []     # (rgb, depth) with a stamp under probation
        self._lock = threading.Lock()
        self.stamps = StampGuard(cfg.stamp_jump_s, cfg.stamp_future_s, cfg.stamp_jump_frames)
        self.generation = 0
        self.frames_bad_stamp = 0

    # -- input -------------------------------------------------------------------------------
    def set_camera_info(self, msg) -> None:
        self.info = msg

    def add_pair(self, rgb_msg, depth_msg) -> None:
        """A synchronised pair of image messages (waits for the first CameraInfo)."""
        if self.info is None:
            with self._lock:
                self._pending.append((time.monotonic(), rgb_msg, depth_msg))
            self.flush_pending()
            return
        self.flush_pending()
        self._stamp_checked(rgb_msg, depth_msg)

    def flush_pending(self) -> None:
        """Pairs that came before the first CameraInfo: ingest them once it is there; reject
        (counted, 'no CameraInfo') those older than camera_info_wait_s. Called for each pair and
        by the node's 1 Hz timer (so waiting pairs are reported even if no more come)."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._pending:
                    return
                t, rgb, depth = self._pending[0]
                if self.info is None and now - t < self.cfg.camera_info_wait_s:
                    return
                self._pending.popleft()
            self._stamp_checked(rgb, depth)

    def _stamp_checked(self, rgb, depth) -> None:
        verdict, stamps = self.stamps.check(stamp_to_ns(rgb.header.stamp))
        if verdict == "hold":
            if stamps:  # the held frames this one contradicts: dropped, counted
                for r, _ in self._held:
                    self._reject_stamp(r, "a frame off the timeline (a glitched stamp)")
                self._held = []
            self._held.append((rgb, depth))
            return
        held, self._held = self._held, []
        if verdict == "drop":
            for r, _ in held:
                self._reject_stamp(r, "a single frame off the timeline (a glitched stamp)")
        elif verdict == "reset":
            self.log("warning", f"the image time jumped by {(stamps[0] - self._last_ok) / 1e9:+.1f}"
                     f" s for {len(stamps)} frames in a row (a bag loop, restart or new "
                     "recording): buffer and tracker reset, a new sequence starts")
            self.reset()
            self.stamps.last = stamps[-1]
            for r, d in held:
                self._ingest(r, d)
        self._ingest(rgb, depth)

    @property
    def _last_ok(self) -> int:
        return self.ingest.status.last_stamp_ns or self.stamps.last

    def _reject_stamp(self, rgb, why: str) -> None:
        st = stamp_to_ns(rgb.header.stamp)
        self.frames_bad_stamp += 1
        e = StampError(f"frame stamped {st / 1e9:.3f} s dropped: {why}; the buffer keeps its "
                       f"sequence (last stamp {self._last_ok / 1e9:.3f} s)")
        self.ingest.count_rejected(e)
        self.on_error(e.code, str(e))

    def _ingest(self, rgb, depth) -> None:
        try:
            frame = self.ingest.add(rgb, depth, self.info)
        except NolError as e:
            self.on_error(e.code, str(e))
            return
        self.live.submit(frame)

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
        self._held = []
        self.live.reset()
        self.ingest.clear()
        self.stamps.clear()
        self.generation += 1

    # -- outputs -----------------------------------------------------------------------------
    def _out_path(self, path: str, what: str) -> Path:
        return confine(self.cfg.export_root, path, what)

    def save_mesh(self, path: str):
        """The TSDF over the trusted frames as a mesh file inside export_root -> (path, mesh,
        frames integrated)."""
        if not path:
            raise InputError("SaveMesh.path is empty; give an output .ply or .obj path "
                             f"(relative to {self.cfg.export_root})")
        p = self._out_path(path, "SaveMesh.path")
        if p.suffix.lower() not in (".ply", ".obj"):   # before the seconds of integration
            raise InputError(f"SaveMesh.path '{path}' must end in .ply or .obj")
        self.live.wait_idle(self.cfg.export_wait_for_tracking_s)
        mesh, n = integrate_scene_mesh(self.ingest.snapshot(), self.live.snapshot(),
                                       self.cfg.tracker, self.cfg.mesh_weight_threshold)
        return write_mesh_file(p, mesh), mesh, n

    def export(self, output_dir: str = "", step: int = 1, meta: dict | None = None
               ) -> ExportResult:
        """The buffer as a BOP scene folder inside export_root (see export_sequence)."""
        out = self._out_path(output_dir or self.cfg.export_dir, "ExportSequence.output_dir")
        if not self.live.wait_idle(self.cfg.export_wait_for_tracking_s):
            self.log("info", f"exporting while {self.live.status().backlog} frames still wait "
                             "for the tracker (their poses are interpolated)")
        frames = self.ingest.snapshot()
        results = self.live.snapshot()
        version = (f"{self.generation}:{frames[0].index}:{frames[-1].index}:{len(results)}"
                   if frames else "")
        # consume: the export holds the snapshot's frames only until each is written; the ring
        # buffer meanwhile replaces them with new ones (the soak, BENCHMARKS.md)
        s = export_sequence(frames, results, out, step=step, version=version, meta=meta,
                            map_frame=self.cfg.map_frame, camera_frame=self.cfg.camera_frame,
                            consume=True)
        return ExportResult(s.path, s.frames, s.frames_tracked, s.unchanged)

    def shutdown(self) -> None:
        self.live.shutdown()


__all__ = ["LiveReconstruction", "ReconstructionConfig", "RgbdFrame", "StampGuard"]
