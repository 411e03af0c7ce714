"""Learning an object with a robot and a workstation (docs/deployment.md), as a client of both
hosts' nodes over ROS 2 -- run it anywhere on the DDS network (usually on the robot):

1. robot ``view_selection``: SelectViews on the recorded sequence (the reconstruction node's
   buffer, or a BOP folder); the job writes the object's package (nol_ros.handoff);
2. workstation ``transfer``: Fetch the package from the robot's transfer node into its root
   (``ROOT/NAME``), chunked, checksummed, resumable -- skipped with a shared workspace;
3. workstation ``nol``: LearnObject with SOURCE_WORKSPACE renders the training set;
4. workstation ``trainer``: TrainDetector + TrainPoseEstimator write the models folder;
5. robot ``transfer``: Fetch the models folder back (the robot's recogniser loads it) --
   skipped with a shared workspace.

Every wait polls the job's status (GetJobStatus), nothing is timed by the clock but the
generous ``job_timeout_s`` after which a job is reported stuck. Call from a thread other than
the one spinning ``node`` (the replies arrive through the executor).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rclpy.qos import DurabilityPolicy, QoSProfile

from nol_ros.errors import ConfigError, NolError
from nol_ros.handoff import PACKAGES
from nol_ros.learn import SOURCE_WORKSPACE
from nol_ros.msg import JobProgress, TransferStatus
from nol_ros.ros.clients import ServiceCaller
from nol_ros.srv import (
    Fetch,
    GetJobStatus,
    LearnObject,
    SelectViews,
    TrainDetector,
    TrainPoseEstimator,
)


class RemoteJobError(NolError):
    """A job on one of the hosts failed (its code is kept)."""

    def __init__(self, message: str, code: str = "REMOTE_JOB_FAILED"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RemoteLearnConfig:
    """robot_ns / workstation_ns: the namespaces of the two hosts' nodes (view_selection and
    transfer on the robot; nol, trainer and transfer on the workstation). shared_workspace: both
    hosts see one file system (no transfers: the workstation reads the package where the robot
    wrote it, the robot's recogniser reads the trainer's models folder). models_path: where the
    models land under the robot's transfer root (its recogniser's models_dir). preset /
    train_options_yaml: the training request; learn_options_yaml: the LearnObject request (e.g.
    ``render.preset: tiny``)."""

    robot_ns: str = "/robot"
    workstation_ns: str = "/workstation"
    shared_workspace: bool = False
    models_path: str = "_models"
    preset: str = ""
    train_options_yaml: str = ""
    learn_options_yaml: str = ""
    job_timeout_s: float = 7200.0
    poll_s: float = 0.5

    def __post_init__(self):
        for ns in (self.robot_ns, self.workstation_ns):
            if not ns.startswith("/"):
                raise ConfigError(f"namespace '{ns}' must be absolute (start with '/')")
        if self.job_timeout_s <= 0 or self.poll_s <= 0:
            raise ConfigError("job_timeout_s and poll_s must be > 0")


def _join(ns: str, *names: str) -> str:
    return "/".join([ns.rstrip("/"), *names])


class RemoteLearner:
    def __init__(self, node, cfg: RemoteLearnConfig = RemoteLearnConfig()):
        self.node, self.cfg = node, cfg
        r, w = cfg.robot_ns, cfg.workstation_ns
        c = {}
        for key, srv, name in (
                ("select", SelectViews, _join(r, "view_selection", "select_views")),
                ("select_status", GetJobStatus, _join(r, "view_selection", "get_job_status")),
                ("robot_fetch", Fetch, _join(r, "transfer", "fetch")),
                ("robot_fetch_status", GetJobStatus, _join(r, "transfer", "get_job_status")),
                ("ws_fetch", Fetch, _join(w, "transfer", "fetch")),
                ("ws_fetch_status", GetJobStatus, _join(w, "transfer", "get_job_status")),
                ("learn", LearnObject, _join(w, "nol", "learn_object")),
                ("learn_status", GetJobStatus, _join(w, "nol", "get_job_status")),
                ("detector", TrainDetector, _join(w, "trainer", "train_detector")),
                ("pose", TrainPoseEstimator, _join(w, "trainer", "train_pose_estimator")),
                ("train_status", GetJobStatus, _join(w, "trainer", "get_job_status"))):
            c[key] = ServiceCaller(node, srv, name)
        self.calls = c
        self.transfers: dict[str, object] = {}        # job id -> last TransferStatus
        self._lock = threading.Lock()
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for ns in (r, w):
            node.create_subscription(TransferStatus, _join(ns, "transfer", "transfer_status"),
                                     self._on_status, latched)

    def _on_status(self, msg) -> None:
        with self._lock:
            self.transfers[msg.job_id + "@" + msg.peer] = msg

    def transfer_status(self, job_id: str, peer: str):
        with self._lock:
            return self.transfers.get(job_id + "@" + peer)

    # -- jobs ------------------------------------------------------------------------------------
    def wait(self, status_key: str, job_id: str, what: str):
        """Poll a job until it ends; its final GetJobStatus reply (RemoteJobError if it did
        not succeed)."""
        t0 = time.monotonic()
        while True:
            st = self.calls[status_key].call(GetJobStatus.Request(job_id=job_id), 60.0, 60.0)
            if st.found and st.status.state >= JobProgress.STATE_SUCCEEDED:
                if st.status.state != JobProgress.STATE_SUCCEEDED:
                    raise RemoteJobError(f"{what} (job {job_id}) ended in state "
                                         f"{st.status.state}: {st.status.message}",
                                         st.status.error_code or "REMOTE_JOB_FAILED")
                return st
            if time.monotonic() - t0 > self.cfg.job_timeout_s:
                raise RemoteJobError(f"{what} (job {job_id}) did not finish within "
                                     f"{self.cfg.job_timeout_s:.0f} s", "REMOTE_JOB_TIMEOUT")
            time.sleep(self.cfg.poll_s)

    def _submit(self, key: str, request, what: str) -> str:
        r = self.calls[key].call(request, 120.0, 60.0)
        if not r.accepted:
            raise RemoteJobError(f"{what} refused [{r.error_code}]: {r.message}",
                                 r.error_code or "REFUSED")
        return r.job_id

    # -- the steps --------------------------------------------------------------------------------
    def select_views(self, name: str, mesh_path: str, sequence_path: str = "") -> str:
        """Step 1 on the robot; returns the package folder (a robot path)."""
        job = self._submit("select", SelectViews.Request(
            object_names=[name], mesh_paths=[mesh_path] if mesh_path else [],
            sequence_path=sequence_path), f"SelectViews {name}")
        st = self.wait("select_status", job, f"view selection of {name}")
        return f"{st.result_path.rstrip('/')}/{PACKAGES}/{name}"

    def fetch(self, on: str, peer: str, remote: str, local: str, max_chunks: int = 0):
        """A transfer job on host ``on`` ("robot" or "ws") pulling ``remote`` of ``peer``;
        returns (result path, last TransferStatus)."""
        job = self._submit(f"{on}_fetch", Fetch.Request(peer=peer, remote_path=remote,
                                                        local_path=local,
                                                        max_chunks=max_chunks),
                           f"Fetch {peer}:{remote}")
        st = self.wait(f"{on}_fetch_status", job, f"transfer of {remote} from {peer}")
        deadline = time.monotonic() + 60.0     # the latched status follows the job's end
        while self.transfer_status(job, peer) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return st.result_path, self.transfer_status(job, peer)

    def render(self, name: str, source_path: str = "") -> str:
        """Step 3 on the workstation; returns the object's workspace there."""
        job = self._submit("learn", LearnObject.Request(
            object_name=name, source=SOURCE_WORKSPACE, source_path=source_path,
            options_yaml=self.cfg.learn_options_yaml), f"LearnObject {name}")
        return self.wait("learn_status", job, f"rendering {name}").result_path

    def train(self, names: list[str]) -> str:
        """Step 4 on the workstation (both stages queued at once); the models folder."""
        kw = dict(object_names=list(names), preset=self.cfg.preset,
                  options_yaml=self.cfg.train_options_yaml)
        jd = self._submit("detector", TrainDetector.Request(**kw), "TrainDetector")
        jp = self._submit("pose", TrainPoseEstimator.Request(**kw), "TrainPoseEstimator")
        self.wait("train_status", jd, "detector training")
        return self.wait("train_status", jp, "pose training").result_path

    def learn(self, name: str, mesh_path: str, sequence_path: str = "",
              package: str = "") -> dict:
        """The whole chain; returns what each step produced and took. package: a package the
        robot's view selection wrote already (a robot path): step 1 is skipped."""
        cfg = self.cfg
        robot_tx, ws_tx = _join(cfg.robot_ns, "transfer"), _join(cfg.workstation_ns, "transfer")
        out: dict = {"object": name, "shared_workspace": cfg.shared_workspace, "seconds": {}}

        def step(key, fn, *a):
            t = time.monotonic()
            res = fn(*a)
            out["seconds"][key] = time.monotonic() - t
            return res

        out["package"] = package or step("view_selection", self.select_views, name,
                                         mesh_path, sequence_path)
        if cfg.shared_workspace:
            out["workspace"] = step("render", self.render, name, out["package"])
        else:
            path, st = step("send_package", self.fetch, "ws", robot_tx, out["package"], name)
            out["package_transfer"] = _status_dict(st)
            out["workspace"] = step("render", self.render, name, "")
        models = step("train", self.train, [name])
        out["models_workstation"] = models
        if cfg.shared_workspace:
            out["models"] = models
        else:
            path, st = step("fetch_models", self.fetch, "robot", ws_tx, models,
                            cfg.models_path)
            out["models"], out["models_transfer"] = path, _status_dict(st)
        return out


def _status_dict(m) -> dict:
    if m is None:
        return {}
    return {k: getattr(m, k) for k in ("transfer_id", "state", "chunks_total", "chunks_done",
                                       "chunks_resumed", "chunks_fetched", "bytes_total",
                                       "bytes_done", "wire_bytes", "retries", "seconds")}
