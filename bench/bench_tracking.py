"""Camera tracking on REAL RGB-D data: nol_ros's default tracker beside Open3D's trackers, in
one run, scored with evo and with nol_ros.metrics.

Run (repo root):
    .venv/bin/python bench/bench_tracking.py                      # whole fr1/desk
    .venv/bin/python bench/bench_tracking.py --dataset DIR --stretch 0:300 --stretch 300:595
    .venv/bin/python bench/bench_tracking.py --bag BAG [--gt groundtruth.txt]

Input: a folder in TUM RGB-D layout (``--dataset``; default ../shared/realdata/rgbd_sequences/
tum_fr1_desk) or a rosbag2 with Xtion topics (``--bag``; ground truth from ``--gt`` in TUM
format, matched by time). All frames of a stretch are decoded into memory first, so fps counts
tracking on decoded frames (what the reconstruction node gets), not JPEG/PNG decoding.

Trackers (``--trackers``, comma-separated):
  nol          nol_ros's default TrackerConfig through nol_ros.selfannotate.track_frames, the
               path of the self-annotation chain and of ``nol-ros track`` (poses after loop
               closure; the final TSDF integration is not timed)
  nol:JSON     the same path with TrackerConfig overrides, e.g. 'nol:{"method":"point_to_plane"}'
  o3d_legacy   Open3D legacy frame-to-frame RGB-D odometry (hybrid Jacobian), poses chained
  o3d_slam     Open3D tensor dense SLAM (t.pipelines.slam.Model, frame-to-model ray-cast),
               voxel 1 cm, as in Open3D's dense_slam.py example

Scores: ATE = RMSE of the camera centres after a rigid (SE(3), Umeyama) alignment; RPE = RMSE
of the relative translation (and rotation) between consecutive frames, per frame. evo computes
both from the TUM-format trajectories matched by time; nol_ros.metrics from the same poses
(they must agree: the JSON keeps both). For nol_ros also the trusted frames alone (what the
live node publishes as TF): their ATE and the worst step between consecutive ones.
``--every 1,2,3`` tracks a seeded random subset of the frames, as the live node does when it
cannot keep up. Writes JSON (--json) and a Markdown table (--md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "realdata" / "rgbd_sequences" / "tum_fr1_desk"


def _load_stretch(args, start: int, end: int):
    """(name, intrinsics, [(rgb, depth)], stamps_s (N,), gt (N, 4, 4) or None)."""
    if args.bag:
        import tempfile

        from nol_ros.datasets.bag_import import bag_to_bop_scene
        from nol_ros.datasets.bop import read_bop_scene

        tmp = Path(tempfile.mkdtemp(prefix="nol_bench_bag_"))
        bag_to_bop_scene(args.bag, tmp, rgb_topic=args.rgb_topic, depth_topic=args.depth_topic,
                         camera_info_topic=args.camera_info_topic)
        seq = read_bop_scene(tmp)
        frames = seq.frames[start:end if end > 0 else None]
        gt = None
        if args.gt:
            from nol_ros.datasets.tum import interpolate_trajectory, read_tum_trajectory

            st, P = read_tum_trajectory(args.gt)
            gt = [interpolate_trajectory(st, P, f.stamp_ns * 1e-9) for f in frames]
        name = Path(args.bag).name
    else:
        from nol_ros.datasets.tum import read_tum_sequence

        seq = read_tum_sequence(args.dataset, intrinsics=args.intrinsics, start=start,
                                max_frames=(end - start) if end > 0 else 0)
        frames = seq.frames
        gt = [f.T_world_camera for f in frames]
        name = seq.name
    data = [(f.load_rgb(), f.load_depth()) for f in frames]
    stamps = np.array([f.stamp_ns * 1e-9 for f in frames])
    if gt is not None and any(g is None for g in gt):
        keep = [i for i, g in enumerate(gt) if g is not None]
        print(f"  {len(frames) - len(keep)} frames have no ground truth: scored on {len(keep)}")
    return name, seq.intrinsics, data, stamps, gt


# -- trackers -----------------------------------------------------------------------------------
def run_nol(intr, data, overrides: dict, stamps=None):
    from dataclasses import replace

    from nol_ros.reconstruction.tracking import TrackerConfig
    from nol_ros.selfannotate import track_frames

    cfg = replace(TrackerConfig(), **overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    tr = track_frames(intr, len(data), lambda i: data[i], cfg, integrate=False,
                      stamps_ns=None if stamps is None else [int(t * 1e9) for t in stamps])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = tr.result
    return {"poses": np.array(res.poses), "ok": res.ok.tolist(), "wall_s": wall, "cpu_s": cpu,
            "keyframes": len(tr.keyframes), "loop_closures": len(tr.loop_closures),
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in cfg.__dict__.items()}}


def run_o3d_legacy(intr, data, depth_max: float = 3.0):
    import open3d as o3d

    pin = o3d.camera.PinholeCameraIntrinsic(intr.width, intr.height, intr.fx, intr.fy, intr.cx,
                                            intr.cy)
    opt = o3d.pipelines.odometry.OdometryOption()
    opt.depth_max = depth_max
    jac = o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm()

    def rgbd(rgb, d):
        return o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(rgb)),
            o3d.geometry.Image(np.ascontiguousarray(d, np.float32)), depth_scale=1.0,
            depth_trunc=depth_max, convert_rgb_to_intensity=True)

    t0, c0 = time.perf_counter(), time.process_time()
    T = np.eye(4)
    poses, ok = [T.copy()], [True]
    prev = rgbd(*data[0])
    for rgb, d in data[1:]:
        cur = rgbd(rgb, d)
        # compute_rgbd_odometry(source, target) -> T mapping source points into target
        success, T_prev_cur, _ = o3d.pipelines.odometry.compute_rgbd_odometry(
            cur, prev, pin, np.eye(4), jac, opt)
        if success:
            T = T @ T_prev_cur
        poses.append(T.copy())
        ok.append(bool(success))
        prev = cur
    return {"poses": np.array(poses), "ok": ok, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "config": {"jacobian": "hybrid",
                                                           "depth_max_m": depth_max}}


def run_o3d_slam(intr, data, voxel: float = 0.01, depth_max: float = 3.0):
    import open3d as o3d
    import open3d.core as o3c

    dev = o3c.Device("CPU:0")
    K = o3c.Tensor(intr.K, o3c.float64)
    T = o3c.Tensor(np.eye(4))
    model = o3d.t.pipelines.slam.Model(voxel, 16, 40000, T, dev)
    h, w = data[0][1].shape
    frame = o3d.t.pipelines.slam.Frame(h, w, K, dev)
    ray = o3d.t.pipelines.slam.Frame(h, w, K, dev)
    poses, ok = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for i, (rgb, d) in enumerate(data):
        frame.set_data_from_image("depth", o3d.t.geometry.Image(
            o3c.Tensor(np.ascontiguousarray(d, np.float32))))
        frame.set_data_from_image("color", o3d.t.geometry.Image(
            o3c.Tensor(np.ascontiguousarray(rgb, np.float32) / 255.0)))  # float with float depth
        good = True
        if i > 0:
            try:
                r = model.track_frame_to_model(frame, ray, 1.0, depth_max, 0.07)
                T = T @ r.transformation
            except RuntimeError:
                good = False
        poses.append(T.cpu().numpy())
        ok.append(good)
        model.update_frame_pose(i, T)
        model.integrate(frame, 1.0, depth_max, 8.0)
        model.synthesize_model_frame(ray, 1.0, 0.1, depth_max, 8.0, False)
    return {"poses": np.array(poses), "ok": ok, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "config": {"voxel_m": voxel, "depth_max_m": depth_max, "trunc_voxels": 8.0,
                       "odometry_distance_m": 0.07}}


# -- scoring ------------------------------------------------------------------------------------
def score_trusted(poses: np.ndarray, gt: list, ok: list) -> dict:
    """The frames the tracker trusted (what the live node publishes): their ATE, and the worst
    step between consecutive frames that are both trusted (cm; the translation of
    inv(inv(G_a) G_b) inv(P_a) P_b) -- a trusted false minimum shows as a large step."""
    from nol_ros.metrics import ate_rmse

    keep = [i for i, (o, g) in enumerate(zip(ok, gt)) if o and g is not None]
    if len(keep) < 3:
        return {"trusted": len(keep)}
    ate, _ = ate_rmse([poses[i] for i in keep], [gt[i] for i in keep])
    steps = [np.linalg.norm((np.linalg.inv(np.linalg.inv(gt[a]) @ gt[b])
                             @ (np.linalg.inv(poses[a]) @ poses[b]))[:3, 3])
             for a, b in zip(keep[:-1], keep[1:]) if b == a + 1]
    return {"trusted": len(keep), "ate_trusted_cm": ate * 100,
            "worst_trusted_step_cm": float(max(steps, default=0.0)) * 100}


def score(poses: np.ndarray, gt: list, stamps: np.ndarray) -> dict:
    """ATE and per-frame RPE from nol_ros.metrics and from evo (same poses, matched by time)."""
    from nol_ros.metrics import ate_rmse, rpe

    keep = [i for i, g in enumerate(gt) if g is not None]
    est = [poses[i] for i in keep]
    ref = [gt[i] for i in keep]
    ate, _ = ate_rmse(est, ref)
    # RPE between consecutive frames that both have ground truth
    pairs = [(a, b) for a, b in zip(keep[:-1], keep[1:]) if b == a + 1]
    et, er = [], []
    for a, b in pairs:
        E = np.linalg.inv(np.linalg.inv(gt[a]) @ gt[b]) @ (np.linalg.inv(poses[a]) @ poses[b])
        et.append(np.linalg.norm(E[:3, 3]))
        er.append(np.degrees(np.arccos(np.clip((np.trace(E[:3, :3]) - 1) / 2, -1, 1))))
    out = {"ate_cm": ate * 100, "rpe_cm": float(np.sqrt(np.mean(np.square(et)))) * 100,
           "rpe_deg": float(np.sqrt(np.mean(np.square(er)))), "n_scored": len(keep)}
    if len(keep) == len(gt):  # cross-check with the project's rpe on the whole trajectory
        out["rpe_cm_metrics"] = rpe(list(poses), list(gt), 1)[0] * 100
    try:
        out.update(_score_evo(np.array(est), np.array(ref), stamps[keep]))
    except ImportError:
        out["evo"] = "not installed"
    return out


def _score_evo(est: np.ndarray, ref: np.ndarray, stamps: np.ndarray) -> dict:
    from evo.core import metrics, sync
    from evo.core.trajectory import PoseTrajectory3D

    t_est = PoseTrajectory3D(poses_se3=list(est), timestamps=stamps)
    t_ref = PoseTrajectory3D(poses_se3=list(ref), timestamps=stamps)
    t_ref, t_est = sync.associate_trajectories(t_ref, t_est, max_diff=0.01)
    t_est.align(t_ref, correct_scale=False)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((t_ref, t_est))
    rp = metrics.RPE(metrics.PoseRelation.translation_part, delta=1,
                     delta_unit=metrics.Unit.frames, all_pairs=False)
    rp.process_data((t_ref, t_est))
    return {"evo_ate_cm": ape.get_statistic(metrics.StatisticsType.rmse) * 100,
            "evo_rpe_cm": rp.get_statistic(metrics.StatisticsType.rmse) * 100}


def _machine() -> dict:
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def _parse_tracker(spec: str) -> tuple[str, str, dict]:
    if spec.startswith("nol:"):
        ov = json.loads(spec[4:])
        for k, v in ov.items():
            if isinstance(v, list):
                ov[k] = tuple(v)
        return "nol", "nol_ros " + ", ".join(f"{k}={v}" for k, v in ov.items()), ov
    labels = {"nol": "nol_ros default", "o3d_legacy": "Open3D legacy RGB-D odometry (f2f)",
              "o3d_slam": "Open3D tensor SLAM (f2m, 1 cm)"}
    if spec not in labels:
        raise SystemExit(f"unknown tracker '{spec}'; use nol, nol:JSON, o3d_legacy, o3d_slam")
    return spec, labels[spec], {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--dataset", default=str(DEFAULT_DATA), help="TUM RGB-D layout folder")
    src.add_argument("--bag", help="rosbag2 folder with Xtion topics")
    ap.add_argument("--gt", help="ground truth for --bag, TUM trajectory format")
    ap.add_argument("--rgb-topic", default="/camera/rgb/image_raw")
    ap.add_argument("--depth-topic", default="/camera/depth_registered/image_raw")
    ap.add_argument("--camera-info-topic", default="/camera/rgb/camera_info")
    ap.add_argument("--intrinsics", default="auto", help="TUM: auto | ros_default | calibrated")
    ap.add_argument("--stretch", action="append", default=[],
                    help="START:END frame range (repeatable; default the whole sequence)")
    ap.add_argument("--trackers", default="nol,o3d_legacy,o3d_slam",
                    help="comma-separated; 'nol:{json}' for a TrackerConfig variant (use ; "
                         "between several variants)")
    ap.add_argument("--every", default="",
                    help="e.g. 1,2,3: track a random subset, consecutive tracked frames 1, 2 "
                         "or 3 frames apart (as the live node does when it cannot keep up)")
    ap.add_argument("--seed", type=int, default=0, help="the --every subset")
    ap.add_argument("--threads", type=int, default=0, help="limit threads (0 = as is)")
    ap.add_argument("--save-poses", default="", help="folder: one TUM trajectory per run")
    ap.add_argument("--json", default="build/bench_tracking.json")
    ap.add_argument("--md", default="build/bench_tracking.md")
    a = ap.parse_args(argv)
    if a.threads:
        from nol_ros.threads import set_threads

        set_threads(a.threads)
    specs = [s for s in a.trackers.replace(";", "\n").split("\n") if s]
    if not any(s.startswith("nol:") for s in specs):
        specs = [t for s in specs for t in s.split(",") if t]
    stretches = [tuple(int(x) for x in s.split(":")) for s in a.stretch] or [(0, 0)]
    results = {"machine": _machine(), "command": " ".join(["bench/bench_tracking.py"]
                                                          + (argv or sys.argv[1:])),
               "runs": []}
    rows = []
    for start, end in stretches:
        name, intr, data, stamps, gt = _load_stretch(a, start, end)
        label_s = f"{name} [{start}:{start + len(data)}]"
        if a.every:
            steps = [int(x) for x in a.every.split(",")]
            rng = np.random.default_rng(a.seed)
            idx = [0]
            while idx[-1] + min(steps) < len(data):
                idx.append(min(len(data) - 1, idx[-1] + int(rng.choice(steps))))
            data, stamps = [data[i] for i in idx], stamps[idx]
            gt = None if gt is None else [gt[i] for i in idx]
            label_s += f" every {a.every} (seed {a.seed}): {len(idx)} frames"
        print(f"{label_s}: {len(data)} frames, {intr}", flush=True)
        for spec in specs:
            kind, label, ov = _parse_tracker(spec)
            load0 = os.getloadavg()[0]
            if kind == "nol":
                r = run_nol(intr, data, ov, stamps)
            elif kind == "o3d_legacy":
                r = run_o3d_legacy(intr, data)
            else:
                r = run_o3d_slam(intr, data)
            entry = {"stretch": label_s, "tracker": label, "spec": spec, "frames": len(data),
                     "frames_lost": int(len(r["ok"]) - sum(r["ok"])),
                     "fps": len(data) / r["wall_s"], "frames_per_cpu_s": len(data) / r["cpu_s"],
                     "load_avg": round(load0, 2),
                     **{k: v for k, v in r.items() if k not in ("poses", "ok")}}
            if gt is not None:
                entry.update(score(r["poses"], gt, stamps))
                if kind == "nol":
                    entry.update(score_trusted(r["poses"], gt, r["ok"]))
            if a.save_poses:
                from nol_ros.datasets.tum import write_tum_trajectory

                k = len(results["runs"])
                write_tum_trajectory(Path(a.save_poses) / f"run{k:02d}.txt", stamps, r["poses"],
                                     comment=f"{label_s} {label}")
            results["runs"].append(entry)
            rows.append(entry)
            print("  " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                     for k, v in entry.items() if k != "config"}), flush=True)
    results["machine_end"] = _machine()
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(results, indent=1))
    md = [f"{results['machine']['date']}, {results['machine']['cpu']}, "
          f"{results['machine']['cpus']} CPUs, load {results['machine']['load_avg']} -> "
          f"{results['machine_end']['load_avg']}; `{results['command']}`", "",
          "| stretch | tracker | ATE cm (evo / own) | RPE cm/frame (evo / own) | RPE deg/frame "
          "| lost | trusted: ATE cm / worst step cm | fps | frames/CPU-s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for e in rows:
        ate = (f"{e.get('evo_ate_cm', float('nan')):.2f} / {e['ate_cm']:.2f}"
               if "ate_cm" in e else "-")
        rpe_ = (f"{e.get('evo_rpe_cm', float('nan')):.3f} / {e['rpe_cm']:.3f}"
                if "rpe_cm" in e else "-")
        trusted = (f"{e['ate_trusted_cm']:.2f} / {e['worst_trusted_step_cm']:.2f}"
                   if "ate_trusted_cm" in e else "-")
        md.append(f"| {e['stretch']} | {e['tracker']} | {ate} | {rpe_} | "
                  f"{e.get('rpe_deg', float('nan')):.3f} | {e['frames_lost']} | {trusted} | "
                  f"{e['fps']:.1f} | {e['frames_per_cpu_s']:.1f} |")
    Path(a.md).parent.mkdir(parents=True, exist_ok=True)
    Path(a.md).write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
