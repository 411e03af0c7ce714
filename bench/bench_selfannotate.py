"""Self-annotation on a synthetic preset against ground truth: tracking speed and ATE, rotational
drift, registration errors (modulo geometric symmetry), mask IoU, view coverage, stage times.

Run: .venv/bin/python bench/bench_selfannotate.py --data DIR [--preset full]
(generates DIR with the preset if it does not exist yet; prints a markdown table)
"""

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from nol_ros.datasets.bop import read_bop_scene, read_masks, read_models_info
from nol_ros.geometry import rotation_error_deg
from nol_ros.mesh import load_mesh
from nol_ros.metrics import ate_rmse, geometric_symmetries, rotation_error_sym_deg
from nol_ros.selfannotate import ObjectSpec, run_self_annotation


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/nol_bench_full")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--workspace", default="/tmp/nol_bench_ws")
    a = ap.parse_args()
    root = Path(a.data)
    if not (root / "world.json").exists():
        from nol_ros.datasets.synthetic.generate import generate

        t0 = time.perf_counter()
        s = generate(root, a.preset, seed=0, progress=False)
        print(f"generated {a.preset} in {time.perf_counter() - t0:.0f} s "
              f"({s['sequences']['train/000001']['s_per_frame']:.2f} s/frame)")
    scene = root / "train" / "000001"
    seq = read_bop_scene(scene, root / "models")
    info = read_models_info(root / "models" / "models_info.json")
    specs = [ObjectSpec(name=info[o.obj_id]["name"], mesh_path=o.mesh_path, obj_id=o.obj_id)
             for o in seq.objects]
    t0 = time.perf_counter()
    rep = run_self_annotation(seq, specs, a.workspace)
    total = time.perf_counter() - t0
    ws = Path(a.workspace)
    traj = json.loads((ws / "trajectory.json").read_text())
    est = [np.array(t["T_world_camera"]) for t in traj]
    gt = [f.T_world_camera for f in seq.frames]
    ate, A = ate_rmse(est, gt)
    drift = rotation_error_deg(np.linalg.inv(est[0]) @ est[-1], np.linalg.inv(gt[0]) @ gt[-1])
    print("| frames | tracking fps | ATE (cm) | rot. drift first->last (deg) | chain total (s) |")
    print("|---|---|---|---|---|")
    print(f"| {len(seq.frames)} | {rep['tracking']['fps']:.1f} | {ate * 100:.2f} | {drift:.2f} "
          f"| {total:.0f} |")
    print("\nstage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in rep["timing_s"].items()))
    gt_json = json.loads((scene / "scene_gt.json").read_text())
    gi = json.loads((scene / "scene_gt_info.json").read_text())
    print("\n| object | t err (mm) | R err mod sym (deg) | mask IoU (visib>=0.5) | views | "
          "coverage |")
    print("|---|---|---|---|---|---|")
    for o in seq.objects:
        name = info[o.obj_id]["name"]
        e = rep["objects"][name]
        if "error" in e:
            print(f"| {name} | failed: {e['error_code']} | | | | |")
            continue
        T = A @ np.array(e["registration"]["T_world_object"])
        m = load_mesh(o.mesh_path)
        rerr = rotation_error_sym_deg(T, o.T_world_object, geometric_symmetries(m.vertices,
                                                                                m.faces))
        ious = []
        for fr in seq.frames[::5]:
            anns = gt_json[str(fr.index)]
            for k, (ann, g) in enumerate(zip(anns, gi[str(fr.index)])):
                if ann["obj_id"] != o.obj_id or g["visib_fract"] < 0.5:
                    continue
                gm = read_masks(scene, fr.index, len(anns))[k]
                p = ws / "objects" / name / "masks" / f"{fr.index:06d}.png"
                em = cv2.imread(str(p), 0) > 127 if p.exists() else np.zeros_like(gm)
                ious.append((em & gm).sum() / max(1, (em | gm).sum()))
        sel = e["selection"]
        print(f"| {name} | {1000 * np.linalg.norm(T[:3, 3] - o.T_world_object[:3, 3]):.1f} | "
              f"{rerr:.2f} | {np.mean(ious):.3f} | {len(sel['frames'])} | "
              f"{sel['coverage']:.3f} |")
    model_free(ws, seq, info, A)


def model_free(ws, seq, info, A):
    """The "Recont" option: cut each object out of the reconstructed scene at its (ground
    truth) position and measure the surface error of the cut-out mesh."""
    import open3d as o3d

    from nol_ros.reconstruction.model_free import cut_out_object, surface_errors_mm
    from nol_ros.reconstruction.registration import find_support_plane

    traj = json.loads((ws / "trajectory.json").read_text())
    poses = np.array([t["T_world_camera"] for t in traj])
    sm = o3d.io.read_triangle_mesh(str(ws / "scene_mesh.ply"))
    pts = np.asarray(sm.vertices)
    plane = find_support_plane(pts, poses)
    Ai = np.linalg.inv(A)
    print("\n| object (model-free cut-out) | mean surface error (mm) | p95 (mm) | Hausdorff (mm) |")
    print("|---|---|---|---|")
    for o in seq.objects:
        T_est_world = Ai @ o.T_world_object  # ground truth placement in the estimated world
        cm = cut_out_object(pts, plane, T_est_world[:3, 3])
        m = load_mesh(o.mesh_path)
        Vc = cm.vertices @ cm.T_world_object[:3, :3].T + cm.T_world_object[:3, 3]
        Vg = m.vertices @ T_est_world[:3, :3].T + T_est_world[:3, 3]
        e = surface_errors_mm(Vc, cm.faces, Vg, m.faces)
        print(f"| {info[o.obj_id]['name']} | {e['mean_mm']:.1f} | {e['p95_mm']:.1f} | "
              f"{e['hausdorff_mm']:.1f} |")


if __name__ == "__main__":
    main()
