"""Helpers for the ROS graph tests: nodes in this process on their own multi-threaded executor
(spun in a background thread, as run_nodes spins them), a NolClient on that executor for every
service call and job wait (``graph.client``, ``graph.client_in(namespace)``), waits with
timeouts, command-line processes, and checks of a learnt workspace against the synthetic ground
truth."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
MIN_DEADLINE_S = 60.0


class Graph:
    """Nodes of one rclpy context spun by a MultiThreadedExecutor in a background thread."""

    def __init__(self, context, threads: int = 6):
        from rclpy.executors import MultiThreadedExecutor

        self.ctx = context
        self.ex = MultiThreadedExecutor(num_threads=threads, context=context)
        self.nodes = []
        self._clients: dict = {}      # namespace -> NolClient
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

    def client_in(self, namespace: str = ""):
        """The NolClient of the nodes in ``namespace``, on its own client node of this graph
        (spun by the graph's executor)."""
        from nol_ros.ros.client import NolClient

        if namespace not in self._clients:
            node = self.client_node(f"nol_client_{len(self._clients)}")
            self._clients[namespace] = NolClient(node, namespace=namespace, spin=False)
        return self._clients[namespace]

    @property
    def client(self):
        """The NolClient of the nodes in the root namespace."""
        return self.client_in("")

    @staticmethod
    def wait(pred, timeout: float, what: str = "a condition", period: float = 0.05):
        """Poll ``pred`` until it holds. The deadline only decides when a test that is failing
        anyway gives up, never whether it passes: at least MIN_DEADLINE_S, so a loaded machine
        does not trip it."""
        from nol_ros.ros.client import wait_until

        wait_until(pred, max(timeout, MIN_DEADLINE_S), what, period)

    def call(self, client, request, timeout: float = 60.0):
        """One service call (``client``: an rclpy Client or a full service name) through the
        graph's NolClient; the reply, whatever it says."""
        return self.client.call(client, request, timeout, wait_for_service_s=MIN_DEADLINE_S)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for c in self._clients.values():
            c.destroy()
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
    """Wait for a job of the node whose ~/get_job_status ``status_client`` calls (an rclpy
    Client or the service name); its JobResult (``status``, ``result_path``, ``error_code``,
    ``message``), see NolClient.wait."""
    from nol_ros.ros.client import Job

    name = status_client if isinstance(status_client, str) else status_client.srv_name
    return graph.client.wait(Job(name.rsplit("/", 1)[0], job_id), timeout)


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
