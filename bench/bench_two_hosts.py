"""Robot + workstation over ROS 2 on one machine (two network namespaces and a veth pair, as in
test/test_two_hosts.py; root needed): what crosses the link, per topic and per transfer.

    .venv/bin/python bench/bench_two_hosts.py                 # tiny render/train presets
    .venv/bin/python bench/bench_two_hosts.py --preset demo   # the demo's grid and training

Both hosts run the deployment graphs with ``nol-ros bringup`` (robot_remote: reconstruction,
view_selection, transfer, recognizer; workstation: nol, trainer, transfer), one process per node,
the project's parameter files. Measured:

1. idle: bytes per second on the link with both graphs up and nothing asked (DDS discovery and
   liveliness);
2. ``nol-ros remote-learn --package`` of the small world's mustard bottle: the package and the
   models folder (bytes, chunks, seconds, MB/s), and every byte on the link during each step;
   a monitor on the robot subscribed to the workstation's progress and status topics counts
   their messages and bytes (what a robot-side UI costs);
3. a camera stream sent across (640x480 rgb8 + 16UC1 depth at 30 Hz for 10 s, e.g. a
   workstation viewer): frames received and link bytes per second with a best-effort and with a
   reliable subscriber.

Prints one JSON document (``--out`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from nol_ros.processes import stop_processes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))
CACHE = ROOT / ".nol_bench" / "two_hosts"
NOL_ROS = str(Path(sys.executable).with_name("nol-ros"))


# -- helpers run inside a namespace ---------------------------------------------------------------
def monitor(topics: list[str], seconds: float, reliable: bool) -> None:
    """Subscribe to ``topics`` (raw bytes) for ``seconds`` (or until SIGINT); print counts."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from nol_ros.ros.bag_replay import msg_class

    rclpy.init()
    node = rclpy.create_node("bench_monitor")
    counts = {t: [0, 0] for t in topics}
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable
                     else ReliabilityPolicy.BEST_EFFORT)
    pending = set(topics)
    stop = {"flag": False}
    signal.signal(signal.SIGINT, lambda *a: stop.update(flag=True))
    t0 = time.monotonic()
    while not stop["flag"] and time.monotonic() - t0 < seconds:
        known = dict(node.get_topic_names_and_types())
        for t in list(pending):
            if t in known:
                def cb(data, t=t):
                    counts[t][0] += 1
                    counts[t][1] += len(data)
                node.create_subscription(msg_class(known[t][0]), t, cb, qos, raw=True)
                pending.discard(t)
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({t: {"messages": c[0], "bytes": c[1]} for t, c in counts.items()}),
          flush=True)
    rclpy.shutdown()


