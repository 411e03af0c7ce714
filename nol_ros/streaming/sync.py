"""Approximate-time synchronisation of N message streams (pure Python, no rclpy).

``message_filters`` is not available from PyPI, and the Xtion's RGB and depth stamps differ by a
few milliseconds, so exact sync never fires. This policy keeps a short queue per stream and emits
a tuple as soon as every stream has a message within ``slop_s`` of the newest arrival's
partner set; everything older than an emitted tuple is dropped (counted in ``dropped``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any


class ApproximateTimeSync:
    """Match messages of ``n`` streams whose stamps lie within ``slop_s`` of each other.

    Call :meth:`add` (thread-safe) with the stream index, stamp in ns and message; ``callback``
    receives a list of ``n`` messages (stream order) for each matched set.
    """

    def __init__(self, n: int, slop_s: float, callback: Callable[[list[Any]], None],
                 queue_size: int = 10):
        if n < 2:
            raise ValueError("ApproximateTimeSync needs at least 2 streams")
        if slop_s < 0:
            raise ValueError(f"slop must be >= 0 s, got {slop_s}")
        self.n, self.slop_ns = n, int(slop_s * 1e9)
        self.callback = callback
        self.queues: list[deque] = [deque(maxlen=queue_size) for _ in range(n)]
        self.dropped = 0
        self.matched = 0
        self._lock = threading.Lock()

    def add(self, stream: int, stamp_ns: int, msg: Any) -> None:
        with self._lock:
            q = self.queues[stream]
            if len(q) == q.maxlen:
                self.dropped += 1
            q.append((int(stamp_ns), msg))
            match = self._try_match(stream)
        if match is not None:
            self.callback(match)

    def _try_match(self, stream: int) -> list[Any] | None:
        t_new, _ = self.queues[stream][-1]
        picks: list[int] = []
        for i, q in enumerate(self.queues):
            if i == stream:
                picks.append(len(q) - 1)
                continue
            if not q:
                return None
            j = min(range(len(q)), key=lambda k: abs(q[k][0] - t_new))
            picks.append(j)
        stamps = [self.queues[i][j][0] for i, j in enumerate(picks)]
        if max(stamps) - min(stamps) > self.slop_ns:
            return None
        out = [self.queues[i][j][1] for i, j in enumerate(picks)]
        for i, j in enumerate(picks):
            q = self.queues[i]
            self.dropped += j  # older unmatched messages
            for _ in range(j + 1):
                q.popleft()
        self.matched += 1
        return out

    def pending(self) -> Sequence[int]:
        return [len(q) for q in self.queues]
