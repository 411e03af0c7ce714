"""Does Open3D's RGB-D odometry give the same bits for the same input wherever it is called?

    .venv/bin/python tools/open3d_heap_determinism.py             # 30 calls, main thread
    .venv/bin/python tools/open3d_heap_determinism.py --thread    # each call in a new thread
    .venv/bin/python tools/open3d_heap_determinism.py --thread --one-arena

Prints the distinct results (md5 of the 4x4 transform) of ``--calls`` identical calls of
``o3d.t.pipelines.odometry.rgbd_odometry_multi_scale`` (hybrid, one OpenMP thread) on a fixed
synthetic RGB-D pair. Measured with Open3D 0.19.0 on the 2-core reference machine
(2026-12-03, runs of 30 calls): the main thread gives 1 result, or 2 when the first call
differs from the rest; a new thread per call 2 to 4 (quiet or loaded); with glibc held to one
malloc arena (``--one-arena``: mallopt M_ARENA_MAX=1) 1, in one run a different one from the
main thread's. So the float result depends on where the buffers lie in memory, not only on the
input and the thread count (MALLOC_PERTURB_ and a fixed MALLOC_MMAP_THRESHOLD_ did not make it
repeatable): a learn job in a node's
worker thread and the same learn offline can differ in the last digits of the camera poses
(test_reconstruction_node compares them; it failed once under load, ATE 0.5881 vs 0.5864 mm).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import threading

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402  (after OMP_NUM_THREADS, read when OpenMP loads)
import open3d as o3d  # noqa: E402


def rgbd_pair(h: int = 240, w: int = 320):
    """A smooth textured depth surface and the same shifted by 3 px (source, target)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (1.0 + 0.2 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
             + 0.01 * rng.standard_normal((h, w))).astype(np.float32)
    rgb = gaussian_filter(rng.random((h, w, 3)) * 255, (3, 3, 0)).astype(np.uint8)

    def image(d, c):
        return o3d.t.geometry.RGBDImage(o3d.t.geometry.Image(np.ascontiguousarray(c)),
                                        o3d.t.geometry.Image(np.ascontiguousarray(d)))

    return image(depth, rgb), image(np.roll(depth, 3, axis=1), np.roll(rgb, 3, axis=1))


def odometry_md5(src, dst) -> str:
    K = o3d.core.Tensor([[250.0, 0, 160], [0, 250.0, 120], [0, 0, 1]], o3d.core.Dtype.Float64)
    crit = [o3d.t.pipelines.odometry.OdometryConvergenceCriteria(i) for i in (10, 5, 3)]
    r = o3d.t.pipelines.odometry.rgbd_odometry_multi_scale(
        src, dst, K, o3d.core.Tensor(np.eye(4)), 1.0, 3.0, crit,
        o3d.t.pipelines.odometry.Method.Hybrid)
    return hashlib.md5(r.transformation.numpy().tobytes()).hexdigest()[:8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--thread", action="store_true", help="each call in a new thread")
    ap.add_argument("--one-arena", action="store_true", help="mallopt(M_ARENA_MAX, 1) first")
    a = ap.parse_args()
    if a.one_arena:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)        # M_ARENA_MAX = -8 in malloc.h
    src, dst = rgbd_pair()
    out = []
    for _ in range(a.calls):
        if a.thread:
            t = threading.Thread(target=lambda: out.append(odometry_md5(src, dst)))
            t.start()
            t.join()
        else:
            out.append(odometry_md5(src, dst))
    seen = list(dict.fromkeys(out))
    print(f"{'thread per call' if a.thread else 'main thread'}"
          f"{', one arena' if a.one_arena else ''}: {len(seen)} distinct result(s) in "
          f"{a.calls} calls {seen}; sequence {[seen.index(x) for x in out]}")


if __name__ == "__main__":
    main()
