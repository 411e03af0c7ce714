"""Soak test of the live reconstruction node: a long 30 Hz replay, resident memory sampled.

Run: ``make soak-live`` (= .venv/bin/python bench/soak_live.py --minutes 10), or with options:
    .venv/bin/python bench/soak_live.py [--minutes 10] [--warmup-minutes 3] [--dataset DIR]

The node runs in its own process (``python -m nol_ros.nodes.reconstruction_node``, default
parameters except ``tracking.odometry_mode: none`` -- the stream has no /tf -- and
``keyframe_images: false``). This process publishes REAL frames (TUM RGB-D fr1/desk from
../shared/realdata, undistorted, 640x480) at 30 Hz of wall time, played forward and backward
over and over with fresh stamps, and every 10 s reads the node's resident memory (VmRSS from
/proc) and its status. After the warm-up (the ingest ring buffer fills in 30 s, the keyframe
budget within minutes) the memory must stay flat: the growth from the end of the warm-up to
the largest later sample must stay under 5 % (exit code 1 otherwise). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "realdata" / "rgbd_sequences" / "tum_fr1_desk"
CAM = "camera_rgb_optical_frame"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-minutes", type=float, default=3.0)
    ap.add_argument("--dataset", default=str(DEFAULT_DATA))
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--max-growth", type=float, default=0.05)
    ap.add_argument("--json", default="build/soak_live.json")
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra node parameter, e.g. tracker.max_keyframes:=50 (repeatable)")
    a = ap.parse_args(argv)

    from nol_ros.ros.environment import default_ros_env

    default_ros_env()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from nol_ros.datasets.tum import read_tum_sequence
    from nol_ros.ros.client import NolClient
    from nol_ros.ros.conversions import (
        depth_to_image,
        intrinsics_to_camera_info,
        ns_to_stamp,
        numpy_to_image,
    )
    from nol_ros.ros.qos import sensor_qos

    seq = read_tum_sequence(a.dataset, intrinsics="calibrated")
    print(f"decoding {len(seq.frames)} frames of {seq.name} ...", flush=True)
    frames = [(f.load_rgb(), f.load_depth()) for f in seq.frames]
    play = list(range(len(frames))) + list(range(len(frames) - 1, -1, -1))

    node_proc = subprocess.Popen(
        [sys.executable, "-m", "nol_ros.nodes.reconstruction_node", "--ros-args", "-r",
         "__ns:=/soak", "-p", "tracking.odometry_mode:=none", "-p", "keyframe_images:=false",
         *[x for prm in a.node_param for x in ("-p", prm)]],
        env=os.environ.copy())
    rclpy.init()
    nol = NolClient(namespace="/soak", node_name="soak_camera")   # spins its node in a thread
    node = nol.node
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    p_rgb = node.create_publisher(Image, "/soak/camera/rgb/image_raw", qos)
    p_depth = node.create_publisher(Image, "/soak/camera/depth_registered/image_raw", qos)
    p_info = node.create_publisher(CameraInfo, "/soak/camera/rgb/camera_info", sensor_qos())
    samples: list[dict] = []
    code = 0
    try:
        t_wait = time.monotonic()
        while not nol.ready(["reconstruction"]) or p_rgb.get_subscription_count() == 0:
            time.sleep(0.1)
            if time.monotonic() - t_wait > 120 or node_proc.poll() is not None:
                raise SystemExit("the reconstruction node did not come up")
        t0 = time.monotonic()
        period = 1.0 / a.rate
        k, next_sample, publish_errors = 0, t0, 0
        stamp0 = time.time_ns()
        while time.monotonic() - t0 < a.minutes * 60:
            now = time.monotonic()
            target = t0 + k * period
            if now < target:
                time.sleep(target - now)
                continue
            rgb, depth = frames[play[k % len(play)]]
            st = ns_to_stamp(stamp0 + int(k * period * 1e9))
            try:
                p_info.publish(intrinsics_to_camera_info(seq.intrinsics, st, CAM))
                p_rgb.publish(numpy_to_image(rgb, "rgb8", st, CAM))
                p_depth.publish(depth_to_image(depth, "16UC1", st, CAM))
            except Exception as e:  # seen once at load ~21: "cannot publish data" (DDS)
                publish_errors += 1
                if publish_errors > 100:
                    raise
                print(f"publish failed ({publish_errors}): {e}", flush=True)
            k += 1
            if now >= next_sample:
                next_sample += 10.0
                try:
                    s = nol.buffer_status(timeout_s=5.0)
                except TimeoutError:
                    s = None
                tr = s.tracking if s is not None else None
                samples.append({"t_s": round(now - t0, 1),
                                "rss_mb": round(rss_mb(node_proc.pid), 1),
                                "published": k,
                                "received": s.frames_received if s else -1,
                                "tracked": tr.frames_tracked if tr else -1,
                                "skipped": tr.frames_skipped if tr else -1,
                                "untrusted": tr.frames_tf_withheld if tr else -1,
                                "relocalised": tr.frames_relocalised if tr else -1,
                                "keyframes": tr.keyframes if tr else -1,
                                "load": round(os.getloadavg()[0], 2)})
                print(json.dumps(samples[-1]), flush=True)
    finally:
        nol.destroy()
        rclpy.shutdown()
        node_proc.terminate()
        try:
            node_proc.wait(20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
    warm = [s for s in samples if s["t_s"] <= a.warmup_minutes * 60]
    late = [s for s in samples if s["t_s"] > a.warmup_minutes * 60]
    if not warm or not late:
        print("too short to judge: give --minutes > --warmup-minutes")
        return 1
    base = warm[-1]["rss_mb"]
    peak = max(s["rss_mb"] for s in late)
    growth = (peak - base) / base
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "minutes": a.minutes, "warmup_minutes": a.warmup_minutes, "rate_hz": a.rate,
              "rss_after_warmup_mb": base, "rss_peak_after_mb": peak,
              "rss_end_mb": late[-1]["rss_mb"], "growth": growth, "samples": samples}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1))
    print(f"\nresident memory of the node: {base:.0f} MB after {a.warmup_minutes:g} min warm-up, "
          f"peak {peak:.0f} MB later, {late[-1]['rss_mb']:.0f} MB at the end: growth "
          f"{growth * 100:+.1f} % (limit {a.max_growth * 100:.0f} %); frames published "
          f"{samples[-1]['published']}, tracked {samples[-1]['tracked']}, skipped "
          f"{samples[-1]['skipped']}, keyframes {samples[-1]['keyframes']}")
    if growth >= a.max_growth:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
