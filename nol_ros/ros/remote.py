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

Each step is a job on one host, submitted and waited for through that host's
:class:`~nol_ros.ros.client.NolClient` (its status polled; nothing is timed by the clock but the
generous ``job_timeout_s`` after which a job is reported stuck). A failed step raises
:class:`~nol_ros.ros.client.JobFailed` with the job's code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nol_ros.errors import ConfigError
from nol_ros.handoff import PACKAGES
from nol_ros.learn import SOURCE_WORKSPACE
from nol_ros.ros.client import JobResult, NolClient, transfer_dict
from nol_ros.workspace import MODELS_DIR


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
    models_path: str = MODELS_DIR
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


class RemoteLearner:
    """The chain as a workflow over two clients: ``robot`` (view_selection, transfer in
    cfg.robot_ns) and ``workstation`` (nol, trainer, transfer in cfg.workstation_ns); they may
    share one node."""

    def __init__(self, robot: NolClient, workstation: NolClient,
                 cfg: RemoteLearnConfig = RemoteLearnConfig()):
        self.robot, self.workstation, self.cfg = robot, workstation, cfg

    def _wait(self, client: NolClient, job, what: str) -> JobResult:
        return client.wait(job, self.cfg.job_timeout_s, poll_s=self.cfg.poll_s).check(what)

    # -- the steps --------------------------------------------------------------------------------
    def select_views(self, name: str, mesh_path: str, sequence_path: str = "") -> str:
        """Step 1 on the robot; returns the package folder (a robot path)."""
        job = self.robot.select_views([name], [mesh_path] if mesh_path else [], sequence_path)
        res = self._wait(self.robot, job, f"view selection of {name}")
        return f"{res.result_path.rstrip('/')}/{PACKAGES}/{name}"

    def fetch(self, client: NolClient, peer: str, remote: str, local: str,
              max_chunks: int = 0):
        """A transfer job on ``client``'s host pulling ``remote`` of ``peer``; returns (result
        path, final TransferStatus)."""
        job = client.fetch(peer, remote, local, max_chunks)
        res = self._wait(client, job, f"transfer of {remote} from {peer}")
        return res.result_path, client.transfer_status(job)

    def render(self, name: str, source_path: str = "") -> str:
        """Step 3 on the workstation; returns the object's workspace there."""
        job = self.workstation.learn_object(name, "", SOURCE_WORKSPACE, source_path,
                                            self.cfg.learn_options_yaml)
        return self._wait(self.workstation, job, f"rendering {name}").result_path

    def train(self, names: list[str]) -> str:
        """Step 4 on the workstation (both stages queued at once); the models folder."""
        ws, cfg = self.workstation, self.cfg
        jd = ws.train_detector(names, cfg.preset, cfg.train_options_yaml)
        jp = ws.train_pose_estimator(names, cfg.preset, cfg.train_options_yaml)
        self._wait(ws, jd, "detector training")
        return self._wait(ws, jp, "pose training").result_path

    def learn(self, name: str, mesh_path: str, sequence_path: str = "",
              package: str = "") -> dict:
        """The whole chain; returns what each step produced and took. package: a package the
        robot's view selection wrote already (a robot path): step 1 is skipped."""
        cfg = self.cfg
        robot_tx, ws_tx = self.robot.path("transfer"), self.workstation.path("transfer")
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
            path, st = step("send_package", self.fetch, self.workstation, robot_tx,
                            out["package"], name)
            out["package_transfer"] = transfer_dict(st)
            out["workspace"] = step("render", self.render, name, "")
        models = step("train", self.train, [name])
        out["models_workstation"] = models
        if cfg.shared_workspace:
            out["models"] = models
        else:
            path, st = step("fetch_models", self.fetch, self.robot, ws_tx, models,
                            cfg.models_path)
            out["models"], out["models_transfer"] = path, transfer_dict(st)
        return out
