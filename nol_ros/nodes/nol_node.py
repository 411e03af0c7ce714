"""nol node: learn objects (self-annotation -> views [-> NOL renders]) as jobs.

Services (all answer at once; long work runs on the job worker thread, one job at a time):
  ~/learn_object (nol_ros/srv/LearnObject)      -> job id, or accepted=false + error code
  ~/get_job_status (nol_ros/srv/GetJobStatus)   -> state, stage, fraction, result path
  ~/cancel_job (nol_ros/srv/CancelJob)
Action:
  ~/learn (nol_ros/action/Learn): the same job with feedback and cancellation.
Topic:
  ~/progress (nol_ros/msg/JobProgress): every state/progress change of every job.

A request is checked before it is queued, so the reply itself carries the error code of a bad
request: empty name, UNKNOWN_OBJECT (no mesh_path and not in the `objects` parameters),
BAD_FILE / BAD_MESH / EMPTY_MESH / MESH_UNITS (mesh missing or unreadable), BAD_FILE (bag or
dataset path missing), BAD_CONFIG (options_yaml), QUEUE_FULL. Failures during the job (e.g.
the object is not found in the scene) end the job FAILED with their code, logged once.

Queue policy (nol_ros.jobs): jobs run one at a time in submission order; up to `max_queued`
wait (a second LearnObject while one runs is QUEUED, not refused); beyond, QUEUE_FULL.

Source SOURCE_LIVE_BUFFER (0) with an empty source_path: the job's first stage asks the
reconstruction node (parameter `reconstruction_node`, relative to this node's namespace) to
export its buffer into `live_export_dir` (default <workspace_root>/_live_buffer) and learns
from that folder; a given source_path is used as an already exported folder. Both nodes must
see the same file system (one machine, or a shared folder).

A job is a list of stages (`_learn_stages`): check -> export (live buffer only) ->
self_annotation; NOL rendering becomes one more stage appended after self_annotation.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.errors import ConfigError, FileFormatError, InputError, NolError
from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.learn import (
    SOURCE_BAG,
    SOURCE_DATASET,
    SOURCE_LIVE_BUFFER,
    LearnConfig,
    detect_dataset,
    learn_object,
)
from nol_ros.ros.job_services import job_progress_msg  # noqa: F401  (re-exported)
from nol_ros.ros.objects import ObjectCatalogConfig


@dataclass(frozen=True)
class NolNodeConfig:
    device: str = "cpu"
    max_queued: int = 4
    reconstruction_node: str = "reconstruction"  # whose ~/export_sequence gives the live buffer
    live_export_dir: str = ""                     # "" = <learn.workspace_root>/_live_buffer
    export_timeout_s: float = 120.0
    objects: ObjectCatalogConfig = field(default_factory=ObjectCatalogConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)


def learn_config_with_options(cfg: LearnConfig, options_yaml: str) -> LearnConfig:
    """``cfg`` with the overrides of a LearnObject's options_yaml: a mapping of learn-config
    keys, nested or dotted (``self_annotation.annotate_step: 2``). Unknown keys are refused."""
    if not options_yaml.strip():
        return cfg
    import yaml

    from nol_ros.ros.params import config_from_flat, flatten_config, flatten_mapping

    try:
        opts = yaml.safe_load(options_yaml)
    except yaml.YAMLError as e:
        raise ConfigError(f"options_yaml is not valid YAML: {e}") from e
    if not isinstance(opts, dict):
        raise ConfigError("options_yaml must be a mapping, e.g. 'self_annotation.annotate_step: 2'")
    flat = flatten_config(cfg)
    extra = flatten_mapping(opts)
    unknown = sorted(set(extra) - set(flat))
    if unknown:
        raise ConfigError(f"options_yaml: unknown keys {unknown}; valid keys are the learn.* "
                          "parameters without the 'learn.' prefix (see config/nol.yaml)")
    return config_from_flat(type(cfg), {**flat, **extra})


def check_learn_request(name: str, mesh_path: str, source: int, source_path: str) -> None:
    """Cheap checks before a job is queued (raise the NolError a reply reports)."""
    from nol_ros.mesh import load_mesh

    if not name or "/" in name:
        raise InputError(f"object_name '{name}' must be non-empty and contain no '/'; name the "
                         "object to learn")
    if source not in (SOURCE_LIVE_BUFFER, SOURCE_BAG, SOURCE_DATASET):
        raise InputError(f"unknown source {source}; use 0 (live buffer), 1 (bag) or "
                         "2 (dataset)")
    if not Path(mesh_path).is_file():
        raise FileFormatError(f"{name}: mesh '{mesh_path}' does not exist or is not a file")
    if source == SOURCE_BAG:
        p = Path(source_path)
        if not source_path or not p.exists():
            raise FileFormatError(f"bag '{source_path}' does not exist; give the rosbag2 folder")
        if not ((p if p.is_dir() else p.parent) / "metadata.yaml").exists():
            raise FileFormatError(f"'{source_path}' is not a rosbag2 folder (no metadata.yaml)")
    elif source == SOURCE_DATASET:
        detect_dataset(source_path)  # raises FileFormatError naming the problem
    elif source_path and not Path(source_path).is_dir():
        raise FileFormatError(f"exported live buffer '{source_path}' does not exist; leave "
                              "source_path empty to export the reconstruction node's buffer")
    load_mesh(mesh_path)  # unreadable / empty / millimetre meshes: BAD_MESH, EMPTY_MESH, ...


def make_node(node_name: str = "nol", **node_kwargs):
    from rclpy.action import ActionServer, CancelResponse, GoalResponse
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.node import Node

    from nol_ros.action import Learn
    from nol_ros.msg import JobProgress
    from nol_ros.ros.clients import ServiceCaller, export_live_buffer
    from nol_ros.ros.job_services import attach_job_services
    from nol_ros.ros.params import declare_and_read
    from nol_ros.srv import ExportSequence, LearnObject

    class NolNode(Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: NolNodeConfig = declare_and_read(self, NolNodeConfig)
            self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
            self.jobs = JobManager(max_queued=self.cfg.max_queued, on_update=self._on_update,
                                   name="nol")
            self._waiters: dict[str, list] = {}
            self._lock = threading.Lock()
            group = ReentrantCallbackGroup()
            self.exporter = ServiceCaller(self, ExportSequence,
                                          f"{self.cfg.reconstruction_node}/export_sequence",
                                          callback_group=group)
            self.create_service(LearnObject, "~/learn_object", self._on_learn)
            attach_job_services(self, self.jobs)
            self._action = ActionServer(
                self, Learn, "~/learn", execute_callback=self._execute_goal,
                goal_callback=lambda g: GoalResponse.ACCEPT,
                cancel_callback=lambda g: CancelResponse.ACCEPT, callback_group=group)
            self.get_logger().info(f"nol node ready (device {self.cfg.device}, workspace "
                                   f"{self.cfg.learn.workspace_root}, live buffer from "
                                   f"{self.exporter.resolved_name})")

        # -- jobs ------------------------------------------------------------------------------
        def _on_update(self, info: JobInfo) -> None:
            if not self.context.ok():  # shutting down: the job was cancelled, nobody listens
                return
            self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
            if info.state == JobState.FAILED:
                self.get_logger().error(f"job {info.job_id} ({info.object_name}) failed "
                                        f"[{info.error_code}]: {info.message}")
            elif info.state == JobState.SUCCEEDED:
                self.get_logger().info(f"job {info.job_id} ({info.object_name}) done: "
                                       f"{info.result_path}")
            with self._lock:
                for cb in self._waiters.get(info.job_id, []):
                    cb(info)

        def _live_export_dir(self) -> str:
            d = self.cfg.live_export_dir or str(Path(self.cfg.learn.workspace_root)
                                                / "_live_buffer")
            return str(Path(d).expanduser().resolve())

        def _learn_stages(self, name, mesh, source, path, cfg):
            """[(stage name, fn(ctx, progress))]; ctx carries source_path and workspace."""

            def export(ctx, progress):
                progress.report("export", 0.0, f"exporting the live buffer of "
                                               f"{self.exporter.resolved_name}")
                ctx["source_path"] = export_live_buffer(self.exporter, self._live_export_dir(),
                                                        self.cfg.export_timeout_s)
                progress.report("export", 0.0, f"live buffer exported to {ctx['source_path']}")

            def self_annotation(ctx, progress):
                ctx["workspace"] = learn_object(name, mesh, source, ctx["source_path"], cfg,
                                                progress.report)
                try:  # a learnt object with a caveat (e.g. INSUFFICIENT_COVERAGE): say so
                    import json

                    rep = json.loads((Path(ctx["workspace"]) / "report.json").read_text())
                    warning = rep["objects"][name].get("warning")
                except (OSError, ValueError, KeyError):
                    warning = None
                if warning:
                    self.get_logger().warning(warning)

            stages = []
            if source == SOURCE_LIVE_BUFFER and not path:
                stages.append(("export", export))
            stages.append(("self_annotation", self_annotation))
            # phase 2: stages.append(("render", render)) -- NOL renders into ctx["workspace"]
            return stages

        def _submit_learn(self, req):
            """Check the request, then queue the job; raises NolError (the reply's code)."""
            name = req.object_name
            mesh = self.cfg.objects.mesh_for(name, req.mesh_path) if name else ""
            check_learn_request(name, mesh, int(req.source), req.source_path)
            cfg = learn_config_with_options(self.cfg.learn, req.options_yaml)
            stages = self._learn_stages(name, mesh, int(req.source), req.source_path, cfg)

            def run(progress):
                ctx = {"source_path": req.source_path, "workspace": ""}
                for _stage, fn in stages:
                    progress.check()
                    fn(ctx, progress)
                return ctx["workspace"]

            return self.jobs.submit("learn_object", run, name)

        def _on_learn(self, req, resp):
            try:
                info = self._submit_learn(req)
                resp.accepted, resp.job_id = True, info.job_id
                resp.message = ("queued" if self.jobs.get(info.job_id).state == JobState.QUEUED
                                else "running")
            except NolError as e:
                resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
                self.get_logger().error(f"LearnObject '{req.object_name}' refused [{e.code}]: "
                                        f"{e}")
            return resp

        # -- action ----------------------------------------------------------------------------
        def _execute_goal(self, goal_handle):
            result = Learn.Result()
            try:
                info = self._submit_learn(goal_handle.request)
            except NolError as e:
                self.get_logger().error(f"Learn goal '{goal_handle.request.object_name}' "
                                        f"refused [{e.code}]: {e}")
                goal_handle.abort()
                result.success, result.error_code, result.message = False, e.code, str(e)
                return result
            done = threading.Event()

            def on_update(i: JobInfo):
                fb = Learn.Feedback(job_id=i.job_id, stage=i.stage, fraction=float(i.fraction),
                                    message=i.message)
                goal_handle.publish_feedback(fb)
                if i.done:
                    done.set()

            with self._lock:
                self._waiters.setdefault(info.job_id, []).append(on_update)
            if self.jobs.get(info.job_id).done:
                done.set()
            while not done.wait(0.2):
                if goal_handle.is_cancel_requested:
                    self.jobs.cancel(info.job_id)
            with self._lock:
                self._waiters.pop(info.job_id, None)
            info = self.jobs.get(info.job_id)
            result.job_id, result.workspace_path = info.job_id, info.result_path
            result.error_code, result.message = info.error_code, info.message
            result.success = info.state == JobState.SUCCEEDED
            if info.state == JobState.CANCELLED:
                goal_handle.canceled()
            elif result.success:
                goal_handle.succeed()
            else:
                goal_handle.abort()
            return result

        def prepare_shutdown(self):
            if getattr(self, "jobs", None) is not None:
                self.jobs.shutdown()

        def destroy_node(self):
            if getattr(self, "jobs", None) is not None:  # also when __init__ failed
                self.jobs.shutdown()
            return super().destroy_node()

    return NolNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
