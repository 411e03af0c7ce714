"""`make demo`: the main job on the built-in synthetic scene, through the real ROS graph.

1. generate the synthetic world (demo preset: a 120-frame circle around a table with 4 objects
   and a 40-frame test sequence at other elevations) and write both sequences as rosbag2
   folders, unless they are already there;
2. start the ROS graph, each node its own process: reconstruction, nol, trainer, recognizer;
3. replay the training bag over DDS (Xtion topics, original stamps) into the reconstruction
   node and ask it what it received (GetBufferStatus);
4. LearnObject for every object through the nol node's service (source: the bag):
   self-annotation, view selection and the rendered training set (with the renderer the
   model card records as measured best: fit, nol or IBR; nol_ros.nol.renderer.default_method);
5. TrainDetector + TrainPoseEstimator through the trainer node (recognition preset);
6. the recognizer node picks the models up; the test bag is replayed into it, and the same
   models are scored offline on the test sequence (mAP@0.5, ADD(-S) with and without ICP);
7. renders at test-frame poses against the ground-truth texture (PSNR), a pose-noise curve,
   the report (REPORT/index.html + PNGs) and a one-screen summary.

``--preset small --objects 1`` is the quick variant the tests run (recognition preset tiny).
``--data DIR`` runs on another world, e.g. one of scanned objects written by
``python -m nol_ros.datasets.synthetic --preset demo --objects SCANS --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy

from nol_ros.camera import crop_image
from nol_ros.datasets.bag import export_bag
from nol_ros.datasets.bop import read_bop_scene
from nol_ros.datasets.synthetic.generate import generate
from nol_ros.learn import SOURCE_BAG
from nol_ros.mesh import load_mesh
from nol_ros.metrics import ate_rmse, geometric_symmetries, rotation_error_sym_deg
from nol_ros.progress import TqdmProgress
from nol_ros.recognition.evaluate import IdMapped, score_models
from nol_ros.recognition.recognizer import Recognizer
from nol_ros.recognition.renderers import TexturedMeshRenderer
from nol_ros.report import draw_recognitions, write_report
from nol_ros.ros.client import NolClient, RequestRefused
from nol_ros.workspace import LearntObject, Workspace

XTION = ("/camera/rgb/image_raw", "/camera/depth_registered/image_raw",
         "/camera/rgb/camera_info")
NS = "/demo"


def _exe(name: str) -> str:
    return shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _bar(label: str) -> TqdmProgress:
    """A progress bar for a job on stdout (0..100 %); on a log (no terminal) it prints rarely."""
    return TqdmProgress(f"  {label:<22}", file=sys.stdout)


def _follow(client, jobs: dict, timeout_s: float = 3600.0) -> dict:
    """Wait for every job of {label: nol_ros.ros.client.Job}, one progress bar each. Returns
    {label: JobResult}."""
    out = {}
    for label, job in jobs.items():
        with _bar(label) as progress:
            try:
                out[label] = client.wait(job, timeout_s, progress)
            except TimeoutError:    # reported as not succeeded, in the state it is stuck in
                out[label] = client.result(job)
            if out[label].succeeded:
                progress("done", 1.0, "")
    return out


# -- measurements against the synthetic ground truth ------------------------------------------

def evaluate_workspace(ws: Path, scene: Path, models: Path, obj_id: int) -> dict:
    """Errors of a learnt object against the synthetic ground truth (+ what the report draws)."""
    seq = read_bop_scene(scene, models)
    traj = json.loads(LearntObject(ws).trajectory.read_text())
    est = [np.array(t["T_world_camera"]) for t in traj]
    n = min(len(est), len(seq.frames))
    gt_traj = [f.T_world_camera for f in seq.frames[:n]]
    ate, A = ate_rmse(est[:n], gt_traj)
    out = {"ate_cm": ate * 100, "frames": len(traj), "workspace": str(ws),
           "trajectory": {"est": [A @ T for T in est[:n]], "gt": gt_traj}}
    od = LearntObject(ws).files
    out["object_dir"] = str(od.dir)
    obj = json.loads(od.object_json.read_text()) if od.object_json.exists() \
        else None
    gt = next(o for o in seq.objects if o.obj_id == obj_id)
    if obj is not None:
        T = A @ np.array(obj["T_world_object"])
        m = load_mesh(gt.mesh_path)
        out["t_err_mm"] = 1000 * float(np.linalg.norm(T[:3, 3] - gt.T_world_object[:3, 3]))
        out["r_err_deg"] = rotation_error_sym_deg(T, gt.T_world_object,
                                                  geometric_symmetries(m.vertices, m.faces))
    views = od.views_json
    if views.exists():
        v = json.loads(views.read_text())
        out["views"], out["coverage"] = len(v["views"]), v["coverage"]
    return out


def _object_crop(intr, T, diameter_m: float, size: int):
    """A size x size crop that holds the object (its diameter + 10 %): (its intrinsics, the
    square box (x0, y0, side) in the full image, for nol_ros.camera.crop_image)."""
    c = T[:3, 3]
    side = 1.1 * diameter_m * intr.fx / max(c[2], 1e-3)
    u = intr.fx * c[0] / c[2] + intr.cx
    v = intr.fy * c[1] / c[2] + intr.cy
    box = (u - side / 2, v - side / 2, side)
    return intr.crop_resize(box[0], box[1], side, side, size, size), box


def render_quality(object_dir: str, data: Path, obj_id: int, method: str, n_frames: int = 4,
                   size: int = 128, noise_curve: bool = False) -> dict:
    """Masked PSNR / SSIM of the learnt object's renderer (``method``) and of the IBR baseline
    against the ground-truth-textured model at test-frame poses; a row of images per pose
    (real crop | renderer | IBR | ground truth); with noise_curve, PSNR when the source poses
    are moved by the NOL evaluation's noise levels (no refinement)."""
    # lazy: nol_ros.nol.evaluate, nol_ros.nol.renderer import torch (~2 s)
    from nol_ros.nol.evaluate import NOISE_LEVELS, noisy_sources, score
    from nol_ros.nol.renderer import NolRenderer, load_object_renderer

    seq = read_bop_scene(data / "test" / "000001", data / "models")
    info = json.loads((data / "test" / "000001" / "scene_gt_info.json").read_text())
    gt_ids = json.loads((data / "test" / "000001" / "scene_gt.json").read_text())
    diam = json.loads((data / "models" / "models_info.json").read_text())[str(obj_id)]
    diam = float(diam["diameter"]) / 1000.0
    frames = []
    for f in seq.frames:
        ann = gt_ids[str(f.index)]
        k = next((i for i, a in enumerate(ann) if a["obj_id"] == obj_id), None)
        if k is not None and info[str(f.index)][k]["visib_fract"] > 0.7:
            frames.append(f)
    gt_r = TexturedMeshRenderer(load_mesh(data / "models_textured" / f"obj_{obj_id:06d}.obj"))
    rends = {"learnt": load_object_renderer(object_dir, method)}
    if method != "ibr_angle":
        rends["ibr"] = load_object_renderer(object_dir, "ibr")
    # The test scenes rearrange the objects: a test view can show a side the training
    # sequence never saw (nothing to render it from). Score the poses whose silhouette the
    # learnt sources cover (>= 80 %; else the best covered), and say how many were left out.
    cand = []
    for f in frames:
        T = seq.T_camera_object(f.index, obj_id)
        ic, box = _object_crop(seq.intrinsics, T, diam, size)
        cov = float(rends["learnt"].render_detailed(T[None], ic).coverage[0])
        cand.append((cov, f, T, ic, box))
    good = [c for c in cand if c[0] >= 0.8] or sorted(cand, key=lambda c: -c[0])[:1]
    chosen = good[::max(1, len(good) // n_frames)][:n_frames]
    scores = {k: [] for k in rends}
    rows, cams = [], []
    for cov, f, T, ic, box in chosen:
        gt, gm = gt_r.render(T[None], ic)
        row = [(f"test frame {f.index} (cov {cov:.2f})", crop_image(f.load_rgb(), box, size,
                                                                   "area"))]
        for k, r in rends.items():
            img, _ = r.render(T[None], ic)
            scores[k].append(score(img[0] / 255.0, gt[0] / 255.0, gm[0]))
            row.append((f"{method if k == 'learnt' else 'ibr_angle'} "
                        f"{scores[k][-1][0]:.1f} dB", img[0]))
        row.append(("ground truth", gt[0]))
        rows.append(row)
        cams.append((T, ic, gt[0], gm[0]))
    out = {"rows": rows, "method": method, "poses_scored": len(chosen),
           "poses_covered": sum(c[0] >= 0.8 for c in cand), "poses_visible": len(cand)}
    for k, s in scores.items():
        a = np.array(s) if s else np.full((1, 2), np.nan)
        out[k] = {"psnr": float(a[:, 0].mean()), "ssim": float(a[:, 1].mean())}
    if noise_curve:
        labels = [f"{t * 1000:.0f} mm / {r:.0f} deg" for t, r in NOISE_LEVELS]
        series = {}
        for k, r in rends.items():
            vals = []
            for li, (tm, rd) in enumerate(NOISE_LEVELS):
                src = noisy_sources(r.full, tm, rd, seed=li)
                rn = NolRenderer(r.mesh, src, r.net, dataclasses.replace(r.cfg), r.device)
                ps = [score(rn.render(T[None], ic)[0][0] / 255.0, g / 255.0, m)[0]
                      for T, ic, g, m in cams]
                vals.append(float(np.mean(ps)) if ps else float("nan"))
            series[method if k == "learnt" else "ibr_angle"] = vals
        out["noise_curve"] = {"labels": labels, "series": series,
                              "title": "PSNR vs source pose error (no refinement), "
                                       "vs the ground-truth texture"}
    return out


def recognition_offline(models_dir: Path, data: Path, ws_root: Path | None = None,
                        overlays: int = 4) -> dict:
    """The trained models on the test sequence, scored like the recognition benchmark
    (workspace ids mapped to the world's by name; ADD in each object's learnt frame, measured
    from ws_root/NAME/objects/NAME/views.json on the training sequence, see
    nol_ros.recognition.evaluate) + overlays of a few frames."""
    scene = data / "test" / "000001"
    rec = Recognizer.load(models_dir)
    with _bar("recognize (offline)") as progress:
        sc = score_models(rec, [scene], data / "models", ws_root,
                          data / "train" / "000001" if ws_root is not None else None,
                          progress=progress)
    res, models, mapping = sc.result, sc.models, sc.mapping
    summ = sc.summary()
    out = {**summ, "frames": res.n_images, "seconds_per_image": res.seconds_per_image,
           "cpu_seconds_per_image": res.cpu_seconds_per_image,
           "learnt_frame_deg": {models[o].name: f["sym_deg"]
                                for o, f in sc.learnt_frames.items()}}
    seq = read_bop_scene(scene, data / "models")
    meshes = {o: load_mesh(data / "models" / f"obj_{o:06d}.ply") for o in models}
    ginfo = json.loads((scene / "scene_gt_info.json").read_text())
    gids = json.loads((scene / "scene_gt.json").read_text())
    ov = []
    mapped = IdMapped(rec, mapping)
    for f in seq.frames[::max(1, len(seq.frames) // overlays)][:overlays]:
        rgb = f.load_rgb()
        recs = mapped.recognize(rgb, seq.intrinsics, f.load_depth())
        gt = {a["obj_id"]: tuple(i["bbox_obj"]) for a, i in
              zip(gids[str(f.index)], ginfo[str(f.index)]) if a["obj_id"] in models}
        ov.append((f"test frame {f.index}: {len(recs)} detections",
                   draw_recognitions(rgb, recs, seq.intrinsics, meshes, gt)))
    out["overlays"] = ov
    return out


# -- the run ------------------------------------------------------------------------------------

def _world(data: Path, preset: str) -> dict:
    if not (data / "world.json").exists():
        _say(f"generating the synthetic world ({preset}) in {data} ...")
        if data.exists():
            shutil.rmtree(data)
        generate(data, preset, seed=0, progress=True)
    test_bag = data / "bags" / "test_000001"
    if not test_bag.exists():
        _say("writing the test sequence as a rosbag2 (mcap)")
        tmp = data / "bags" / "test_000001.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        export_bag(read_bop_scene(data / "test" / "000001"), tmp, tf_mode="odom", seed=1)
        tmp.rename(test_bag)
    return json.loads((data / "world.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nol_ros.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=".nol_demo", help="working folder (data, workspaces)")
    ap.add_argument("--preset", default="demo", help="synthetic preset (small for a quick run)")
    ap.add_argument("--data", default="", help="the world to run on (default: DIR/data_PRESET, "
                    "generated when missing), e.g. one written by python -m "
                    "nol_ros.datasets.synthetic --objects SCANS")
    ap.add_argument("--recognition", default="",
                    help="recognition preset (default: demo; tiny for the small world)")
    ap.add_argument("--render-method", default="auto", help="auto | nol | ibr (LearnObject)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="replay the bags at this speed factor (1 = as recorded); default 0: "
                         "paced by the receiving node, every frame processed, on any machine")
    ap.add_argument("--objects", type=int, default=0, help="learn only the first N objects")
    ap.add_argument("--report", default="report", help="report folder (index.html + PNGs)")
    a = ap.parse_args(argv)
    rec_preset = a.recognition or ("tiny" if a.preset == "small" else "demo")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
    base = Path(a.dir).resolve()
    data = Path(a.data).resolve() if a.data else base / f"data_{a.preset}"
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. data ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    world = _world(data, a.preset)
    objects = {int(k): v for k, v in world["objects"].items()}
    if a.objects:
        objects = dict(list(objects.items())[:a.objects])
    bag = data / "bags" / "train_000001"
    times["generate"] = time.perf_counter() - t0

    # 2. graph --------------------------------------------------------------------------------
    ws_root = base / f"workspace_{data.name.removeprefix('data_')}"
    if ws_root.exists():
        shutil.rmtree(ws_root)
    models_dir = Workspace(ws_root).models
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ns = ["--ros-args", "-r", f"__ns:={NS}"]
    nodes = {
        "reconstruction": [_exe("reconstruction_node"), *ns],
        "nol": [_exe("nol_node"), *ns, "-p", f"learn.workspace_root:={ws_root}",
                "-p", f"data_root:={os.path.commonpath([base, data])}",
                "-p", f"learn.render.preset:={rec_preset}",
                "-p", f"learn.render.method:={a.render_method}"],
        "trainer": [_exe("trainer_node"), *ns, "-p", f"train.workspace_root:={ws_root}",
                    "-p", f"train.preset:={rec_preset}"],
        "recognizer": [_exe("recognizer_node"), *ns, "-p", f"models_dir:={models_dir}",
                       "-p", "models_poll_s:=2.0"],
    }
    _say(f"starting the ROS graph in {NS}: " + ", ".join(f"{k}_node" for k in nodes))
    procs = {k: subprocess.Popen(cmd, stdout=open(logs / f"{k}.log", "w"),
                                 stderr=subprocess.STDOUT) for k, cmd in nodes.items()}
    rclpy.init()
    nol = NolClient(namespace=NS)
    results: dict = {"title": f"nol_ros demo ({a.preset} world, {rec_preset} recognition)",
                     "preset": f"world {a.preset}, recognition {rec_preset}", "objects": {}}
    learnt: dict = {}
    train_done: dict = {}
    live: dict = {}
    try:
        nol.wait_for_nodes(timeout_s=90)

        # 3. replay ---------------------------------------------------------------------------
        t0 = time.perf_counter()
        remap = tuple((t, NS + t) for t in XTION)
        _say(f"replaying {bag.name} into the reconstruction node, " +
             (f"at {a.rate}x" if a.rate > 0 else "paced by its tracking"))
        stats = nol.replay(str(bag), "reconstruction", a.rate, remap)
        st = nol.buffer_status()
        times["replay"] = time.perf_counter() - t0
        _say(f"reconstruction node received {st.frames_received} RGB-D frames "
             f"({st.width}x{st.height}, {st.depth_encoding}), dropped {st.frames_dropped}, "
             f"{st.messages_unpaired} images unpaired; {stats.messages} messages replayed")
        results["replay"] = {"received": st.frames_received, "dropped": st.frames_dropped}
        # the test bag goes to the recognizer next; the reconstruction node is done
        procs["reconstruction"].terminate()

        # 4. learn ----------------------------------------------------------------------------
        t0 = time.perf_counter()
        job_of = {}
        for oid, name in objects.items():
            try:
                job_of[name] = (oid, nol.learn_object(
                    name, data / "models" / f"obj_{oid:06d}.ply", SOURCE_BAG, str(bag)))
            except RequestRefused as e:
                _say(str(e))
        _say(f"LearnObject x{len(job_of)} queued on the nol node (one job at a time)")
        learnt = _follow(nol, {n: j for n, (_, j) in job_of.items()})
        times["learn + render"] = time.perf_counter() - t0
        ok_names = [n for n, r in learnt.items() if r.succeeded]

        # 5. train ----------------------------------------------------------------------------
        if ok_names:
            t0 = time.perf_counter()
            jobs = {}
            for lab, call in (("TrainDetector", nol.train_detector),
                              ("TrainPoseEstimator", nol.train_pose_estimator)):
                try:
                    jobs[lab] = call(ok_names, rec_preset)
                except RequestRefused as e:
                    _say(str(e))
            _say(f"training the detector and the pose estimator ({rec_preset} preset) on the "
                 f"renders of {', '.join(ok_names)}")
            train_done = _follow(nol, jobs)
            times["train"] = time.perf_counter() - t0

        # 6. recognise ------------------------------------------------------------------------
        if (models_dir / "recognition.json").exists():
            t0 = time.perf_counter()
            results["recognition"] = recognition_offline(models_dir, data, ws_root)
            times["recognize (offline)"] = time.perf_counter() - t0
            nol.wait_until(lambda: nol.recognizer_status and
                           nol.recognizer_status[-1].models_loaded, 60,
                           "the recognizer node to load the models")
            t0 = time.perf_counter()
            test_seq = read_bop_scene(data / "test" / "000001")
            s0 = nol.recognizer_status[-1]
            _say("replaying the test bag into the recognizer node, paced by its status")
            nol.replay(str(data / "bags" / "test_000001"), "recognizer", 0.0, remap)
            n_test = len(test_seq.frames)
            nol.wait_until(lambda: nol.frames_recognised() - (
                s0.frames_processed + s0.frames_rejected + s0.frames_dropped_busy) >= n_test,
                300, "the recognizer to finish")
            s = nol.recognizer_status[-1]
            live = {k: getattr(s, f) - getattr(s0, f) for k, f in (
                ("received", "frames_received"), ("processed", "frames_processed"),
                ("dropped_busy", "frames_dropped_busy"), ("rejected", "frames_rejected"),
                ("detections", "detections_published"), ("poses", "poses_published"))}
            live.update(frames=n_test, mean_recognize_s=s.mean_recognize_s)
            results["recognition"]["live"] = live
            times["recognize (graph)"] = time.perf_counter() - t0
    finally:
        nol.destroy()
        rclpy.shutdown()
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    # 7. renders, report, summary ------------------------------------------------------------
    t0 = time.perf_counter()
    ok = bool(learnt)
    renderer = None
    first = True
    for name, res in learnt.items():
        oid, job = job_of[name]
        jid = job.job_id
        if not res.succeeded:
            ok = False
            results["objects"][name] = {"obj_id": oid, "error": f"[{res.error_code}] "
                                                                f"{res.message}"}
            continue
        ws = Path(res.result_path)
        ev = evaluate_workspace(ws, data / "train" / "000001", data / "models", oid)
        rs = LearntObject(ws).render_set_json
        method = json.loads(rs.read_text()).get("source", "ibr_angle") if rs.exists() \
            else "ibr_angle"
        renderer = renderer or method
        rq = render_quality(ev["object_dir"], data, oid, method, noise_curve=first)
        if first:
            results["trajectory"] = ev["trajectory"]
            results["scene_mesh"] = str(LearntObject(ws).scene_mesh)
            results["T_world_cameras"] = ev["trajectory"]["est"][::4]
            results["noise_curve"] = rq["noise_curve"]
            first = False
        ev.pop("trajectory")
        ev.update(obj_id=oid, job=jid, psnr=rq["learnt"]["psnr"], ssim=rq["learnt"]["ssim"],
                  psnr_ibr=rq.get("ibr", rq["learnt"])["psnr"], render_rows=rq["rows"],
                  psnr_poses=f"{rq['poses_scored']} scored of {rq['poses_covered']} covered / "
                             f"{rq['poses_visible']} visible test poses")
        results["objects"][name] = ev
    results["renderer"] = renderer
    for lab, r in train_done.items():
        if not r.succeeded:
            ok = False
            results.setdefault("errors", []).append(f"{lab}: [{r.error_code}] {r.message}")
    if "recognition" not in results:
        ok = False
    times["renders + report"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all
    results["times"] = times
    index = write_report(Path(a.report).resolve(), results)

    print("\n================ nol_ros demo summary ================")
    print(f"data: {data} (world {a.preset}, recognition preset {rec_preset}); workspaces: "
          f"{ws_root}; renderer of the training sets: {renderer}")
    print("| object | job | ATE (cm) | t err (mm) | R err mod sym (deg) | views | coverage | "
          f"PSNR {renderer} (dB) | PSNR ibr (dB) | AP@0.5 | ADD(-S) RGB | ADD(-S) RGB+ICP |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rec = results.get("recognition", {})

    def f(v, d=2):
        return "-" if v is None or not np.isfinite(v) else f"{v:.{d}f}"

    for name, ev in results["objects"].items():
        if "error" in ev:
            print(f"| {name} | FAILED {ev['error']} |")
            continue
        po = rec.get("per_object", {}).get(name, {})
        print(f"| {name} | {ev['job']} | {ev['ate_cm']:.2f} | {f(ev.get('t_err_mm'), 1)} | "
              f"{f(ev.get('r_err_deg'))} | {ev.get('views', 0)} | {ev.get('coverage', 0):.3f} | "
              f"{f(ev['psnr'])} | {f(ev['psnr_ibr'])} | {f(po.get('ap50'))} | "
              f"{f(po.get('add_rgb'))} | {f(po.get('add_icp'))} |")
    for name, ev in results["objects"].items():
        if "psnr_poses" in ev:
            print(f"PSNR of {name}: {ev['psnr_poses']} (>= 80 % of the silhouette seen by the "
                  "learnt views)")
    if rec:
        turns = ", ".join(f"{n} {v:.0f}" for n, v in rec.get("learnt_frame_deg", {}).items())
        print(f"recognition on {rec['frames']} test frames: mAP@0.5 {f(rec['map50'], 3)}, "
              f"ADD(-S) RGB {f(rec['add_rgb'], 3)}, RGB+ICP {f(rec['add_icp'], 3)} in the "
              f"learnt frames ({f(rec.get('add_icp_model_frame'), 3)} in the mesh files' own; "
              "learnt frame = mesh frame turned by "
              f"{turns} deg, symmetries of the untextured meshes); "
              f"{rec['seconds_per_image']:.2f} s per image")
    if live:
        print(f"recognizer node on the replayed test bag: {live['received']} frames received, "
              f"{live['processed']} recognised, {live['dropped_busy']} dropped while busy, "
              f"{live['detections']} detections ({live['poses']} posed, on /tf)")
    for e in results.get("errors", []):
        print(f"FAILED {e}")
    print("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"report: {index}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
