"""RGB-D ingest: validated (rgb, depth, CameraInfo) message triples -> numpy frames.

No rclpy here: the node hands messages in; this class converts and checks them, keeps a
bounded buffer, and counts what it rejected and why, so the node can report it.
"""

from __future__ import annotations

import mmap
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from nol_ros.errors import InputError, NolError
from nol_ros.streaming.messages import (
    camera_info_to_intrinsics,
    check_image_matches_info,
    depth_from_image,
    rgb_from_image,
    stamp_to_ns,
)


@dataclass(frozen=True)
class IngestConfig:
    """Checks and buffering of incoming RGB-D frames."""

    depth_min_m: float = 0.2        # depth outside [min, max] is set invalid (0)
    depth_max_m: float = 6.0
    max_frames: int = 900           # ring buffer size (oldest frames are dropped); a 640x480
    #                                 frame takes 2.1 MB (rgb + float32 depth): 900 = 1.9 GB
    min_valid_depth_fraction: float = 0.05  # frames with less valid depth are rejected


_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)


def in_own_pages(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` in an anonymous memory map of its own, returned to the system as soon as
    the last reference to the array goes.

    Why (the whole-graph soak, bench/soak_all.py): the ring buffer keeps ~900 frames of 0.9 and
    1.2 MB, allocated and freed first-in first-out for hours. From the heap, glibc keeps the
    pages of freed frames (its mmap threshold adapts upward after the first frees), so the
    node's resident memory grew to the highest it ever was -- e.g. after an export held frames
    the buffer had already dropped -- and stayed: 2.45 GB with the stream alone, 2.74 GB with
    an export every 45 s, against 2.23 GB with every frame in its own pages (measured, shipped
    parameters, 640x480 at 30 Hz). Only the buffered arrays take this path: a process-wide
    fixed mmap threshold (MALLOC_MMAP_THRESHOLD_) made the tracker's per-frame tensors fault in
    fresh pages and cost it 20-35 % more CPU per frame. The cost here: the pages are faulted in
    by the kernel at once (MAP_POPULATE where there is one), ~1 ms per 640x480 frame."""
    buf = mmap.mmap(-1, max(a.nbytes, 1), flags=_MAP_FLAGS)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size).reshape(a.shape)
    out[...] = a
    return out


@dataclass
class RgbdFrame:
    """One synchronised frame.

    rgb: (H, W, 3) uint8 RGB; depth_m: (H, W) float32 metres, 0 = invalid."""

    index: int
    stamp_ns: int
    depth_stamp_ns: int
    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: object  # nol_ros.camera.Intrinsics
    rgb_encoding: str = "rgb8"
    depth_encoding: str = "16UC1"
    frame_id: str = ""              # the rgb image's header.frame_id (camera optical frame)
    valid_fraction: float = 0.0     # fraction of pixels with valid depth


@dataclass
class IngestStatus:
    frames_received: int = 0
    frames_dropped: int = 0
    width: int = 0
    height: int = 0
    rgb_encoding: str = ""
    depth_encoding: str = ""
    last_valid_depth_fraction: float = 0.0
    last_median_depth_m: float = 0.0
    last_stamp_ns: int = 0
    error_code: str = ""
    message: str = ""
    errors_by_code: dict = field(default_factory=dict)


class RgbdIngest:
    def __init__(self, config: IngestConfig = IngestConfig()):
        self.config = config
        self.frames: deque[RgbdFrame] = deque(maxlen=config.max_frames)
        self.status = IngestStatus()
        self._lock = threading.Lock()
        self._next_index = 0

    def add(self, rgb_msg, depth_msg, info_msg) -> RgbdFrame:
        """Convert and check one triple; buffer it and return the frame.

        Raises an :class:`InputError` subclass (and counts the drop) when the triple is unusable.
        """
        try:
            frame = self._convert(rgb_msg, depth_msg, info_msg)
        except NolError as e:
            self.count_rejected(e)
            raise
        with self._lock:
            self.frames.append(frame)
            s = self.status
            s.frames_received += 1
            s.width, s.height = frame.depth_m.shape[1], frame.depth_m.shape[0]
            s.rgb_encoding, s.depth_encoding = frame.rgb_encoding, frame.depth_encoding
            s.last_valid_depth_fraction = frame.valid_fraction
            # median over every 4th pixel in x and y: a status figure, 16x cheaper
            sub = frame.depth_m[::4, ::4]
            sub = sub[sub > 0]
            s.last_median_depth_m = float(np.median(sub)) if sub.size else 0.0
            s.last_stamp_ns = frame.stamp_ns
        return frame

    def _convert(self, rgb_msg, depth_msg, info_msg) -> RgbdFrame:
        if info_msg is None:
            raise InputError("no CameraInfo received yet for this image stream; check that the "
                             "camera_info topic is published and remapped correctly")
        intr = camera_info_to_intrinsics(info_msg)
        rgb = rgb_from_image(rgb_msg)
        depth = depth_from_image(depth_msg)
        check_image_matches_info(rgb.shape[1], rgb.shape[0], info_msg)
        if depth.shape != rgb.shape[:2]:
            raise InputError(
                f"depth is {depth.shape[1]}x{depth.shape[0]} but rgb is {rgb.shape[1]}x"
                f"{rgb.shape[0]}; use the depth registered to the rgb camera "
                "(e.g. camera/depth_registered/image_raw)")
        c = self.config
        depth[(depth < c.depth_min_m) | (depth > c.depth_max_m)] = 0.0  # depth is our own copy
        frac = float(np.count_nonzero(depth)) / depth.size
        if frac < c.min_valid_depth_fraction:
            raise InputError(
                f"only {frac:.1%} of the depth pixels are valid in [{c.depth_min_m}, "
                f"{c.depth_max_m}] m; check the depth topic/encoding (16UC1 is mm, 32FC1 is m) "
                "and the depth range parameters")
        with self._lock:
            idx = self._next_index
            self._next_index += 1
        # buffered for minutes: in pages of their own (see in_own_pages)
        return RgbdFrame(index=idx, stamp_ns=stamp_to_ns(rgb_msg.header.stamp),
                         depth_stamp_ns=stamp_to_ns(depth_msg.header.stamp),
                         rgb=in_own_pages(rgb), depth_m=in_own_pages(depth),
                         intrinsics=intr, rgb_encoding=rgb_msg.encoding,
                         depth_encoding=depth_msg.encoding,
                         frame_id=str(rgb_msg.header.frame_id), valid_fraction=frac)

    def count_rejected(self, e: NolError) -> None:
        """Count a frame rejected here or before (e.g. for its stamp) with its code."""
        with self._lock:
            s = self.status
            s.frames_dropped += 1
            s.error_code, s.message = e.code, str(e)
            s.errors_by_code[e.code] = s.errors_by_code.get(e.code, 0) + 1

    def snapshot(self) -> list[RgbdFrame]:
        """The buffered frames, oldest first (a copy of the list; frames are not copied)."""
        with self._lock:
            return list(self.frames)

    def clear(self) -> None:
        with self._lock:
            self.frames.clear()
            self.status = IngestStatus()
            self._next_index = 0