def camera(seconds: float, rate: float) -> None:
    """Publish 640x480 rgb8 + 16UC1 images at ``rate`` Hz (reliable, depth 5, like the
    openni2 driver) for ``seconds``."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_camera")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    prgb = node.create_publisher(Image, "/robot/bench_camera/rgb/image_raw", qos)
    pdep = node.create_publisher(Image, "/robot/bench_camera/depth_registered/image_raw", qos)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (480, 640, 3), np.uint8).tobytes()
    dep = rng.integers(500, 3000, (480, 640), np.uint16).tobytes()
    time.sleep(3.0)                                 # discovery
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        for pub, data, enc, step in ((prgb, rgb, "rgb8", 640 * 3), (pdep, dep, "16UC1", 1280)):
            m = Image(height=480, width=640, encoding=enc, step=step, data=data)
            m.header.frame_id = "camera_rgb_optical_frame"
            pub.publish(m)
        k += 1
        time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
    print(json.dumps({"published_pairs": k}), flush=True)
    rclpy.shutdown()


# -- the benchmark --------------------------------------------------------------------------------
def _package() -> Path:
    from bench_scale import default_object

    from nol_ros.handoff import pack_learnt_object

    root, name = default_object()                   # self-annotated once, cached
    world = ROOT / ".nol_bench" / "scale" / "world"
    out = CACHE / "package" / name
    if not (out / "package.json").is_file():
        pack_learnt_object(root / name, name, world / "train" / "000001", out)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_monitor":
        monitor(argv[3:], float(argv[1]), argv[2] == "reliable")
        return 0
    if argv and argv[0] == "_camera":
        camera(float(argv[1]), float(argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", help="render grid and training preset")
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--camera-s", type=float, default=10.0)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    from netns_hosts import TwoHosts

    pkg = _package()
    hosts = TwoHosts(tag="bench", net=211, domain_id=43).up()
    base = CACHE / "run"
    if base.exists():
        shutil.rmtree(base)
    procs = []
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    res: dict = {"preset": a.preset, "date": time.strftime("%Y-%m-%d %H:%M")}

    def link_bytes():
        return {h: hosts.counters(h) for h in ("robot", "workstation")}

    def delta(b0, b1):
        return {"robot_to_workstation": b1["workstation"]["rx_bytes"] -
                b0["workstation"]["rx_bytes"],
                "workstation_to_robot": b1["robot"]["rx_bytes"] - b0["robot"]["rx_bytes"]}

    try:
        for host, graph, ns in (("robot", "robot_remote", "robot"),
                                ("workstation", "workstation", "workstation")):
            (base / host).mkdir(parents=True)
            log = open(base / f"{host}.log", "w")
            procs.append((hosts.popen(host, [NOL_ROS, "bringup", "--config", graph,
                                             f"namespace:={ns}"], env, cwd=base / host,
                                      stdout=log, stderr=subprocess.STDOUT), log))
        dst = base / "robot" / "nol_workspace" / "view_selection" / "1" / "packages" / pkg.name
        shutil.copytree(pkg, dst)
        time.sleep(15.0)                           # graphs up and discovered
        b0 = link_bytes()
        time.sleep(a.idle_s)
        res["idle_bytes_per_s"] = {k: v / a.idle_s for k, v in delta(b0, link_bytes()).items()}
        print(json.dumps(res), flush=True)
        topics = [f"/workstation/{n}" for n in ("nol/progress", "trainer/progress",
                                                "transfer/progress", "transfer/transfer_status")]
        mon = hosts.popen("robot", [sys.executable, __file__, "_monitor", "100000", "reliable",
                                    *topics], env, stdout=subprocess.PIPE, text=True)
        time.sleep(5.0)
        b1 = link_bytes()
        t1 = time.monotonic()
        p = hosts.popen("robot", [NOL_ROS, "remote-learn", pkg.name, "--package", str(dst),
                                  "--robot-ns", "/robot", "--workstation-ns", "/workstation",
                                  "--preset", a.preset, "--learn-options",
                                  f"{{render.preset: {a.preset}}}"], env, cwd=base / "robot",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"remote-learn failed:\n{err[-3000:]}")
        learn = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
        res["remote_learn"] = learn
        res["remote_learn_link_bytes"] = delta(b1, link_bytes())
        res["remote_learn_s"] = time.monotonic() - t1
        mon.send_signal(signal.SIGINT)
        res["topics_during_learn"] = json.loads(mon.communicate(timeout=60)[0].strip())
        for k in ("package_transfer", "models_transfer"):
            t = learn[k]
            t["mb_per_s"] = t["bytes_total"] / max(t["seconds"], 1e-9) / 1e6
        print(json.dumps(res), flush=True)
        for qos in ("best_effort", "reliable"):
            sub = hosts.popen("workstation", [sys.executable, __file__, "_monitor",
                                              str(a.camera_s + 8), qos,
                                              "/robot/bench_camera/rgb/image_raw",
                                              "/robot/bench_camera/depth_registered/image_raw"],
                              env, stdout=subprocess.PIPE, text=True)
            time.sleep(2.0)
            c0 = link_bytes()
            cam = hosts.popen("robot", [sys.executable, __file__, "_camera", str(a.camera_s),
                                        "30"], env, stdout=subprocess.PIPE, text=True)
            pub = json.loads(cam.communicate(timeout=300)[0].strip())
            c1 = link_bytes()
            got = json.loads(sub.communicate(timeout=300)[0].strip())
            res[f"camera_{qos}"] = {"published_pairs": pub["published_pairs"], "received": got,
                                    "link_bytes_per_s": {k: v / (a.camera_s + 3) for k, v in
                                                         delta(c0, c1).items()}}
            print(json.dumps(res[f"camera_{qos}"]), flush=True)
        res["load"] = os.getloadavg()
    finally:
        stop_processes([p for p, _ in procs], 30.0)
        for _, log in procs:
            log.close()
        hosts.down()
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
