"""`make demo`: the main job on the built-in synthetic scene, through the real ROS graph.

1. generate the synthetic world (demo preset: a 120-frame circle around a table with 4 objects
   and a test sequence) with its rosbag2, unless it is already there;
2. start the ROS graph: the reconstruction node and the nol node, each its own process;
3. replay the bag over DDS (Xtion topics, original stamps) into the reconstruction node and ask
   it what it received (GetBufferStatus);
4. call LearnObject for every object through the nol node's service, with the bag as source,
   follow the progress topic, wait for the jobs (GetJobStatus);
5. compare the learnt workspaces with the ground truth and print a one-screen summary.
Later stages (NOL renders, detector and pose training, recognition) join as they land.
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


def evaluate_workspace(ws: Path, scene: Path, models: Path, obj_id: int) -> dict:
    """Errors of a learnt object against the synthetic ground truth."""
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.mesh import load_mesh
    from nol_ros.metrics import ate_rmse, geometric_symmetries, rotation_error_sym_deg

    seq = read_bop_scene(scene, models)
    traj = json.loads((ws / "trajectory.json").read_text())
    est = [np.array(t["T_world_camera"]) for t in traj]
    n = min(len(est), len(seq.frames))
    ate, A = ate_rmse(est[:n], [f.T_world_camera for f in seq.frames[:n]])
    out = {"ate_cm": ate * 100, "frames": len(traj)}
    obj = json.loads((ws / "objects" / ws.name / "object.json").read_text()) \
        if (ws / "objects" / ws.name / "object.json").exists() else None
    gt = next(o for o in seq.objects if o.obj_id == obj_id)
    if obj is not None:
        T = A @ np.array(obj["T_world_object"])
        m = load_mesh(gt.mesh_path)
        out["t_err_mm"] = 1000 * float(np.linalg.norm(T[:3, 3] - gt.T_world_object[:3, 3]))
        out["r_err_deg"] = rotation_error_sym_deg(T, gt.T_world_object,
                                                  geometric_symmetries(m.vertices, m.faces))
    views = ws / "objects" / ws.name / "views.json"
    if views.exists():
        v = json.loads(views.read_text())
        out["views"], out["coverage"] = len(v["views"]), v["coverage"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nol_ros.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=".nol_demo", help="working folder (data, workspaces)")
    ap.add_argument("--preset", default="demo", help="synthetic preset (small for a quick run)")
    ap.add_argument("--rate", type=float, default=1.0, help="bag replay speed factor")
    ap.add_argument("--objects", type=int, default=0, help="learn only the first N objects")
    a = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
    base = Path(a.dir).resolve()
    data = base / f"data_{a.preset}"
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. data ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if not (data / "world.json").exists():
        from nol_ros.datasets.synthetic.generate import generate

        print(f"[demo] generating the synthetic world ({a.preset}) in {data} ...", flush=True)
        if data.exists():
            shutil.rmtree(data)
        generate(data, a.preset, seed=0, progress=True)
    world = json.loads((data / "world.json").read_text())
    objects = {int(k): v for k, v in world["objects"].items()}
    if a.objects:
        objects = dict(list(objects.items())[:a.objects])
    bag = data / "bags" / "train_000001"
    times["generate"] = time.perf_counter() - t0

    # 2. graph --------------------------------------------------------------------------------
    ws_root = base / f"workspace_{a.preset}"
    if ws_root.exists():
        shutil.rmtree(ws_root)
    print("[demo] starting the ROS graph: reconstruction_node, nol_node", flush=True)
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen([_exe("reconstruction_node"), "--ros-args", "-r", "__ns:=/demo"],
                         stdout=open(logs / "reconstruction.log", "w"), stderr=subprocess.STDOUT),
        subprocess.Popen([_exe("nol_node"), "--ros-args", "-r", "__ns:=/demo",
                          "-p", f"learn.workspace_root:={ws_root}"],
                         stdout=open(logs / "nol.log", "w"), stderr=subprocess.STDOUT),
    ]
    import rclpy

    from nol_ros.msg import JobProgress
    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig
    from nol_ros.srv import GetBufferStatus, GetJobStatus, LearnObject

    rclpy.init()
    node = rclpy.create_node("demo_client", namespace="/demo")
    try:
        status = node.create_client(GetBufferStatus, "/demo/reconstruction/get_buffer_status")
        learn = node.create_client(LearnObject, "/demo/nol/learn_object")
        jobs = node.create_client(GetJobStatus, "/demo/nol/get_job_status")
        last: dict[str, JobProgress] = {}
        node.create_subscription(JobProgress, "/demo/nol/progress",
                                 lambda m: last.__setitem__(m.job_id, m), 50)
        _spin_until(node, lambda: status.service_is_ready() and learn.service_is_ready(), 60,
                    "the nodes to start")

        # 3. replay -------------------------------------------------------------------------
        t0 = time.perf_counter()
        print(f"[demo] replaying {bag.name} at {a.rate}x into the reconstruction node",
              flush=True)
        player = BagPlayer(node, ReplayConfig(
            bag=str(bag), rate=a.rate, wait_for_subscribers_s=10.0,
            remap=(("/camera/rgb/image_raw", "/demo/camera/rgb/image_raw"),
                   ("/camera/depth_registered/image_raw",
                    "/demo/camera/depth_registered/image_raw"),
                   ("/camera/rgb/camera_info", "/demo/camera/rgb/camera_info"))))
        stats = player.run()
        player.close()
        time.sleep(0.5)
        st = _call(node, status, GetBufferStatus.Request())
        times["replay"] = time.perf_counter() - t0
        print(f"[demo] reconstruction node received {st.frames_received} RGB-D frames "
              f"({st.width}x{st.height}, {st.depth_encoding}), dropped {st.frames_dropped}, "
              f"{st.messages_unpaired} images unpaired; {stats.messages} messages replayed",
              flush=True)

        # 4. learn --------------------------------------------------------------------------
        t0 = time.perf_counter()
        models = data / "models"
        job_of = {}
        for oid, name in objects.items():
            r = _call(node, learn, LearnObject.Request(
                object_name=name, mesh_path=str(models / f"obj_{oid:06d}.ply"),
                source=LearnObject.Request.SOURCE_BAG, source_path=str(bag)))
            if not r.accepted:
                print(f"[demo] LearnObject {name} refused [{r.error_code}]: {r.message}")
                continue
            job_of[name] = (oid, r.job_id)
            print(f"[demo] LearnObject {name}: job {r.job_id}", flush=True)
        done: dict[str, object] = {}
        shown: dict[str, str] = {}
        while len(done) < len(job_of):
            rclpy.spin_once(node, timeout_sec=0.2)
            for name, (_, jid) in job_of.items():
                if name in done:
                    continue
                p = last.get(jid)
                if p is not None and p.state >= JobProgress.STATE_SUCCEEDED:
                    done[name] = _call(node, jobs, GetJobStatus.Request(job_id=jid))
                elif p is not None and p.state == JobProgress.STATE_RUNNING:
                    line = f"  {name}: {p.stage} {p.fraction * 100:5.1f}% {p.message}"
                    if line != shown.get(name):
                        print(line, flush=True)
                        shown[name] = line
        times["learn"] = time.perf_counter() - t0
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    # 5. summary --------------------------------------------------------------------------------
    print("\n================ nol_ros demo summary ================")
    print(f"data: {data} (preset {a.preset}); workspaces: {ws_root}")
    print("| object | job | ATE (cm) | t err (mm) | R err mod sym (deg) | views | coverage |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for name, res in done.items():
        oid, jid = job_of[name]
        if res.status.state != JobProgress.STATE_SUCCEEDED:
            ok = False
            print(f"| {name} | {jid} FAILED [{res.error_code}] {res.message} | | | | | |")
            continue
        ev = evaluate_workspace(Path(res.result_path), data / "train" / "000001",
                                data / "models", oid)
        print(f"| {name} | {jid} | {ev['ate_cm']:.2f} | {ev.get('t_err_mm', float('nan')):.1f} "
              f"| {ev.get('r_err_deg', float('nan')):.2f} | {ev.get('views', 0)} | "
              f"{ev.get('coverage', 0):.3f} |")
    times["total"] = time.perf_counter() - t_all
    print("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print("not yet in the demo: NOL renders, detector/pose training, recognition (open issues)")
    return 0 if ok and done else 1


if __name__ == "__main__":
    sys.exit(main())
