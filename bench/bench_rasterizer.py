"""Rasteriser throughput: a ~10k-face mesh at 256x256 and 640x480, raw and with shading.

Run: .venv/bin/python bench/bench_rasterizer.py   (prints a markdown table)
"""

import time

import numpy as np
import trimesh

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.geometry import look_at
from nol_ros.mesh import Mesh
from nol_ros.rasterizer import Scene, shade


def main(n_frames: int = 30) -> None:
    # 10,240 faces: two overlapping subdivided icospheres (5120 faces each)
    s1 = trimesh.creation.icosphere(subdivisions=4, radius=0.06)   # 5120 faces
    s2 = s1.copy()
    s2.apply_translation([0.08, 0, 0])
    tm = trimesh.util.concatenate([s1, s2])
    mesh = Mesh(tm.vertices, tm.faces, vertex_colors=np.full((len(tm.vertices), 3), 0.6))
    sc = Scene([mesh], [np.eye(4)])
    rng = np.random.default_rng(0)
    poses = [look_at(0.35 * np.array([np.cos(a), np.sin(a), 0.5]), np.zeros(3))
             for a in rng.uniform(0, 2 * np.pi, n_frames)]
    rows = []
    for name, intr in [("256x256", Intrinsics(300, 300, 127.5, 127.5, 256, 256)),
                       ("640x480", SMOT_XTION)]:
        sc.render(intr, poses[0])  # warm-up
        t0 = time.perf_counter()
        for T in poses:
            sc.render(intr, T)
        raw = (time.perf_counter() - t0) / n_frames
        t0 = time.perf_counter()
        for T in poses:
            shade(sc.render(intr, T), [mesh])
        sh = (time.perf_counter() - t0) / n_frames
        rows.append((name, len(mesh.faces), 1 / raw, 1 / sh))
    print("| resolution | faces | raster fps | raster+shade fps |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} |")


if __name__ == "__main__":
    main()
