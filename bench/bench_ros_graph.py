"""Learn -> render -> train -> recognise through the ROS graph, timed (ROS graph benchmark).

Starts ``nol_node``, ``trainer_node`` and ``recognizer_node`` as their own processes (as on a
robot) on one workspace root and drives them from this process over localhost DDS:

1. LearnObject (bag source) of one object: wall time per job stage (from ~/progress);
2. RenderViews: first call (loads the renderer), cached calls at a crop and at full frame, a
   batch of poses; the nol process's RSS before, after rendering and after the idle release;
3. TrainDetector + TrainPoseEstimator on the preset: wall time of each job;
4. the recognizer on the test scene replayed as a bag at --rate x 30 Hz (looped --loops
   times): frames received / recognised / dropped while busy, recognise time, latency.

    .venv/bin/python bench/bench_ros_graph.py                       # small world, tiny preset
    .venv/bin/python bench/bench_ros_graph.py --data data/demo --object cracker_box
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))


def _exe(name: str) -> str:
    return shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="", help="synthetic world (default: generate 'small')")
    ap.add_argument("--object", default="mustard_bottle")
    ap.add_argument("--preset", default="tiny", help="render grid + training preset")
    ap.add_argument("--work", default="build/bench/nol_bench_graph")
    ap.add_argument("--rate", type=float, default=1.0, help="test bag replay speed (x 30 Hz)")
    ap.add_argument("--loops", type=int, default=4)
    args = ap.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    work = Path(args.work).resolve()  # a node reads relative request paths under its root
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if args.data:
        world = Path(args.data).resolve()
    else:
        from nol_ros.datasets.synthetic.generate import generate

        world = work / "world"
        generate(world, "small", seed=0, progress=False)
    import json

    from nol_ros.datasets.bop import read_bop_scene, read_models_info

    info = read_models_info(world / "models" / "models_info.json")
    oid = next(k for k, v in info.items() if v.get("name") == args.object)
    ws = work / "ws"
    test_bag = work / "test_bag"
    subprocess.run([sys.executable, "-m", "nol_ros.datasets.bag", "--bop",
                    str(world / "test" / "000001"), "--out", str(test_bag)], check=True,
                   capture_output=True)
    log = open(work / "nodes.log", "w")  # noqa: SIM115
    procs = {
        "nol": subprocess.Popen([_exe("nol_node"), "--ros-args", "-p",
                                 f"learn.workspace_root:={ws}", "-p",
                                 f"data_root:={world.resolve()}", "-p",   # the bag, the mesh
                                 f"learn.render.preset:={args.preset}", "-p",
                                 "render_views.idle_release_s:=5.0"], stdout=log,
                                stderr=subprocess.STDOUT),
        "trainer": subprocess.Popen([_exe("trainer_node"), "--ros-args", "-p",
                                     f"train.workspace_root:={ws}", "-p",
                                     f"train.preset:={args.preset}"], stdout=log,
                                    stderr=subprocess.STDOUT),
        "recognizer": subprocess.Popen([_exe("recognizer_node"), "--ros-args", "-p",
                                        f"models_dir:={ws / '_models'}", "-p",
                                        "models_poll_s:=1.0"], stdout=log,
                                       stderr=subprocess.STDOUT)}
    import rclpy
    from _graph_helpers import Graph
    from rclpy.context import Context
    from rclpy.qos import DurabilityPolicy, QoSProfile

    from nol_ros.learn import SOURCE_BAG
    from nol_ros.msg import DetectionArray, JobProgress, RecognizerStatus

    ctx = Context()
    rclpy.init(context=ctx)
    g = Graph(ctx)
    out = {"load_average": os.getloadavg()}
    try:
        cli = g.client_node("bench")
        prog, dets, status = [], [], []
        cli.create_subscription(JobProgress, "/nol/progress",
                                lambda m: prog.append((time.monotonic(), m.stage, m.state)), 500)
        cli.create_subscription(DetectionArray, "/recognizer/detections",
                                lambda m: dets.append(time.monotonic()), 500)
        cli.create_subscription(RecognizerStatus, "/recognizer/status", status.append,
                                QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        nol = g.client
        # 1. LearnObject
        c0 = cpu_s(procs["nol"].pid)
        t0 = time.monotonic()
        job = nol.learn_object(args.object, world / "models" / f"obj_{oid:06d}.ply",
                               SOURCE_BAG, world / "bags" / "train_000001")
        nol.wait(job, 3600).check(f"LearnObject {args.object}")
        t_learn = time.monotonic() - t0
        stages: dict[str, float] = {}
        prev_t, prev_s = t0, "queued"
        for t, s, _state in prog:
            if s != prev_s:
                stages[prev_s] = stages.get(prev_s, 0.0) + t - prev_t
                prev_t, prev_s = t, s
        stages[prev_s] = stages.get(prev_s, 0.0) + time.monotonic() - prev_t
        rep = json.loads((ws / args.object / "renders" / "render_report.json").read_text())
        out["learn"] = {"wall_s": t_learn, "cpu_s": cpu_s(procs["nol"].pid) - c0,
                        "stages_s": {k: round(v, 1) for k, v in stages.items() if v > 0.05},
                        "render_images": rep["images"],
                        "render_s_per_image": rep["seconds_per_image"],
                        "refine_s": rep["seconds"].get("refine", 0.0)}
        print(f"[bench] LearnObject {args.object}: {t_learn:.1f} s; {out['learn']}", flush=True)
        # 2. RenderViews
        seq = read_bop_scene(world / "train" / "000001", world / "models")
        K = seq.intrinsics
        T = seq.T_camera_object(len(seq.frames) // 2, oid)
        c = K.K @ T[:3, 3]
        u, v = c[0] / c[2], c[1] / c[2]
        from nol_ros.camera import Intrinsics

        def crop(S):
            return Intrinsics(K.fx, K.fy, K.cx - round(u - S / 2), K.cy - round(v - S / 2), S, S)

        def render(intr, Ts):
            t = time.monotonic()
            nol.render_views(args.object, Ts, intr, timeout_s=1800)   # RequestRefused if not
            return time.monotonic() - t

        rss0 = rss_mb(procs["nol"].pid)
        rvt = {"first_128px_s (load)": render(crop(128), [T]),
               "cached_128px_s": render(crop(128), [T]),
               "cached_640x480_s": render(K, [T])}
        Ts = [seq.T_camera_object(i, oid) for i in range(0, len(seq.frames), 4)]
        rvt[f"batch_{len(Ts)}x128px_s"] = render(crop(128), Ts)
        rss1 = rss_mb(procs["nol"].pid)
        time.sleep(8.0)   # idle_release_s 5
        rss2 = rss_mb(procs["nol"].pid)
        out["render_views"] = {**{k: round(x, 2) for k, x in rvt.items()},
                               "rss_mb": [round(rss0), round(rss1), round(rss2)]}
        print(f"[bench] RenderViews: {out['render_views']} (RSS before, after, after idle "
              "release)", flush=True)
        # 3. training
        c0 = cpu_s(procs["trainer"].pid)
        t0 = time.monotonic()
        nol.wait(nol.train_detector([args.object]), 24 * 3600).check("detector training")
        t_det = time.monotonic() - t0
        nol.wait(nol.train_pose_estimator([args.object]), 24 * 3600).check("pose training")
        out["train"] = {"detector_s": round(t_det, 1),
                        "pose_s": round(time.monotonic() - t0 - t_det, 1),
                        "cpu_s": round(cpu_s(procs["trainer"].pid) - c0, 1)}
        print(f"[bench] training ({args.preset}): {out['train']}", flush=True)
        # 4. the recognizer on the test bag
        g.wait(lambda: status and status[-1].models_loaded, 60, "the recognizer's models")
        s0 = status[-1]
        n0 = len(dets)
        t0 = time.monotonic()
        play = [_exe("nol-ros"), "replay", str(test_bag), "--rate", str(args.rate),
                "--wait-for-subscribers", "10", "--quiet"]
        for _ in range(args.loops):   # --loop never ends: play N times
            subprocess.run(play, check=True, capture_output=True)
        time.sleep(3.0)
        g.wait(lambda: status[-1].frames_received - s0.frames_received == status[-1].
               frames_processed - s0.frames_processed + status[-1].frames_dropped_busy
               - s0.frames_dropped_busy + status[-1].frames_rejected - s0.frames_rejected,
               60, "the recognizer to finish")
        time.sleep(1.5)
        s1 = status[-1]
        n_frames = len(read_bop_scene(world / "test" / "000001").frames) * args.loops
        out["recognizer"] = {
            "replayed": n_frames, "received": s1.frames_received - s0.frames_received,
            "recognised": s1.frames_processed - s0.frames_processed,
            "dropped_busy": s1.frames_dropped_busy - s0.frames_dropped_busy,
            "rejected": s1.frames_rejected - s0.frames_rejected,
            "mean_recognize_s": round(s1.mean_recognize_s, 3),
            "last_latency_s": round(s1.last_latency_s, 3),
            "detection_msgs": len(dets) - n0, "wall_s": round(time.monotonic() - t0, 1)}
        print(f"[bench] recognizer at {30 * args.rate:.0f} Hz: {out['recognizer']}", flush=True)
        out["load_average_end"] = os.getloadavg()
        print(f"[bench] load average {out['load_average']} -> {out['load_average_end']}")
        (work / "bench.json").write_text(json.dumps(out, indent=2, default=float))
    finally:
        g.close()
        rclpy.shutdown(context=ctx)
        for p in procs.values():
            p.send_signal(2)
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    sys.exit(main())
