"""A transform buffer with time interpolation (pure core; the ROS listener is in tf.py).

tf2_ros is not available as a PyPI wheel, so the package carries its own buffer with the
semantics ROS users expect: a tree of frames (each child has one parent), dynamic transforms
interpolated in time (lerp + slerp), static transforms valid at all times, lookups at time 0
meaning "latest common time", and specific errors for unknown frames, disconnected trees and
extrapolation beyond the cached interval.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

import numpy as np

from nol_ros.errors import NolError
from nol_ros.geometry import interpolate_T


class TransformError(NolError):
    code = "TF_ERROR"


class LookupError_(TransformError):  # noqa: N801 - avoid shadowing the builtin LookupError
    """A frame is unknown or the two frames are not connected."""

    code = "TF_LOOKUP"


class ExtrapolationError(TransformError):
    """The requested time lies outside the buffered interval of a transform on the path."""

    code = "TF_EXTRAPOLATION"


FrameLookupError = LookupError_


@dataclass
class _Edge:
    parent: str
    static: bool = False
    stamps: list[int] = field(default_factory=list)     # sorted ns
    Ts: list[np.ndarray] = field(default_factory=list)  # T_parent_child


class TransformBuffer:
    """Store ``T_parent_child`` samples and answer ``lookup(target, source, t)`` =
    ``T_target_source`` at time ``t`` (ns; 0 = latest time all edges on the path share)."""

    def __init__(self, cache_time_s: float = 10.0, max_extrapolation_s: float = 0.0):
        self.cache_ns = int(cache_time_s * 1e9)
        self.max_extrap_ns = int(max_extrapolation_s * 1e9)
        self._edges: dict[str, _Edge] = {}
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------------
    def set_transform(self, parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray,
                      static: bool = False) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        T = np.asarray(T_parent_child, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise TransformError(f"transform {parent} -> {child} is not a finite 4x4 matrix")
        if parent == child:
            raise TransformError(f"transform from frame '{child}' to itself is not allowed")
        with self._lock:
            e = self._edges.get(child)
            if e is None or e.parent != parent or e.static != static:
                e = _Edge(parent=parent, static=static)
                self._edges[child] = e
            if static:
                e.stamps, e.Ts = [0], [T]
                return
            i = bisect.bisect_left(e.stamps, stamp_ns)
            if i < len(e.stamps) and e.stamps[i] == stamp_ns:
                e.Ts[i] = T
            else:
                e.stamps.insert(i, int(stamp_ns))
                e.Ts.insert(i, T)
            # drop samples older than the cache window relative to the newest
            cut = bisect.bisect_left(e.stamps, e.stamps[-1] - self.cache_ns)
            if cut > 0:
                del e.stamps[:cut]
                del e.Ts[:cut]

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()

    def clear_dynamic(self) -> None:
        """Forget the dynamic transforms, keep the static ones (after a time jump)."""
        with self._lock:
            self._edges = {c: e for c, e in self._edges.items() if e.static}

    # -- reading ---------------------------------------------------------------------------------
    def frames(self) -> list[str]:
        with self._lock:
            return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformError:
            return False

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """``T_target_source`` (4, 4) at ``stamp_ns`` (0 = latest common time)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            if target == source:
                if target not in self._edges and not any(
                        e.parent == target for e in self._edges.values()):
                    raise LookupError_(f"frame '{target}' does not exist in the TF tree; "
                                       f"known frames: {self._known()}")
                return np.eye(4)
            up_s = self._chain(source)
            up_t = self._chain(target)
            roots_s, roots_t = [f for f, _ in up_s], [f for f, _ in up_t]
            common = next((f for f in roots_s if f in set(roots_t)), None)
            if common is None:
                raise LookupError_(
                    f"frames '{target}' and '{source}' are not connected (roots "
                    f"'{roots_t[-1]}' and '{roots_s[-1]}'); is a transform between the two trees "
                    "published (e.g. map -> odom, odom -> base_link, a static camera mount)?")
            path_s = up_s[:roots_s.index(common)]
            path_t = up_t[:roots_t.index(common)]
            edges = [self._edges[c] for c, _ in path_s + path_t]
            if stamp_ns == 0:
                dyn = [e for e in edges if not e.static]
                stamp_ns = min(e.stamps[-1] for e in dyn) if dyn else 0
            T_common_source = np.eye(4)
            for child, _ in path_s:
                T_common_source = self._at(child, stamp_ns) @ T_common_source
            T_common_target = np.eye(4)
            for child, _ in path_t:
                T_common_target = self._at(child, stamp_ns) @ T_common_target
        return np.linalg.inv(T_common_target) @ T_common_source

    def _known(self) -> list[str]:
        return sorted(set(self._edges) | {e.parent for e in self._edges.values()})

    def _chain(self, frame: str) -> list[tuple[str, str | None]]:
        """[(frame, parent), (parent, grandparent), ..., (root, None)]"""
        if frame not in self._edges and not any(e.parent == frame for e in self._edges.values()):
            raise LookupError_(f"frame '{frame}' does not exist in the TF tree; known frames: "
                               f"{self._known()}")
        out, seen = [], set()
        f: str | None = frame
        while f is not None:
            if f in seen:
                raise TransformError(f"TF tree has a loop through '{f}'")
            seen.add(f)
            e = self._edges.get(f)
            out.append((f, e.parent if e else None))
            f = e.parent if e else None
        return out

    def _at(self, child: str, t: int) -> np.ndarray:
        e = self._edges[child]
        if e.static:
            return e.Ts[0]
        s = e.stamps
        if t < s[0] - self.max_extrap_ns or t > s[-1] + self.max_extrap_ns:
            raise ExtrapolationError(
                f"lookup of {e.parent} -> {child} at t={t / 1e9:.3f} s would extrapolate: data "
                f"covers [{s[0] / 1e9:.3f}, {s[-1] / 1e9:.3f}] s; wait for newer transforms, "
                "check use_sim_time, or request time 0 for the latest")
        if t <= s[0]:
            return e.Ts[0]
        if t >= s[-1]:
            return e.Ts[-1]
        i = bisect.bisect_right(s, t)
        t0, t1 = s[i - 1], s[i]
        a = (t - t0) / (t1 - t0)
        return interpolate_T(e.Ts[i - 1], e.Ts[i], a)
