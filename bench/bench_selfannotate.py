"""Self-annotation on a synthetic preset against ground truth: tracking speed and ATE, rotational
drift, registration errors (modulo geometric symmetry), mask IoU, view coverage, stage times; and
the model-free ("Recont") option: the cut-out meshes' surface error against the true models and
what using them instead of the CAD models costs downstream (masks, views, coverage, time).

Run: .venv/bin/python bench/bench_selfannotate.py --data DIR [--preset full] [--no-model-free]
(generates DIR with the preset if it does not exist yet; prints markdown tables). Wall times
depend on what else runs on the machine: the load average and the process CPU times are printed
beside them.
"""

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from nol_ros.datasets.bop import read_bop_scene, read_masks, read_models_info
from nol_ros.geometry import rotation_error_deg
from nol_ros.mesh import load_mesh
from nol_ros.metrics import ate_rmse, geometric_symmetries, rotation_error_sym_deg
from nol_ros.selfannotate import ObjectSpec, run_self_annotation


def _header() -> str:
    return (f"date {datetime.datetime.now().isoformat(timespec='seconds')}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load avg {os.getloadavg()[0]:.2f}")


def mask_ious(ws: Path, scene: Path, seq, obj_id: int, name: str, step: int = 5) -> list[float]:
    """IoU of the workspace's visible masks with the ground-truth visible masks, on every
    ``step``-th frame where the object is >= 50 % visible."""
    gt_json = json.loads((scene / "scene_gt.json").read_text())
    gi = json.loads((scene / "scene_gt_info.json").read_text())
    ious = []
    for fr in seq.frames[::step]:
        anns = gt_json[str(fr.index)]
        for k, (ann, g) in enumerate(zip(anns, gi[str(fr.index)])):
            if ann["obj_id"] != obj_id or g["visib_fract"] < 0.5:
                continue
            gm = read_masks(scene, fr.index, len(anns))[k]
            p = ws / "objects" / name / "masks" / f"{fr.index:06d}.png"
            em = cv2.imread(str(p), 0) > 127 if p.exists() else np.zeros_like(gm)
            ious.append((em & gm).sum() / max(1, (em | gm).sum()))
    return ious


def _timing_line(rep: dict) -> str:
    wall = ", ".join(f"{k} {v:.1f}" for k, v in rep["timing_s"].items())
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in rep.get("cpu_s", {}).items())
    return f"stage wall times (s): {wall}\nstage process CPU times (s): {cpu}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="build/bench/nol_bench_full")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--workspace", default="build/bench/nol_bench_ws")
    ap.add_argument("--no-model-free", action="store_true",
                    help="skip the second chain run with cut-out meshes")
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
    print(_header() + " (start)")
    t0, c0 = time.perf_counter(), time.process_time()
    rep = run_self_annotation(seq, specs, a.workspace)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(_header() + " (end of the chain)")
    ws = Path(a.workspace)
    traj = json.loads((ws / "trajectory.json").read_text())
    est = [np.array(t["T_world_camera"]) for t in traj]
    gt = [f.T_world_camera for f in seq.frames]
    ate, A = ate_rmse(est, gt)
    drift = rotation_error_deg(np.linalg.inv(est[0]) @ est[-1], np.linalg.inv(gt[0]) @ gt[-1])
    print("\n| frames | tracking fps | ATE (cm) | rot. drift first->last (deg) | chain total (s) "
          "| chain CPU (s) |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(seq.frames)} | {rep['tracking']['fps']:.1f} | {ate * 100:.2f} | {drift:.2f} "
          f"| {total:.0f} | {cpu:.0f} |")
    print(f"\ntracking: {rep['tracking']}")
    print(_timing_line(rep))
    print("\n| object | t err (mm) | R err mod sym (deg) | mask IoU (visib>=0.5) | views | "
          "coverage | observed fraction | flags |")
    print("|---|---|---|---|---|---|---|---|")
    for o in seq.objects:
        name = info[o.obj_id]["name"]
        e = rep["objects"][name]
        if "error" in e:
            print(f"| {name} | failed: {e['error_code']} | | | | | | |")
            continue
        T = A @ np.array(e["registration"]["T_world_object"])
        m = load_mesh(o.mesh_path)
        rerr = rotation_error_sym_deg(T, o.T_world_object, geometric_symmetries(m.vertices,
                                                                                m.faces))
        ious = mask_ious(ws, scene, seq, o.obj_id, name)
        sel = e["selection"]
        print(f"| {name} | {1000 * np.linalg.norm(T[:3, 3] - o.T_world_object[:3, 3]):.1f} | "
              f"{rerr:.2f} | {np.mean(ious):.3f} | {len(sel['frames'])} | "
              f"{sel['coverage']:.3f} | {sel.get('observed_fraction', float('nan')):.2f} | "
              f"{','.join(e.get('flags', [])) or '-'} |")
    decoded_frames_tracking(seq)
    cut_out_at_truth(ws, seq, info, A)
    if not a.no_model_free:
        model_free_chain(seq, scene, info, A, rep, ws, Path(str(ws) + "_model_free"))


