"""Does the reconstruction node keep up with a 30 Hz RGB-D stream? (ROS graph benchmark)

Starts ``reconstruction_node`` as its own process (as a robot would), replays a bag with
``nol-ros replay`` (another process, original 30 Hz stamps scaled by --rate) and listens to
/tf and the node's ~/status from this process. Prints what arrived, what the tracker did with
it (tracked, skipped because the backlog was full, failed), tracker fps, pose latency, and the
accuracy of the poses published on /tf against the ground truth of the BOP scene.

    .venv/bin/python bench/bench_ros_throughput.py          # .nol_demo/data_demo, 30 Hz
    .venv/bin/python bench/bench_ros_throughput.py --rate 0.5 --max-backlog 200
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _exe(name: str) -> str:
    return shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)


def pose_errors(tf_samples, bag: Path, scene: Path, odom_frame: str = "odom"):
    """Translation (m) and rotation (deg) errors of T_map_camera from /tf against the scene's
    ground truth, and the frame index of each; tf_samples: [(stamp_ns, child, T_map_child)].
    map -> odom poses are composed with the bag's odom -> camera. The map is where the node
    started tracking (the odometry pose, or the camera, of its first tracked frame, which
    is not frame 0 when the first frames were lost), so the first published pose is aligned
    to the truth and the others are compared in that frame."""
    from nol_ros.datasets.bag import read_bag_tf
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.geometry import so3_log
    from nol_ros.streaming.tf_buffer import TransformBuffer

    buf = TransformBuffer(cache_time_s=1e9)
    cam = "camera_rgb_optical_frame"
    for st, parent, child, T, static in read_bag_tf(bag):
        buf.set_transform(parent, child, st, T, static=static)
    gt = {f.stamp_ns: f.T_world_camera for f in read_bop_scene(scene).frames}
    index = {st: i for i, st in enumerate(sorted(gt))}
    poses = sorted((st, T @ buf.lookup(odom_frame, cam, st) if child == odom_frame else T)
                   for st, child, T in tf_samples if st in gt)
    if not poses:
        return np.zeros(0), np.zeros(0), []
    A = gt[poses[0][0]] @ np.linalg.inv(poses[0][1])
    et, er = [], []
    for st, T in poses:
        T_mc, G = A @ T, gt[st]
        et.append(float(np.linalg.norm(T_mc[:3, 3] - G[:3, 3])))
        er.append(float(np.degrees(np.linalg.norm(so3_log(T_mc[:3, :3].T @ G[:3, :3])))))
    return np.array(et), np.array(er), [index[st] for st, _ in poses]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / ".nol_demo" / "data_demo"),   # make demo
                    help="synthetic dataset folder (bags/train_000001, train/000001)")
    ap.add_argument("--rate", type=float, default=1.0, help="replay speed (1 = 30 Hz)")
    ap.add_argument("--max-backlog", type=int, default=15, help="tracking.max_backlog")
    ap.add_argument("--odometry", default="auto", help="tracking.odometry_mode")
    ap.add_argument("--qos-depth", type=int, default=None,
                    help="qos_depth (keep-last depth; default: the node's)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="another reconstruction_node parameter (repeatable)")
    ap.add_argument("--domain", type=int, default=40 + os.getpid() % 50)
    a = ap.parse_args(argv)
    os.environ["ROS_DOMAIN_ID"] = str(a.domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    data = Path(a.data)
    bag, scene = data / "bags" / "train_000001", data / "train" / "000001"
    import rclpy
    from tf2_msgs.msg import TFMessage

    from nol_ros.msg import TrackingStatus
    from nol_ros.ros.client import NolClient
    from nol_ros.streaming.messages import matrix_from_transform, stamp_to_ns

    load0 = os.getloadavg()
    node_proc = subprocess.Popen(
        [_exe("reconstruction_node"), "--ros-args", "-p", f"tracking.max_backlog:={a.max_backlog}",
         "-p", f"tracking.odometry_mode:={a.odometry}", "-p", "keyframe_images:=false",
         *(["-p", f"qos_depth:={a.qos_depth}"] if a.qos_depth else []),
         *[x for p in a.param for x in ("-p", p)]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    nol = NolClient(node_name="bench_client")        # spins its node in a thread
    node = nol.node
    tfs, statuses = [], []
    node.create_subscription(
        TFMessage, "/tf", lambda m: tfs.extend(
            (stamp_to_ns(t.header.stamp), t.child_frame_id, matrix_from_transform(t.transform))
            for t in m.transforms if t.header.frame_id == "map"), 200)
    node.create_subscription(TrackingStatus, "/reconstruction/status", statuses.append, 50)
    def spin_until(pred, timeout):     # True once pred() holds, False after timeout
        try:
            nol.wait_until(pred, timeout, "")
            return True
        except TimeoutError:
            return False

    def status():
        return nol.buffer_status(timeout_s=20.0)

    try:
        nol.wait_for_nodes(["reconstruction"], 60)
        t0 = time.monotonic()
        replay = subprocess.Popen(
            [_exe("nol-ros"), "replay", str(bag), "--rate", str(a.rate),
             "--wait-for-subscribers", "10"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        spin_until(lambda: replay.poll() is not None, 600)
        t_replay = time.monotonic() - t0
        replay_out = replay.communicate()[0]
        # let the tracker finish its backlog: every received frame tracked or counted
        def settled():
            s = status()
            t = s.tracking
            return s.frames_received == (t.frames_tracked + t.frames_skipped
                                         + t.frames_without_odometry + t.frames_tf_refused)

        spin_until(settled, 120)
        t_done = time.monotonic() - t0
        time.sleep(0.5)     # the last status and TF messages
        st = status()
    finally:
        node_proc.terminate()
        try:
            log = node_proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            node_proc.kill()
            log = node_proc.communicate()[0]
        nol.destroy()
        rclpy.shutdown()
    tr = st.tracking
    n_bag = 120 if "demo" in str(data) else None
    et, er, idx = pose_errors(tfs, bag, scene)
    load1 = os.getloadavg()
    print(f"bag: {bag} ({n_bag or '?'} RGB-D pairs), rate {a.rate} "
          f"({30 * a.rate:.0f} Hz), max_backlog {a.max_backlog}, odometry {a.odometry}")
    print(f"replay wall {t_replay:.1f} s; backlog tracked {t_done:.1f} s after the start")
    print(f"received {tr.frames_received}, rejected {tr.frames_rejected}, unpaired "
          f"{tr.messages_unpaired}; tracked {tr.frames_tracked}, skipped (backlog full) "
          f"{tr.frames_skipped}, tracking failed {tr.frames_tracking_failed}, not tracked "
          f"(odometry late) {tr.frames_without_odometry}; keyframes {tr.keyframes}; tf mode "
          f"{tr.tf_mode}")
    fps = [s.tracking_fps for s in statuses if s.frames_tracked > 0]
    lat = [s.latency_s for s in statuses if s.frames_tracked > 0]
    if fps:
        print(f"tracker fps (last 30 frames): median {np.median(fps):.1f}, min {min(fps):.1f}; "
              f"pose latency median {np.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
    if len(et):
        print(f"/tf poses: {len(et)}; T_map_camera error vs ground truth: translation median "
              f"{np.median(et) * 100:.2f} cm, max {et.max() * 100:.2f} cm; rotation median "
              f"{np.median(er):.2f} deg, max {er.max():.2f} deg; first pose frame {idx[0]}, "
              f"worst frame {idx[int(np.argmax(et))]}")
    why = Counter(re.sub(r"[0-9]+(\.[0-9]+)?", "N", f"{s.tracking_state}: {s.message}")
                  for s in statuses if s.frames_tracked > 0 and not s.tracking_ok)
    if why:
        print("untrusted frames (status messages, numbers as N):")
        for text, n in why.most_common(6):
            print(f"  {n:4d}  {text[:150]}")
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (2 cores)")
    print("replay:", replay_out.strip().splitlines()[-1] if replay_out.strip() else "")
    if "--verbose" in os.environ.get("BENCH_FLAGS", ""):
        print("per pose (frame: cm, deg):", ", ".join(
            f"{i}: {t * 100:.2f}, {r:.2f}" for i, t, r in zip(idx, et, er)))
        print(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
