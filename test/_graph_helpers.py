"""Helpers for the ROS graph tests: nodes in this process on their own multi-threaded executor
(spun in a background thread, as run_nodes spins them), service calls and waits with timeouts,
command-line processes, and checks of a learnt workspace against the synthetic ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see nol_ros.ros.runtime.default_ros_env

BIN = Path(sys.executable).parent
MIN_DEADLINE_S = 60.0


class Graph:
    """Nodes of one rclpy context spun by a MultiThreadedExecutor in a background thread."""

    def __init__(self, context, threads: int = 6):
        from rclpy.executors import MultiThreadedExecutor

        self.ctx = context
        self.ex = MultiThreadedExecutor(num_threads=threads, context=context)
        self.nodes = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set() and self.ctx.ok():
            try:
                self.ex.spin_once(timeout_sec=0.05)
            except Exception:  # shutting down
                if self._stop.is_set():
                    return
                raise

    def add(self, node):
        self.nodes.append(node)
        self.ex.add_node(node)
        return node

    def client_node(self, name="test_client"):
        import rclpy

        return self.add(rclpy.create_node(name, context=self.ctx))

    @staticmethod
    def wait(pred, timeout: float, what: str = "a condition", period: float = 0.05):
        """Poll ``pred`` until it holds. The deadline only decides when a test that is failing
        anyway gives up, never whether it passes: at least MIN_DEADLINE_S, so a loaded machine
        does not trip it."""
        timeout = max(timeout, MIN_DEADLINE_S)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return
            time.sleep(period)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def call(self, client, request, timeout: float = 60.0):
        self.wait(client.service_is_ready, 30, f"service {client.srv_name}")
        done = threading.Event()
        fut = client.call_async(request)
        fut.add_done_callback(lambda _f: done.set())
        assert done.wait(timeout), f"{client.srv_name} did not answer within {timeout} s"
        return fut.result()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for n in self.nodes:
            self.ex.remove_node(n)
            n.destroy_node()
        self.ex.shutdown()


def params(**kw):
    """parameter_overrides from keyword arguments (``__`` stands for ``.``)."""
    from rclpy.parameter import Parameter

    return [Parameter(k.replace("__", "."), value=v) for k, v in kw.items()]


def nol_ros(*args, timeout: float = 120.0, **kw) -> subprocess.CompletedProcess:
    """Run the nol-ros console script; returns the completed process (text output)."""
    return subprocess.run([str(BIN / "nol-ros"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kw)


def wait_job(graph: Graph, status_client, job_id: str, timeout: float = 600.0):
    from nol_ros.msg import JobProgress
    from nol_ros.srv import GetJobStatus

    t0 = time.monotonic()
    while True:
        st = graph.call(status_client, GetJobStatus.Request(job_id=job_id))
        if st.found and st.status.state >= JobProgress.STATE_SUCCEEDED:
            return st
        assert time.monotonic() - t0 < timeout, f"job {job_id} did not finish: {st}"
        time.sleep(0.5)


def gt_by_stamp(scene_dir) -> dict:
    from nol_ros.datasets.bop import read_bop_scene

    return {f.stamp_ns: f.T_world_camera for f in read_bop_scene(scene_dir).frames}


def workspace_errors(ws: Path, name: str, scene_dir: Path, models_dir: Path, obj_id: int) -> dict:
    """ATE of the workspace's trajectory (frames matched to the ground truth by stamp), and the
    registered object's translation / rotation error (modulo its geometric symmetries) after
    the same alignment."""
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.mesh import load_mesh
    from nol_ros.metrics import ate_rmse, geometric_symmetries, rotation_error_sym_deg

    seq = read_bop_scene(scene_dir, models_dir)
    gt = {f.stamp_ns: f.T_world_camera for f in seq.frames}
    traj = json.loads((ws / "trajectory.json").read_text())
    est = [np.array(t["T_world_camera"]) for t in traj if t["stamp_ns"] in gt]
    ref = [gt[t["stamp_ns"]] for t in traj if t["stamp_ns"] in gt]
    ate, A = ate_rmse(est, ref)
    out = {"ate_m": ate, "frames": len(est)}
    obj = json.loads((ws / "objects" / name / "object.json").read_text())
    T = A @ np.array(obj["T_world_object"])
    info = next(o for o in seq.objects if o.obj_id == obj_id)
    m = load_mesh(info.mesh_path)
    out["t_err_m"] = float(np.linalg.norm(T[:3, 3] - info.T_world_object[:3, 3]))
    out["r_err_deg"] = rotation_error_sym_deg(T, info.T_world_object,
                                              geometric_symmetries(m.vertices, m.faces))
    views = json.loads((ws / "objects" / name / "views.json").read_text())
    out["views"], out["coverage"] = len(views["views"]), views["coverage"]
    return out