def decoded_frames_tracking(seq) -> None:
    """Tracking + TSDF integration on frames already decoded in memory (what the
    reconstruction node gets from its image messages): the chain's "tracking fps" above also
    pays for reading and decoding two PNGs per frame. Three odometry schedules, to show what
    fewer iterations would cost in accuracy. The chain's own path (``track_frames``, stamps
    included: the motion prediction scales with them), only fed from memory; the tracking
    figures include the loop closure."""
    from nol_ros.reconstruction.tracking import TrackerConfig
    from nol_ros.selfannotate import track_frames

    frames = [(f.load_rgb(), f.load_depth()) for f in seq.frames]
    stamps = [f.stamp_ns for f in seq.frames]
    gt = [f.T_world_camera for f in seq.frames]
    print("\ntracking on decoded frames (as the reconstruction node gets them):\n")
    print("| odometry iterations | tracking fps | per CPU-s | + TSDF integration, fps | "
          "ATE (cm) |")
    print("|---|---|---|---|---|")
    for its in ((12, 6, 4), (8, 4, 2), (6, 3, 2)):
        t0, c0 = time.perf_counter(), time.process_time()
        tr = track_frames(seq.intrinsics, len(frames), lambda i: frames[i],
                          TrackerConfig(odometry_iterations=its), integrate=False,
                          stamps_ns=stamps)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        tr.integrate_frames(lambda i: frames[i])
        di = time.perf_counter() - t1
        ate, _ = ate_rmse(tr.result.poses, gt)
        print(f"| {its} | {len(frames) / dt:.1f} | {len(frames) / dc:.1f} | "
              f"{len(frames) / (dt + di):.1f} | {ate * 100:.2f} |", flush=True)


def cut_out_at_truth(ws, seq, info, A):
    """Cut each object out of the reconstructed scene mesh at its (ground-truth) position and
    measure the surface error of the cut-out mesh (a quick look at the cut-out alone)."""
    import open3d as o3d

    from nol_ros.reconstruction.model_free import cut_out_object, surface_errors_mm
    from nol_ros.reconstruction.registration import find_support_plane

    traj = json.loads((ws / "trajectory.json").read_text())
    poses = np.array([t["T_world_camera"] for t in traj])
    sm = o3d.io.read_triangle_mesh(str(ws / "scene_mesh.ply"))
    pts = np.asarray(sm.vertices)
    plane = find_support_plane(pts, poses)
    Ai = np.linalg.inv(A)
    print("\ncut-out from the scene mesh at the true position:\n")
    print("| object | mean surface error (mm) | p95 (mm) | Hausdorff (mm) | closed |")
    print("|---|---|---|---|---|")
    for o in seq.objects:
        T_est_world = Ai @ o.T_world_object  # ground truth placement in the estimated world
        cm = cut_out_object(pts, plane, T_est_world[:3, 3])
        m = load_mesh(o.mesh_path)
        Vc = cm.vertices @ cm.T_world_object[:3, :3].T + cm.T_world_object[:3, 3]
        Vg = m.vertices @ T_est_world[:3, :3].T + T_est_world[:3, 3]
        e = surface_errors_mm(Vc, cm.faces, Vg, m.faces)
        print(f"| {info[o.obj_id]['name']} | {e['mean_mm']:.1f} | {e['p95_mm']:.1f} | "
              f"{e['hausdorff_mm']:.1f} | {cm.closed} |")


