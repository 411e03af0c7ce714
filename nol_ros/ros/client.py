"""The Python client of the nodes, in the spirit of nav2_simple_commander: blocking calls with
deadlines, jobs you can wait for, follow and cancel. The one way the demo, the ``nol-ros``
remote commands, the graph benchmarks and the graph tests talk to the nodes; usable from any
script::

    from nol_ros.learn import SOURCE_BAG

    rclpy.init()
    nol = NolClient(namespace="/robot")                 # spins its own node in a thread
    nol.wait_for_nodes()
    job = nol.learn_object("mug", "meshes/mug.ply", source=SOURCE_BAG, source_path="bags/b1")
    result = nol.wait(job, on_progress=print)           # JobResult: state, result_path, code
    nol.wait(nol.train_detector(["mug"])).check("detector training")
    nol.replay("bags/test", into="recognizer")          # paced: every frame recognised
    nol.destroy()

Spinning: with ``spin=True`` (the default) the client spins its node on its own executor in a
background thread, so every call blocks only the caller; the node must not belong to another
executor. With ``spin=False`` someone else's executor spins the node (a graph of nodes in one
process, as the graph tests run them) and the client only waits. Either way, call it from any
thread but the one that spins its node.

Errors: a request a node refuses raises :class:`RequestRefused` with the node's error code (and
its reply); a missing service or a missing reply raises
:class:`~nol_ros.ros.clients.ServiceTimeoutError` (SERVICE_UNAVAILABLE / SERVICE_TIMEOUT); a job
or condition that does not come within its deadline raises :class:`WaitTimeoutError`; a failed
job is a :class:`JobResult` whose ``check()`` raises :class:`JobFailed`. All are NolErrors with a
``code``; the timeouts are also TimeoutErrors, and each message names what was waited for.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import rclpy
from geometry_msgs.msg import Pose
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo
from std_srvs.srv import Trigger

from nol_ros.action import Learn
from nol_ros.errors import ConfigError, NolError
from nol_ros.msg import JobProgress, RecognizerStatus, TransferStatus
from nol_ros.progress import ProgressFn
from nol_ros.ros.clients import ServiceTimeoutError, call_service, create_service_client
from nol_ros.ros.conversions import intrinsics_to_camera_info, pose_from_matrix
from nol_ros.ros.runtime import spin_until_stopped
from nol_ros.srv import (
    CancelJob,
    ExportSequence,
    Fetch,
    GetBufferStatus,
    GetJobStatus,
    LearnObject,
    RenderViews,
    SaveMesh,
    SelectViews,
    TrainDetector,
    TrainPoseEstimator,
)

# the nodes a client talks to (their default names) and one service each that shows it is up
PROBES = {"nol": ("learn_object", LearnObject), "trainer": ("train_detector", TrainDetector),
          "view_selection": ("select_views", SelectViews), "transfer": ("fetch", Fetch),
          "reconstruction": ("get_buffer_status", GetBufferStatus),
          "recognizer": ("reload", Trigger)}
STATE_NAMES = {JobProgress.STATE_QUEUED: "QUEUED", JobProgress.STATE_RUNNING: "RUNNING",
               JobProgress.STATE_SUCCEEDED: "SUCCEEDED", JobProgress.STATE_FAILED: "FAILED",
               JobProgress.STATE_CANCELLED: "CANCELLED"}
_LATCHED = dict(durability=DurabilityPolicy.TRANSIENT_LOCAL)


class RequestRefused(NolError):
    """A node refused a request; ``code`` is the node's error code, ``reply`` its reply."""

    def __init__(self, message: str, code: str = "REFUSED", reply=None):
        super().__init__(message)
        self.code, self.reply = code, reply


class JobFailed(NolError):
    """A job ended FAILED or CANCELLED; ``code`` is the job's error code."""

    def __init__(self, message: str, code: str = "JOB_FAILED"):
        super().__init__(message)
        self.code = code


