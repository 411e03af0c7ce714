"""Rasteriser throughput: a ~10k-face mesh at 256x256 and 640x480, raw and with shading.

Run: .venv/bin/python bench/bench_rasterizer.py [--frames N]   (prints a markdown table; < 60 s)

fps = 1 / median per-frame time (the median resists other processes' load spikes on a shared
machine). "raster" is Scene.render (ray cast + depth, ids, barycentrics, normals); "+shade" adds
Lambertian shading of vertex colours; "batch" is render_object_batch (one scene, many poses).
"""

import argparse
import datetime
import os
import platform
import time

import numpy as np
import open3d as o3d
import trimesh

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.geometry import invert_T, look_at
from nol_ros.mesh import Mesh
from nol_ros.rasterizer import Scene, render_object_batch, shade


def _median_time(fn, items) -> float:
    times = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(n_frames: int = 30) -> None:
    # 10,240 faces: two overlapping subdivided icospheres (5120 faces each)
    s1 = trimesh.creation.icosphere(subdivisions=4, radius=0.06)
    s2 = s1.copy()
    s2.apply_translation([0.08, 0, 0])
    tm = trimesh.util.concatenate([s1, s2])
    mesh = Mesh(tm.vertices, tm.faces, vertex_colors=np.full((len(tm.vertices), 3), 0.6))
    t0 = time.perf_counter()
    sc = Scene([mesh], [np.eye(4)])
    build_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(0)
    poses = [look_at(0.25 * np.array([np.cos(a), np.sin(a), 0.5]), np.array([0.04, 0, 0]))
             for a in rng.uniform(0, 2 * np.pi, n_frames)]
    rows = []
    for name, intr in [("256x256", Intrinsics(300, 300, 127.5, 127.5, 256, 256)),
                       ("640x480", SMOT_XTION)]:
        cover = sc.render(intr, poses[0]).mask.mean()  # warm-up
        raw = _median_time(lambda T, i=intr: sc.render(i, T), poses)
        sh = _median_time(lambda T, i=intr: shade(sc.render(i, T), [mesh]), poses)
        T_co = np.stack([invert_T(T) for T in poses])
        t0 = time.perf_counter()
        render_object_batch(mesh, intr, T_co)
        batch = (time.perf_counter() - t0) / n_frames
        rows.append((name, len(mesh.faces), cover, 1 / raw, 1 / sh, 1 / batch))
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.2f}, open3d {o3d.__version__}, "
          f"scene build {build_ms:.1f} ms, {n_frames} poses")
    print()
    print("| resolution | faces | object coverage | raster fps | raster+shade fps "
          "| batch fps |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.0%} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    main(ap.parse_args().frames)
