"""A small client over the nodes' services, in the spirit of nav2_simple_commander: blocking
calls, jobs you can wait for, follow and cancel. Used by the demo, the graph benchmarks and the
graph tests; usable from any script::

    from nol_ros.learn import SOURCE_BAG

    rclpy.init()
    nol = NolClient(namespace="/robot")
    nol.wait_for_nodes()
    job = nol.learn_object("mug", "meshes/mug.ply", source=SOURCE_BAG, source_path="bags/b1")
    result = nol.wait(job, on_progress=print)           # JobResult: state, result_path, code
    nol.train_detector(["mug"]); nol.train_pose_estimator(["mug"])
    nol.replay("bags/test", into="recognizer")          # paced: every frame recognised
    nol.destroy()

The client owns a node and spins it while it waits (``spin=True``, a script's main thread); in a
process whose executor already spins the client's node (``spin=False``, e.g. the graph tests),
it only waits. Errors of refused requests come back as :class:`RequestRefused` with the node's
error code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile

from nol_ros.errors import NolError
from nol_ros.msg import JobProgress, RecognizerStatus
from nol_ros.progress import ProgressFn
from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig, receiver_pace
from nol_ros.srv import (
    CancelJob,
    GetBufferStatus,
    GetJobStatus,
    LearnObject,
    RenderViews,
    TrainDetector,
    TrainPoseEstimator,
)


class RequestRefused(NolError):
    """A node refused a request; ``code`` is the node's error code."""

    def __init__(self, message: str, code: str = "REFUSED"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Job:
    node: str          # "nol" or "trainer"
    job_id: str
    message: str = ""


@dataclass(frozen=True)
class JobResult:
    job_id: str
    state: int          # nol_ros/msg/JobProgress STATE_*
    succeeded: bool
    result_path: str
    error_code: str
    message: str


class NolClient:
    """See the module doc. ``namespace``: the nodes' namespace; ``names``: their node names if
    they differ from the defaults (nol, trainer, reconstruction, recognizer)."""

    def __init__(self, node=None, namespace: str = "", spin: bool = True, context=None,
                 names: dict[str, str] | None = None):
        self.ns = namespace.rstrip("/")
        self.names = {"nol": "nol", "trainer": "trainer", "reconstruction": "reconstruction",
                      "recognizer": "recognizer", **(names or {})}
        self._own = node is None
        self.node = node or rclpy.create_node("nol_client", context=context)
        self.spin = spin
        self._lock = threading.Lock()
        self.progress: dict[str, object] = {}     # job id -> last JobProgress
        self.recognizer_status: list = []
        n = self.node

        def svc(kind, name, srv):
            return n.create_client(srv, f"{self.ns}/{self.names[kind]}/{name}")

        self._learn = svc("nol", "learn_object", LearnObject)
        self._render = svc("nol", "render_views", RenderViews)
        self._train = {"detector": svc("trainer", "train_detector", TrainDetector),
                       "pose": svc("trainer", "train_pose_estimator", TrainPoseEstimator)}
        self._status = {k: svc(k, "get_job_status", GetJobStatus) for k in ("nol", "trainer")}
        self._cancel = {k: svc(k, "cancel_job", CancelJob) for k in ("nol", "trainer")}
        self._buffer = svc("reconstruction", "get_buffer_status", GetBufferStatus)
        for k in ("nol", "trainer"):
            n.create_subscription(JobProgress, f"{self.ns}/{self.names[k]}/progress",
                                  self._on_progress, 100)
        n.create_subscription(RecognizerStatus, f"{self.ns}/{self.names['recognizer']}/status",
                              self._on_rec_status,
                              QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))

    # -- plumbing ------------------------------------------------------------------------------
    def _on_progress(self, m) -> None:
        with self._lock:
            self.progress[m.job_id] = m

    def _on_rec_status(self, m) -> None:
        with self._lock:
            self.recognizer_status.append(m)
            del self.recognizer_status[:-5]

    def wait_until(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Spin (or, with spin=False, sleep) until ``pred()``; TimeoutError naming ``what``."""
        t0 = time.monotonic()
        while True:
            if pred():
                return
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            if self.spin:
                rclpy.spin_once(self.node, timeout_sec=0.05)
            else:
                time.sleep(0.05)

    def call(self, client, request, timeout_s: float = 60.0):
        self.wait_until(client.service_is_ready, timeout_s, f"service {client.srv_name}")
        fut = client.call_async(request)
        self.wait_until(fut.done, timeout_s, f"a reply from {client.srv_name}")
        return fut.result()

    def wait_for_nodes(self, kinds=("nol", "trainer", "reconstruction"),
                       timeout_s: float = 120.0) -> None:
        clients = {"nol": self._learn, "trainer": self._train["detector"],
                   "reconstruction": self._buffer}
        self.wait_until(lambda: all(clients[k].service_is_ready() for k in kinds), timeout_s,
                        f"the {', '.join(kinds)} node(s)")

    # -- jobs ----------------------------------------------------------------------------------
    def learn_object(self, name: str, mesh_path: str = "", source: int = 1,
                     source_path: str = "", options_yaml: str = "") -> Job:
        """LearnObject (source: 0 live buffer, 1 bag, 2 dataset) -> the queued job."""
        r = self.call(self._learn, LearnObject.Request(
            object_name=name, mesh_path=str(mesh_path), source=int(source),
            source_path=str(source_path), options_yaml=options_yaml))
        if not r.accepted:
            raise RequestRefused(f"LearnObject {name}: {r.message}", r.error_code)
        return Job("nol", r.job_id, r.message)

    def _train_stage(self, stage: str, objects, preset: str, options_yaml: str) -> Job:
        srv = TrainDetector if stage == "detector" else TrainPoseEstimator
        r = self.call(self._train[stage], srv.Request(object_names=list(objects),
                                                      preset=preset, options_yaml=options_yaml))
        if not r.accepted:
            raise RequestRefused(f"{srv.__name__}: {r.message}", r.error_code)
        return Job("trainer", r.job_id, r.message)

    def train_detector(self, objects=(), preset: str = "", options_yaml: str = "") -> Job:
        return self._train_stage("detector", objects, preset, options_yaml)

    def train_pose_estimator(self, objects=(), preset: str = "", options_yaml: str = "") -> Job:
        return self._train_stage("pose", objects, preset, options_yaml)

    def result(self, job: Job) -> JobResult:
        st = self.call(self._status[job.node], GetJobStatus.Request(job_id=job.job_id))
        if not st.found:
            raise RequestRefused(f"job {job.job_id}: {st.message}", st.error_code)
        return JobResult(job.job_id, st.status.state,
                         st.status.state == JobProgress.STATE_SUCCEEDED, st.result_path,
                         st.error_code, st.message)

    def wait(self, job: Job, timeout_s: float = 3600.0,
             on_progress: ProgressFn | None = None) -> JobResult:
        """Wait until ``job`` ends; ``on_progress(stage, fraction, message)`` for its updates
        (from ~/progress). Returns its JobResult."""
        seen = [None]

        def done():
            with self._lock:
                p = self.progress.get(job.job_id)
            if p is not None and p is not seen[0] and on_progress is not None:
                seen[0] = p
                on_progress(p.stage, float(p.fraction), p.message)
            return p is not None and p.state >= JobProgress.STATE_SUCCEEDED

        try:
            self.wait_until(done, timeout_s, f"job {job.job_id}")
        except TimeoutError:
            pass   # the status call below tells what state it is in
        return self.result(job)

    def cancel(self, job: Job) -> bool:
        return bool(self.call(self._cancel[job.node], CancelJob.Request(job_id=job.job_id))
                    .success)

    # -- the live side -------------------------------------------------------------------------
    def buffer_status(self):
        return self.call(self._buffer, GetBufferStatus.Request())

    def frames_tracked(self) -> int:
        """Frames the reconstruction node is done with (tracked or not, or rejected)."""
        s = self.buffer_status()
        t = s.tracking
        return min(s.frames_received + s.frames_dropped,
                   s.frames_dropped + t.frames_tracked + t.frames_skipped
                   + t.frames_without_odometry + t.frames_tf_refused)

    def frames_recognised(self) -> int:
        """Frames the recognizer node is done with (from its latched ~/status)."""
        with self._lock:
            s = self.recognizer_status[-1] if self.recognizer_status else None
        return 0 if s is None else s.frames_processed + s.frames_rejected + s.frames_dropped_busy

    def replay(self, bag: str, into: str = "reconstruction", rate: float = 0.0,
               remap: tuple = (), pace_topic: str = "/camera/rgb/image_raw"):
        """Play a rosbag2 into the graph. rate 0: paced by ``into`` (reconstruction: its
        tracking, one frame in flight; recognizer: its status, one frame at a time), so every
        frame is processed on any machine; rate > 0: the bag's timing, scaled. Returns the
        replay statistics."""
        if rate > 0:
            player = BagPlayer(self.node, ReplayConfig(bag=str(bag), rate=rate, remap=remap,
                                                       wait_for_subscribers_s=30.0))
        else:
            count = {"reconstruction": self.frames_tracked,
                     "recognizer": self.frames_recognised}[into]
            base = count()
            player = BagPlayer(self.node, ReplayConfig(bag=str(bag), remap=remap,
                                                       wait_for_subscribers_s=30.0,
                                                       pace_topic=pace_topic),
                               receiver_pace(lambda: count() - base, self.wait_until,
                                             lag=1 if into == "reconstruction" else 0))
        try:
            return player.run()
        finally:
            player.close()

    def destroy(self) -> None:
        if self._own:
            self.node.destroy_node()