class WaitTimeoutError(NolError, TimeoutError):
    """A job (JOB_TIMEOUT) or a condition (TIMEOUT) did not come within its deadline."""

    def __init__(self, message: str, code: str = "TIMEOUT"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Job:
    """A job of a job-running node: ``node`` its full name (e.g. ``/robot/nol``)."""

    node: str
    job_id: str
    message: str = ""      # the node's reply when it accepted the job ("queued", ...)


@dataclass(frozen=True)
class JobResult:
    """The state of a job from its node's GetJobStatus; ``status`` the JobProgress in it."""

    job_id: str
    state: int             # nol_ros/msg/JobProgress STATE_*
    succeeded: bool
    result_path: str
    error_code: str
    message: str
    status: object = field(default=None, compare=False)

    @staticmethod
    def from_reply(job_id: str, st) -> JobResult:
        return JobResult(job_id, st.status.state,
                         st.status.state == JobProgress.STATE_SUCCEEDED, st.result_path,
                         st.error_code, st.message, st.status)

    @property
    def done(self) -> bool:
        return self.state >= JobProgress.STATE_SUCCEEDED

    def check(self, what: str = "") -> JobResult:
        """This result if the job succeeded; JobFailed (with the job's code) otherwise."""
        if not self.succeeded:
            code = self.error_code or getattr(self.status, "error_code", "") or "JOB_FAILED"
            raise JobFailed(f"{what or 'job'} (job {self.job_id}) ended "
                            f"{STATE_NAMES.get(self.state, self.state)}: {self.message}", code)
        return self


def transfer_dict(m) -> dict:
    """The figures of a nol_ros/msg/TransferStatus as a dict ({} for None)."""
    if m is None:
        return {}
    return {k: getattr(m, k) for k in ("transfer_id", "state", "chunks_total", "chunks_done",
                                       "chunks_resumed", "chunks_fetched", "bytes_total",
                                       "bytes_done", "wire_bytes", "retries", "seconds")}


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str,
               period_s: float = 0.05) -> None:
    """Poll ``pred`` until it holds; WaitTimeoutError naming ``what`` after ``timeout_s``."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise WaitTimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(period_s)


def _srv_type(request):
    """The service type of a request object (``LearnObject.Request`` -> ``LearnObject``)."""
    cls = type(request)
    return getattr(sys.modules[cls.__module__], cls.__name__.removesuffix("_Request"))


def _normalise_ns(namespace: str) -> str:
    ns = namespace.strip("/")
    return f"/{ns}" if ns else ""


class NolClient:
    """See the module doc. ``node``: a node to use (default: a new one named ``node_name``);
    ``namespace``: the nodes' namespace; ``names``: node names that differ from the defaults
    (keys of PROBES; an absolute name ignores the namespace); ``timeout_s``: the default
    deadline of one service call (waiting for the service, and for its reply)."""

    def __init__(self, node=None, namespace: str = "", spin: bool = True, context=None,
                 names: dict[str, str] | None = None, node_name: str = "nol_client",
                 timeout_s: float = 120.0):
        unknown = set(names or {}) - set(PROBES)
        if unknown:
            raise ConfigError(f"NolClient names: unknown node kind(s) {sorted(unknown)}; "
                              f"known: {sorted(PROBES)}")
        self.ns = _normalise_ns(namespace)
        self.names = {**{k: k for k in PROBES}, **(names or {})}
        self.timeout_s = timeout_s
        self._own = node is None
        self.node = node if node is not None else rclpy.create_node(node_name, context=context)
        self._lock = threading.Lock()
        self._clients: dict = {}                  # (service name, type) -> rclpy Client
        self._actions: dict = {}
        self._subs: list = []
        self._watched: set[str] = set()           # job nodes whose ~/progress we follow
        self._progress: dict[tuple[str, str], object] = {}     # (node, job id) -> JobProgress
        self._transfers: dict[tuple[str, str], list] = {}      # (node, job id) -> [Transfer..]
        self._transfer_nodes: set[str] = set()
        self._rec_status: list | None = None
        self._stop = threading.Event()
        self._executor = self._thread = None
        if spin:
            if self.node.executor is not None:
                raise ConfigError(f"node {self.node.get_name()} already belongs to an executor; "
                                  "pass spin=False (that executor must spin it) or a new node")
            self._executor = SingleThreadedExecutor(context=self.node.context)
            self._executor.add_node(self.node)
            self._thread = threading.Thread(target=self._spin, daemon=True,
                                            name=f"{self.node.get_name()}_spin")
            self._thread.start()

    # -- plumbing ------------------------------------------------------------------------------
    def _spin(self) -> None:
        spin_until_stopped(self._executor, self._stop, self.node.context,
                           lambda m: self.node.get_logger().error(f"NolClient: {m}"))

    def path(self, kind: str, name: str = "") -> str:
        """The full name of node ``kind`` (see PROBES), or of its service/topic ``name``."""
        n = self.names[kind]
        base = n if n.startswith("/") else f"{self.ns}/{n}"
        return f"{base}/{name}" if name else base

    def _client(self, srv_type, service: str):
        key = (service, srv_type)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = create_service_client(self.node, srv_type, service)
            return self._clients[key]

    def call(self, service, request, timeout_s: float | None = None,
             wait_for_service_s: float | None = None):
        """One service call: ``service`` a full service name (its type is the request's) or an
        rclpy Client; returns the reply, whatever it says. The low-level door for requests no
        method below makes (and for tests that send malformed ones on purpose)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        client = self._client(_srv_type(request), service) if isinstance(service, str) \
            else service
        return call_service(client, request, timeout_s,
                            timeout_s if wait_for_service_s is None else wait_for_service_s)

    def wait_until(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``pred`` until it holds (the node is spun meanwhile, by this client's thread or
        by its owner); WaitTimeoutError naming ``what``."""
        wait_until(pred, timeout_s, what)

    def _probe(self, kind: str):
        service, srv_type = PROBES[kind]
        return self._client(srv_type, self.path(kind, service))

    def ready(self, kinds: Iterable[str] = ("nol", "trainer", "reconstruction")) -> bool:
        """Whether every node of ``kinds`` serves now (one service each, PROBES)."""
        return all(self._probe(k).service_is_ready() for k in kinds)

    def wait_for_nodes(self, kinds: Iterable[str] = ("nol", "trainer", "reconstruction"),
                       timeout_s: float = 120.0) -> None:
        """Until every node of ``kinds`` serves (:meth:`ready`); ServiceTimeoutError
        (SERVICE_UNAVAILABLE) naming the missing ones."""
        kinds = list(kinds)
        try:
            self.wait_until(lambda: self.ready(kinds), timeout_s, "")
        except WaitTimeoutError:
            missing = [self.path(k) for k in kinds if not self.ready([k])]
            raise ServiceTimeoutError(
                f"node(s) {', '.join(missing)} not available (waited {timeout_s:.0f} s); are "
                "they running in this namespace and ROS domain?", "SERVICE_UNAVAILABLE") from None

    def _subscribe(self, msg_type, topic: str, cb, qos) -> None:
        with self._lock:
            self._subs.append(self.node.create_subscription(msg_type, topic, cb, qos))

    def _watch(self, node: str) -> None:
        """Follow ~/progress of the job node ``node`` (subscribed before its first job)."""
        if node in self._watched:
            return
        self._watched.add(node)

        def on_progress(m, node=node):
            with self._lock:
                self._progress[(node, m.job_id)] = m

        self._subscribe(JobProgress, f"{node}/progress", on_progress, 100)

    # -- jobs ----------------------------------------------------------------------------------
    def job(self, node: str, job_id: str) -> Job:
        """A Job by id: ``node`` a kind (see PROBES) or a node's full name."""
        return Job(self.path(node) if node in self.names else node, job_id)

    def _submit(self, kind: str, service: str, request, what: str) -> Job:
        node = self.path(kind)
        self._watch(node)
        r = self.call(f"{node}/{service}", request)
        if not r.accepted:
            raise RequestRefused(f"{what} refused [{r.error_code}]: {r.message}",
                                 r.error_code or "REFUSED", r)
        return Job(node, r.job_id, r.message)

    def learn_object(self, name: str, mesh_path: str = "", source: int = 1,
                     source_path: str = "", options_yaml: str = "") -> Job:
        """LearnObject on the nol node (source: 0 live buffer, 1 bag, 2 dataset, 3 workspace
        package) -> the queued job; its result_path is the object's workspace."""
        return self._submit("nol", "learn_object", LearnObject.Request(
            object_name=name, mesh_path=str(mesh_path), source=int(source),
            source_path=str(source_path), options_yaml=options_yaml), f"LearnObject {name}")

    def train_detector(self, objects: Sequence[str] = (), preset: str = "",
                       options_yaml: str = "") -> Job:
        """TrainDetector on the trainer node (objects: empty = every learnt one)."""
        return self._submit("trainer", "train_detector", TrainDetector.Request(
            object_names=list(objects), preset=preset, options_yaml=options_yaml),
            "TrainDetector")

    def train_pose_estimator(self, objects: Sequence[str] = (), preset: str = "",
                             options_yaml: str = "") -> Job:
        """TrainPoseEstimator on the trainer node; its result_path is the models folder once
        both stages are trained."""
        return self._submit("trainer", "train_pose_estimator", TrainPoseEstimator.Request(
            object_names=list(objects), preset=preset, options_yaml=options_yaml),
            "TrainPoseEstimator")

    def select_views(self, names: Sequence[str] = (), mesh_paths: Sequence[str] = (),
                     sequence_path: str = "", workspace: str = "") -> Job:
        """SelectViews on the view_selection node (names: empty = its configured objects;
        sequence_path: empty = the reconstruction node's buffer)."""
        return self._submit("view_selection", "select_views", SelectViews.Request(
            object_names=list(names), mesh_paths=[str(m) for m in mesh_paths],
            sequence_path=str(sequence_path), workspace=str(workspace)),
            f"SelectViews {', '.join(names) or '(configured objects)'}")

    def fetch(self, peer: str, remote_path: str, local_path: str, max_chunks: int = 0) -> Job:
        """Fetch on the transfer node: pull ``remote_path`` of transfer node ``peer`` into
        ``local_path`` under its root. Its ~/transfer_status: :meth:`transfer_updates`,
        :meth:`transfer_status`, ``wait(on_transfer=...)``."""
        node = self.path("transfer")
        if node not in self._transfer_nodes:
            self._transfer_nodes.add(node)

            def on_status(m, node=node):
                with self._lock:
                    self._transfers.setdefault((node, m.job_id), []).append(m)

            self._subscribe(TransferStatus, f"{node}/transfer_status", on_status,
                            QoSProfile(depth=50, **_LATCHED))
        return self._submit("transfer", "fetch", Fetch.Request(
            peer=peer, remote_path=str(remote_path), local_path=str(local_path),
            max_chunks=int(max_chunks)), f"Fetch {peer}:{remote_path}")

    def job_status(self, job: Job):
        """The node's GetJobStatus reply for ``job`` (an empty id: its most recent job)."""
        return self.call(f"{job.node}/get_job_status", GetJobStatus.Request(job_id=job.job_id))

    def result(self, job: Job) -> JobResult:
        """The job's state now; RequestRefused (UNKNOWN_JOB) if its node does not know it."""
        st = self.job_status(job)
        if not st.found:
            raise RequestRefused(f"job {job.job_id} on {job.node}: {st.message}",
                                 st.error_code or "UNKNOWN_JOB", st)
        return JobResult.from_reply(job.job_id, st)

    def progress(self, job: Job):
        """The job's last nol_ros/msg/JobProgress from its node's ~/progress (None before the
        first)."""
        with self._lock:
            return self._progress.get((job.node, job.job_id))

    def wait(self, job: Job, timeout_s: float | None = 3600.0,
             on_progress: ProgressFn | None = None,
             on_transfer: Callable[[object], None] | None = None,
             poll_s: float = 0.5) -> JobResult:
        """Block until ``job`` ends (its ~/progress says so, or its status, asked every
        ``poll_s``); its JobResult, whether it succeeded or not (``.check()`` raises if not).
        ``on_progress(stage, fraction, message)`` for each progress update, ``on_transfer(msg)``
        for each TransferStatus of a fetch. WaitTimeoutError (JOB_TIMEOUT) after ``timeout_s``
        (None: no deadline)."""
        self._watch(job.node)
        t0 = time.monotonic()
        next_poll, seen, n_transfer, ended_checked = t0, None, 0, False
        while True:
            p = self.progress(job)
            if p is not None and p is not seen:
                seen = p
                if on_progress is not None:
                    on_progress(p.stage, float(p.fraction), p.message)
            if on_transfer is not None:
                new = self.transfer_updates(job)[n_transfer:]
                n_transfer += len(new)
                for m in new:
                    on_transfer(m)
            ended = p is not None and p.state >= JobProgress.STATE_SUCCEEDED
            if time.monotonic() >= next_poll or (ended and not ended_checked):
                ended_checked = ended
                res = self.result(job)
                if res.done:
                    return res
                next_poll = time.monotonic() + poll_s
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                last = f"; last: {STATE_NAMES.get(p.state)} {p.stage} {p.fraction:.0%}" if p \
                    else ""
                raise WaitTimeoutError(f"job {job.job_id} on {job.node} did not end within "
                                       f"{timeout_s:.0f} s{last}", "JOB_TIMEOUT")
            time.sleep(0.05)

    def cancel(self, job: Job) -> bool:
        """CancelJob: True if the node cancelled it or will at its next progress step."""
        return bool(self.call(f"{job.node}/cancel_job", CancelJob.Request(job_id=job.job_id))
                    .success)

    def transfer_updates(self, job: Job) -> list:
        """Every TransferStatus of a fetch job received so far, in order."""
        with self._lock:
            return list(self._transfers.get((job.node, job.job_id), ()))

    def transfer_status(self, job: Job, timeout_s: float = 60.0):
        """The fetch's final TransferStatus (DONE, PAUSED, FAILED or CANCELLED), waiting up to
        ``timeout_s`` for it (it follows the job's end); else the latest one, or None."""
        def final():
            u = self.transfer_updates(job)
            return bool(u) and u[-1].state >= TransferStatus.STATE_DONE

        try:
            self.wait_until(final, timeout_s, f"the final transfer status of job {job.job_id}")
        except WaitTimeoutError:
            pass
        u = self.transfer_updates(job)
        return u[-1] if u else None

    def learn_goal(self, name: str, mesh_path: str = "", source: int = 1,
                   source_path: str = "", options_yaml: str = "",
                   on_feedback: Callable[[object], None] | None = None,
                   timeout_s: float = 3600.0):
        """The nol node's ~/learn action (LearnObject as a goal): blocks until the goal ends;
        returns its GetResult reply (``.status``: action_msgs GoalStatus, ``.result``: the
        Learn result). ``on_feedback(Learn.Feedback)`` for each feedback."""
        name_ = self.path("nol", "learn")
        with self._lock:
            act = self._actions.get(name_) or self._actions.setdefault(
                name_, ActionClient(self.node, Learn, name_))
        self.wait_until(act.server_is_ready, self.timeout_s, f"the action server {name_}")
        sent = act.send_goal_async(
            Learn.Goal(object_name=name, mesh_path=str(mesh_path), source=int(source),
                       source_path=str(source_path), options_yaml=options_yaml),
            feedback_callback=None if on_feedback is None
            else (lambda m: on_feedback(m.feedback)))
        self.wait_until(sent.done, self.timeout_s, f"the goal response of {name_}")
        handle = sent.result()
        if not handle.accepted:
            raise RequestRefused(f"{name_}: goal {name} rejected")
        res = handle.get_result_async()
        self.wait_until(res.done, timeout_s, f"the result of the {name_} goal {name}")
        return res.result()

    # -- services ------------------------------------------------------------------------------
    def _ok(self, reply, what: str):
        if not reply.success:
            raise RequestRefused(f"{what} failed [{reply.error_code}]: {reply.message}",
                                 reply.error_code or "REFUSED", reply)
        return reply

    def render_views(self, name: str, poses, camera, refine: bool = False,
                     timeout_s: float = 600.0):
        """RenderViews: the learnt object ``name`` in ``poses`` (T_camera_object: 4x4 arrays or
        geometry_msgs/Pose) seen by ``camera`` (nol_ros.camera.Intrinsics or CameraInfo).
        Returns the reply (``images`` rgb8, ``masks`` mono8, one per pose); RequestRefused
        with the node's code (UNKNOWN_OBJECT, BAD_POSE, BAD_CAMERA_INFO ...)."""
        poses = [p if isinstance(p, Pose) else pose_from_matrix(p) for p in poses]
        info = camera if isinstance(camera, CameraInfo) else intrinsics_to_camera_info(camera)
        r = self.call(self.path("nol", "render_views"), RenderViews.Request(
            object_name=name, poses=poses, camera_info=info, refine=refine), timeout_s)
        return self._ok(r, f"RenderViews {name}")

    def buffer_status(self, timeout_s: float | None = None):
        """The reconstruction node's GetBufferStatus reply."""
        return self.call(self.path("reconstruction", "get_buffer_status"),
                         GetBufferStatus.Request(), timeout_s)

    def export_sequence(self, output_dir: str = "", step: int = 0, timeout_s: float = 600.0):
        """ExportSequence: the reconstruction node writes its buffer as a BOP scene; the reply
        (``path``, ``frames``, ``unchanged`` ...); RequestRefused with its code (NO_FRAMES,
        BAD_PATH ...)."""
        r = self.call(self.path("reconstruction", "export_sequence"),
                      ExportSequence.Request(output_dir=str(output_dir), step=int(step)),
                      timeout_s)
        return self._ok(r, "ExportSequence")

    def save_mesh(self, path: str, timeout_s: float = 600.0):
        """SaveMesh: the reconstruction node integrates its buffer and writes the scene mesh;
        the reply (``path``, ``triangles`` ...); RequestRefused with its code."""
        r = self.call(self.path("reconstruction", "save_mesh"), SaveMesh.Request(path=str(path)),
                      timeout_s)
        return self._ok(r, "SaveMesh")

    def frames_tracked(self) -> int:
        """Frames the reconstruction node is done with (tracked or not, or rejected)."""
        s = self.buffer_status()
        t = s.tracking
        return min(s.frames_received + s.frames_dropped,
                   s.frames_dropped + t.frames_tracked + t.frames_skipped
                   + t.frames_without_odometry + t.frames_tf_refused)

    @property
    def recognizer_status(self) -> list:
        """The recognizer's last RecognizerStatus messages (latched ~/status; subscribed on
        first use), newest last."""
        with self._lock:
            subscribe = self._rec_status is None
            if subscribe:
                self._rec_status = []
        if subscribe:
            def on_status(m):
                with self._lock:
                    self._rec_status.append(m)
                    del self._rec_status[:-5]

            self._subscribe(RecognizerStatus, self.path("recognizer", "status"), on_status,
                            QoSProfile(depth=1, **_LATCHED))
        return self._rec_status

    def frames_recognised(self) -> int:
        """Frames the recognizer node is done with (from its latched ~/status)."""
        st = self.recognizer_status
        with self._lock:
            s = st[-1] if st else None
        return 0 if s is None else s.frames_processed + s.frames_rejected + s.frames_dropped_busy

    def replay(self, bag: str, into: str = "reconstruction", rate: float = 0.0,
               remap: tuple = (), pace_topic: str = "/camera/rgb/image_raw"):
        """Play a rosbag2 into the graph. rate 0: paced by ``into`` (reconstruction: its
        tracking, one frame in flight; recognizer: its status, one frame at a time, and the
        camera topics only), so every frame is processed on any machine; rate > 0: the bag's
        timing, scaled. Returns the replay statistics."""
        # lazy: rosbags, only for a client that replays a bag
        from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig, receiver_pace

        if rate > 0:
            player = BagPlayer(self.node, ReplayConfig(bag=str(bag), rate=rate, remap=remap,
                                                       wait_for_subscribers_s=30.0))
        else:
            if into == "recognizer":   # the count starts from its (latched) status
                self.wait_until(lambda: bool(self.recognizer_status), 60.0,
                                f"the status of {self.path('recognizer')}")
            count = {"reconstruction": self.frames_tracked,
                     "recognizer": self.frames_recognised}[into]
            # the recognizer reads the camera only: nobody would take the bag's TF
            skip = ("/tf", "/tf_static") if into == "recognizer" else ()
            base = count()
            player = BagPlayer(self.node, ReplayConfig(bag=str(bag), remap=remap, skip_topics=skip,
                                                       wait_for_subscribers_s=30.0,
                                                       pace_topic=pace_topic),
                               receiver_pace(lambda: count() - base, self.wait_until,
                                             lag=1 if into == "reconstruction" else 0))
        try:
            return player.run()
        finally:
            player.close()

    def destroy(self) -> None:
        """Stop spinning; destroy the node if the client made it, else what it created."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._executor.remove_node(self.node)
            self._executor.shutdown()
            self._thread = None
        if self._own:
            self.node.destroy_node()
            return
        with self._lock:
            clients, subs = list(self._clients.values()), list(self._subs)
            actions = list(self._actions.values())
            self._clients, self._subs, self._actions = {}, [], {}
        for c in clients:
            self.node.destroy_client(c)
        for s in subs:
            self.node.destroy_subscription(s)
        for a in actions:
            a.destroy()

    def __enter__(self) -> NolClient:
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()
