"""`make demo`: the main job on the built-in synthetic scene, through the real ROS graph.

1. generate the synthetic world (demo preset: a 120-frame circle around a table with 4 objects
   and a 40-frame test sequence at other elevations) and write both sequences as rosbag2
   folders, unless they are already there;
2. start the ROS graph, each node its own process: reconstruction, nol, trainer, recognizer;
3. replay the training bag over DDS (Xtion topics, original stamps) into the reconstruction
   node and ask it what it received (GetBufferStatus);
4. LearnObject for every object through the nol node's service (source: the bag):
   self-annotation, view selection and the rendered training set (the shipped NOL model when
   its evaluation beat the IBR baseline, else IBR; see nol_ros.nol.renderer.default_method);
5. TrainDetector + TrainPoseEstimator through the trainer node (recognition preset);
6. the recognizer node picks the models up; the test bag is replayed into it, and the same
   models are scored offline on the test sequence (mAP@0.5, ADD(-S) with and without ICP);
7. renders at test-frame poses against the ground-truth texture (PSNR), a pose-noise curve,
   the report (REPORT/index.html + PNGs) and a one-screen summary.

``--preset small --objects 1`` is the quick variant the tests run (recognition preset tiny).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

XTION = ("/camera/rgb/image_raw", "/camera/depth_registered/image_raw",
         "/camera/rgb/camera_info")
NS = "/demo"


def _exe(name: str) -> str:
    return shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)


def _spin_until(node, pred, timeout: float, what: str):
    import rclpy

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rclpy.spin_once(node, timeout_sec=0.05)
        if pred():
            return
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _call(node, client, req, timeout=30.0):
    fut = client.call_async(req)
    _spin_until(node, fut.done, timeout, f"a reply from {client.srv_name}")
    return fut.result()


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class _Bar:
    """One progress line per job, redrawn in place on a terminal, printed every 10 % (and on
    each new stage) otherwise, so a log stays short."""

    def __init__(self, label: str):
        self.label, self.tty = label, sys.stdout.isatty()
        self.last_stage, self.last_tenth = None, -1

    def update(self, stage: str, fraction: float, message: str) -> None:
        f = min(max(fraction, 0.0), 1.0)
        bar = "#" * int(f * 30) + "-" * (30 - int(f * 30))
        line = f"  {self.label:<24} [{bar}] {f * 100:5.1f}% {stage}: {message}"[:150]
        if self.tty:
            print("\r" + line.ljust(150), end="", flush=True)
        elif stage != self.last_stage or int(f * 10) > self.last_tenth:
            print(line, flush=True)
        self.last_stage, self.last_tenth = stage, int(f * 10)

    def close(self) -> None:
        if self.tty:
            print(flush=True)


def _follow_jobs(node, progress: dict, status_client, jobs: dict, timeout: float) -> dict:
    """Wait for every job of {label: job_id}; progress bars from the ~/progress messages
    (``progress``: job_id -> last JobProgress, filled by a subscription). Returns {label:
    GetJobStatus response}."""
    import rclpy

    from nol_ros.msg import JobProgress
    from nol_ros.srv import GetJobStatus

    bars = {label: _Bar(label) for label in jobs}
    done: dict = {}
    t0 = time.monotonic()
    while len(done) < len(jobs):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"jobs {sorted(set(jobs) - set(done))} still running after "
                               f"{timeout:.0f} s")
        rclpy.spin_once(node, timeout_sec=0.2)
        for label, jid in jobs.items():
            if label in done:
                continue
            p = progress.get(jid)
            if p is None:
                continue
            if p.state >= JobProgress.STATE_SUCCEEDED:
                done[label] = _call(node, status_client, GetJobStatus.Request(job_id=jid))
                bars[label].update(p.stage, 1.0 if p.state == JobProgress.STATE_SUCCEEDED
                                   else p.fraction, p.message)
                bars[label].close()
            elif p.state == JobProgress.STATE_RUNNING:
                bars[label].update(p.stage, p.fraction, p.message)
    return done


# -- measurements against the synthetic ground truth ------------------------------------------

def evaluate_workspace(ws: Path, scene: Path, models: Path, obj_id: int) -> dict:
    """Errors of a learnt object against the synthetic ground truth (+ what the report draws)."""
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.mesh import load_mesh
    from nol_ros.metrics import ate_rmse, geometric_symmetries, rotation_error_sym_deg

    seq = read_bop_scene(scene, models)
    traj = json.loads((ws / "trajectory.json").read_text())
    est = [np.array(t["T_world_camera"]) for t in traj]
    n = min(len(est), len(seq.frames))
    gt_traj = [f.T_world_camera for f in seq.frames[:n]]
    ate, A = ate_rmse(est[:n], gt_traj)
    out = {"ate_cm": ate * 100, "frames": len(traj), "workspace": str(ws),
           "trajectory": {"est": [A @ T for T in est[:n]], "gt": gt_traj}}
    od = ws / "objects" / ws.name
    out["object_dir"] = str(od)
    obj = json.loads((od / "object.json").read_text()) if (od / "object.json").exists() \
        else None
    gt = next(o for o in seq.objects if o.obj_id == obj_id)
    if obj is not None:
        T = A @ np.array(obj["T_world_object"])
        m = load_mesh(gt.mesh_path)
        out["t_err_mm"] = 1000 * float(np.linalg.norm(T[:3, 3] - gt.T_world_object[:3, 3]))
        out["r_err_deg"] = rotation_error_sym_deg(T, gt.T_world_object,
                                                  geometric_symmetries(m.vertices, m.faces))
    views = od / "views.json"
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
    import dataclasses

    from nol_ros.camera import crop_image
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.mesh import load_mesh
    from nol_ros.nol.evaluate import NOISE_LEVELS, noisy_sources, score
    from nol_ros.nol.renderer import NolRenderer, load_object_renderer
    from nol_ros.recognition.renderers import TexturedMeshRenderer

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
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.mesh import load_mesh
    from nol_ros.recognition.evaluate import IdMapped, score_models
    from nol_ros.recognition.recognizer import Recognizer
    from nol_ros.report import draw_recognitions

    scene = data / "test" / "000001"
    rec = Recognizer.load(models_dir)
    bar = _Bar("recognize (offline)")
    sc = score_models(rec, [scene], data / "models", ws_root,
                      data / "train" / "000001" if ws_root is not None else None,
                      progress=lambda s, f, m="": bar.update(s, f, m))
    bar.close()
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
    from nol_ros.datasets.bag import export_bag
    from nol_ros.datasets.bop import read_bop_scene

    if not (data / "world.json").exists():
        from nol_ros.datasets.synthetic.generate import generate

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
    data = base / f"data_{a.preset}"
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
    ws_root = base / f"workspace_{a.preset}"
    if ws_root.exists():
        shutil.rmtree(ws_root)
    models_dir = ws_root / "_models"
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ns = ["--ros-args", "-r", f"__ns:={NS}"]
    nodes = {
        "reconstruction": [_exe("reconstruction_node"), *ns],
        "nol": [_exe("nol_node"), *ns, "-p", f"learn.workspace_root:={ws_root}",
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
    import rclpy

    from nol_ros.msg import DetectionArray, JobProgress, RecognizerStatus
    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig, receiver_pace
    from nol_ros.srv import (
        GetBufferStatus,
        GetJobStatus,
        LearnObject,
        TrainDetector,
        TrainPoseEstimator,
    )

    rclpy.init()
    node = rclpy.create_node("demo_client", namespace=NS)
    results: dict = {"title": f"nol_ros demo ({a.preset} world, {rec_preset} recognition)",
                     "preset": f"world {a.preset}, recognition {rec_preset}", "objects": {}}
    learnt: dict = {}
    train_done: dict = {}
    live: dict = {}
    try:
        status = node.create_client(GetBufferStatus, f"{NS}/reconstruction/get_buffer_status")
        learn = node.create_client(LearnObject, f"{NS}/nol/learn_object")
        nol_jobs = node.create_client(GetJobStatus, f"{NS}/nol/get_job_status")
        td = node.create_client(TrainDetector, f"{NS}/trainer/train_detector")
        tp = node.create_client(TrainPoseEstimator, f"{NS}/trainer/train_pose_estimator")
        tr_jobs = node.create_client(GetJobStatus, f"{NS}/trainer/get_job_status")
        progress: dict = {}
        for n in ("nol", "trainer"):
            node.create_subscription(JobProgress, f"{NS}/{n}/progress",
                                     lambda m: progress.__setitem__(m.job_id, m), 50)
        rstat: list = []
        dets: list = []
        node.create_subscription(RecognizerStatus, f"{NS}/recognizer/status", rstat.append, 10)
        node.create_subscription(DetectionArray, f"{NS}/recognizer/detections", dets.append, 50)
        _spin_until(node, lambda: all(c.service_is_ready() for c in (status, learn, td, tp)),
                    90, "the nodes to start")

        # 3. replay ---------------------------------------------------------------------------
        t0 = time.perf_counter()
        remap = tuple((t, NS + t) for t in XTION)

        def wait(pred, timeout, what):
            _spin_until(node, pred, timeout, what)

        def tracked():
            s = _call(node, status, GetBufferStatus.Request())
            t = s.tracking
            return min(s.frames_received + s.frames_dropped,
                       s.frames_dropped + t.frames_tracked + t.frames_skipped
                       + t.frames_without_odometry + t.frames_tf_refused)

        if a.rate > 0:
            _say(f"replaying {bag.name} at {a.rate}x into the reconstruction node")
            player = BagPlayer(node, ReplayConfig(bag=str(bag), rate=a.rate,
                                                  wait_for_subscribers_s=10.0, remap=remap))
        else:
            _say(f"replaying {bag.name} into the reconstruction node, paced by its tracking")
            player = BagPlayer(node, ReplayConfig(bag=str(bag), wait_for_subscribers_s=10.0,
                                                  remap=remap, pace_topic=XTION[0]),
                               receiver_pace(tracked, wait, lag=1))
        stats = player.run()
        player.close()
        time.sleep(0.5)
        st = _call(node, status, GetBufferStatus.Request())
        times["replay"] = time.perf_counter() - t0
        _say(f"reconstruction node received {st.frames_received} RGB-D frames "
             f"({st.width}x{st.height}, {st.depth_encoding}), dropped {st.frames_dropped}, "
             f"{st.messages_unpaired} images unpaired; {stats.messages} messages replayed")
        results["replay"] = {"received": st.frames_received, "dropped": st.frames_dropped}
        # the test bag goes to the recognizer next; the reconstruction node is done
        procs["reconstruction"].terminate()

        # 4. learn ----------------------------------------------------------------------------
        t0 = time.perf_counter()
        models = data / "models"
        job_of = {}
        for oid, name in objects.items():
            r = _call(node, learn, LearnObject.Request(
                object_name=name, mesh_path=str(models / f"obj_{oid:06d}.ply"),
                source=LearnObject.Request.SOURCE_BAG, source_path=str(bag)))
            if not r.accepted:
                _say(f"LearnObject {name} refused [{r.error_code}]: {r.message}")
                continue
            job_of[name] = (oid, r.job_id)
        _say(f"LearnObject x{len(job_of)} queued on the nol node (one job at a time)")
        learnt = _follow_jobs(node, progress, nol_jobs,
                              {n: j for n, (_, j) in job_of.items()}, 3600)
        times["learn + render"] = time.perf_counter() - t0
        ok_names = [n for n, r in learnt.items()
                    if r.status.state == JobProgress.STATE_SUCCEEDED]

        # 5. train ----------------------------------------------------------------------------
        if ok_names:
            t0 = time.perf_counter()
            a_ = _call(node, td, TrainDetector.Request(object_names=ok_names, preset=rec_preset))
            b_ = _call(node, tp, TrainPoseEstimator.Request(object_names=ok_names,
                                                            preset=rec_preset))
            jobs = {}
            for lab, r in (("TrainDetector", a_), ("TrainPoseEstimator", b_)):
                if r.accepted:
                    jobs[lab] = r.job_id
                else:
                    _say(f"{lab} refused [{r.error_code}]: {r.message}")
            _say(f"training the detector and the pose estimator ({rec_preset} preset) on the "
                 f"renders of {', '.join(ok_names)}")
            train_done = _follow_jobs(node, progress, tr_jobs, jobs, 3600)
            times["train"] = time.perf_counter() - t0

        # 6. recognise ------------------------------------------------------------------------
        if (models_dir / "recognition.json").exists():
            t0 = time.perf_counter()
            results["recognition"] = recognition_offline(models_dir, data, ws_root)
            times["recognize (offline)"] = time.perf_counter() - t0
            _spin_until(node, lambda: rstat and rstat[-1].models_loaded, 60,
                        "the recognizer node to load the models")
            t0 = time.perf_counter()
            per = results["recognition"]["seconds_per_image"]
            from nol_ros.datasets.bop import read_bop_scene

            test_seq = read_bop_scene(data / "test" / "000001")
            n0, s0 = len(dets), rstat[-1]
            test_bag = str(data / "bags" / "test_000001")
            if a.rate > 0:
                stamps = [f.stamp_ns for f in test_seq.frames]
                period = float(np.median(np.diff(stamps))) / 1e9 if len(stamps) > 1 else 1 / 30
                rate = period / (1.5 * per + 0.3)   # slow enough for the recognizer to keep up
                _say(f"replaying the test bag into the recognizer node at {rate:.3f}x "
                     f"({1.5 * per + 0.3:.1f} s per frame)")
                player = BagPlayer(node, ReplayConfig(bag=test_bag, rate=rate,
                                                      wait_for_subscribers_s=10.0, remap=remap))
            else:
                def recognised():
                    s = rstat[-1]
                    return sum(getattr(s, f) - getattr(s0, f) for f in (
                        "frames_processed", "frames_rejected", "frames_dropped_busy"))

                _say("replaying the test bag into the recognizer node, paced by its status")
                player = BagPlayer(node, ReplayConfig(bag=test_bag, wait_for_subscribers_s=10.0,
                                                      remap=remap, pace_topic=XTION[0]),
                                   receiver_pace(recognised, wait, lag=0))
            player.run()
            player.close()
            n_test = len(test_seq.frames)

            def settled():
                s = rstat[-1]
                got = s.frames_received - s0.frames_received
                return got >= n_test and s.frames_received <= (
                    s.frames_processed + s.frames_dropped_busy + s.frames_rejected)
            try:
                _spin_until(node, settled, 30 + 3 * n_test * per, "the recognizer to finish")
            except TimeoutError as e:
                _say(f"recognizer node: {e} (counted what arrived)")
            s = rstat[-1]
            live = {k: getattr(s, f) - getattr(s0, f) for k, f in (
                ("received", "frames_received"), ("processed", "frames_processed"),
                ("dropped_busy", "frames_dropped_busy"), ("rejected", "frames_rejected"),
                ("detections", "detections_published"), ("poses", "poses_published"))}
            live.update(frames=len(test_seq.frames), arrays=len(dets) - n0,
                        mean_recognize_s=s.mean_recognize_s)
            results["recognition"]["live"] = live
            times["recognize (graph)"] = time.perf_counter() - t0
    finally:
        node.destroy_node()
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
        oid, jid = job_of[name]
        if res.status.state != JobProgress.STATE_SUCCEEDED:
            ok = False
            results["objects"][name] = {"obj_id": oid, "error": f"[{res.error_code}] "
                                                                f"{res.message}"}
            continue
        ws = Path(res.result_path)
        ev = evaluate_workspace(ws, data / "train" / "000001", data / "models", oid)
        rs = ws / "renders" / "render_set.json"
        method = json.loads(rs.read_text()).get("source", "ibr_angle") if rs.exists() \
            else "ibr_angle"
        renderer = renderer or method
        rq = render_quality(ev["object_dir"], data, oid, method, noise_curve=first)
        if first:
            results["trajectory"] = ev["trajectory"]
            results["scene_mesh"] = str(ws / "scene_mesh.ply")
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
        if r.status.state != JobProgress.STATE_SUCCEEDED:
            ok = False
            results.setdefault("errors", []).append(f"{lab}: [{r.error_code}] {r.message}")
    if "recognition" not in results:
        ok = False
    times["renders + report"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all
    results["times"] = times
    from nol_ros.report import write_report

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