def model_free_chain(seq, scene, info, A, rep_cad, ws_cad: Path, ws_mf: Path):
    """The whole chain again with model-free objects (a prior point at each object's true
    centre, in the self-annotated world); compared with the CAD run: the cut-out mesh's error
    against the true model placed by the ground truth, masks against the ground truth, views,
    coverage and registration time. (What it costs the NOL images is measured by the NOL
    benchmarks on the two workspaces.)"""
    from nol_ros.reconstruction.model_free import surface_errors_mm

    Ai = np.linalg.inv(A)
    specs = []
    for o in seq.objects:
        m = load_mesh(o.mesh_path)
        T = Ai @ o.T_world_object
        c = T[:3, :3] @ ((m.vertices.min(0) + m.vertices.max(0)) / 2) + T[:3, 3]
        specs.append(ObjectSpec(name=info[o.obj_id]["name"], obj_id=o.obj_id, model_free=True,
                                prior_point=tuple(float(x) for x in c)))
    t0, c0 = time.perf_counter(), time.process_time()
    rep = run_self_annotation(seq, specs, ws_mf)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\nmodel-free chain ({_header()}): total {total:.0f} s wall, {cpu:.0f} s CPU")
    print(_timing_line(rep))
    print("\n| object | model | surface mean / p95 / Hausdorff (mm) | closed | mask IoU "
          "(visib>=0.5) | views | coverage | observed fraction |")
    print("|---|---|---|---|---|---|---|---|")
    for o in seq.objects:
        name = info[o.obj_id]["name"]
        m = load_mesh(o.mesh_path)
        Vg = m.vertices @ (Ai @ o.T_world_object)[:3, :3].T + (Ai @ o.T_world_object)[:3, 3]
        for label, r, ws in (("CAD", rep_cad, ws_cad), ("cut-out", rep, ws_mf)):
            e = r["objects"][name]
            if "error" in e:
                print(f"| {name} | {label} | failed: {e['error_code']} {e['error'][:80]} "
                      "| | | | | |")
                continue
            sel = e["selection"]
            if ws is ws_cad:
                surf, closed = "-", "-"
            else:
                mesh = load_mesh(ws / "objects" / name / "mesh.ply", units="m")
                T = np.array(e["registration"]["T_world_object"])
                Vc = mesh.vertices @ T[:3, :3].T + T[:3, 3]
                se = surface_errors_mm(Vc, mesh.faces, Vg, m.faces)
                surf = f"{se['mean_mm']:.1f} / {se['p95_mm']:.1f} / {se['hausdorff_mm']:.1f}"
                closed = e["registration"].get("closed")
            ious = mask_ious(ws, scene, seq, o.obj_id, name)
            print(f"| {name} | {label} | {surf} | {closed} | {np.mean(ious):.3f} | "
                  f"{len(sel['frames'])} | {sel['coverage']:.3f} | "
                  f"{sel.get('observed_fraction', float('nan')):.2f} |")
    print(f"\nregistration stage: CAD {rep_cad['timing_s']['registration']:.1f} s, cut-out "
          f"{rep['timing_s']['registration']:.1f} s (wall)")


if __name__ == "__main__":
    main()
