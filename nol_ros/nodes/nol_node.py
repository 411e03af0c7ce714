"""nol node: learn objects (self-annotation -> views -> rendered training set) as jobs, and
render learnt objects on request.

Services (all answer at once; long work runs on the job worker thread, one job at a time):
  ~/learn_object (nol_ros/srv/LearnObject)      -> job id, or accepted=false + error code
  ~/get_job_status (nol_ros/srv/GetJobStatus)   -> state, stage, fraction, result path
  ~/cancel_job (nol_ros/srv/CancelJob)
  ~/render_views (nol_ros/srv/RenderViews)      a learnt object in given poses -> rgb8 images +
                                                mono8 masks (synchronous, see below)
Action:
  ~/learn (nol_ros/action/Learn): the same job with feedback and cancellation.
Topic:
  ~/progress (nol_ros/msg/JobProgress): every state/progress change of every job; ``stage`` is
  the current step (export, loading, tracking, ..., view_selection, render_setup, refine,
  finetune, render) and ``fraction`` the whole job's progress (0..1, monotonic).

A request is checked before it is queued, so the reply itself carries the error code of a bad
request: empty name, UNKNOWN_OBJECT (no mesh_path and not in the `objects` parameters),
BAD_FILE / BAD_MESH / EMPTY_MESH / MESH_UNITS (mesh missing or unreadable), BAD_FILE (bag or
dataset path missing), BAD_CONFIG (options_yaml), QUEUE_FULL. Failures during the job (e.g.
the object is not found in the scene) end the job FAILED with their code, logged once.

Queue policy (nol_ros.jobs): jobs run one at a time in submission order; up to `max_queued`
wait (a second LearnObject while one runs is QUEUED, not refused); beyond, QUEUE_FULL. A
running job is cancelled at its next progress report (tracking: every frame, rendering: every
`learn.render.batch` poses; the source-pose refinement runs to its end first).

Source SOURCE_LIVE_BUFFER (0) with an empty source_path: the job's first stage asks the
reconstruction node (parameter `reconstruction_node`, relative to this node's namespace) to
export its buffer into `live_export_dir` (default <workspace_root>/_live_buffer) and learns
from that folder; a given source_path is used as an already exported folder. Both nodes must
see the same file system (one machine, or a shared folder).

A job is a list of stages (`_learn_stages`): export (live buffer only) -> self_annotation
(+ view selection) -> render (learn.render.enabled): the object renderer
(nol_ros.nol.renderer, `learn.render.method` auto | nol | ibr, on `device`) refines the source
poses once and renders the pose grid of the recognition preset `learn.render.preset` into
<workspace_root>/NAME/renders/ (nol_ros.learn.render_training_set) -- what the trainer node
trains on. Each object gets its own BOP object id (<workspace_root>/object_ids.json).

RenderViews: answered on its own callback group (one render at a time; the other services
keep answering), not queued behind learning jobs. Errors: UNKNOWN_OBJECT (not learnt in
learn.workspace_root), BAD_POSE (NaN/inf, zero quaternion, z <= 0, too many poses),
BAD_CAMERA_INFO (K not positive, size 0 or above render_views.max_pixels). The loaded renderer
of an object is cached (per object and refine flag; reloaded when the object is learnt again)
and released, with torch's and the heap's memory, after `render_views.idle_release_s` without
a request.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nol_ros.catalog import ObjectCatalogConfig
from nol_ros.errors import ConfigError, FileFormatError, InputError, NolError
from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.learn import (
    SOURCE_BAG,
    SOURCE_DATASET,
    SOURCE_LIVE_BUFFER,
    LearnConfig,
    OverallProgress,
    detect_dataset,
    learn_object,
    release_memory,
)
from nol_ros.recognition.pipeline import UnknownObjectError
from nol_ros.ros.job_services import job_progress_msg  # noqa: F401  (re-exported)
from nol_ros.workspace import BadPathError, LearntObject, Workspace


class PoseError(InputError):
    """A requested pose is not a finite rigid transform in front of the camera."""

    code = "BAD_POSE"


@dataclass(frozen=True)
class RenderViewsConfig:
    idle_release_s: float = 120.0    # cached renderers are released after this idle time
    max_poses: int = 64              # per request
    max_pixels: int = 1920 * 1080    # per image (width * height)
    cache_objects: int = 2           # renderers kept at most (least recently used go first)

    def __post_init__(self):
        if self.idle_release_s < 0 or self.max_poses < 1 or self.max_pixels < 1 or \
                self.cache_objects < 1:
            raise ConfigError("render_views: idle_release_s >= 0, max_poses, max_pixels and "
                              "cache_objects >= 1 needed")


@dataclass(frozen=True)
class NolNodeConfig:
    device: str = "cpu"
    max_queued: int = 4
    reconstruction_node: str = "reconstruction"  # whose ~/export_sequence gives the live buffer
    live_export_dir: str = ""                     # "" = <learn.workspace_root>/_live_buffer
    export_timeout_s: float = 120.0
    objects: ObjectCatalogConfig = field(default_factory=ObjectCatalogConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)
    render_views: RenderViewsConfig = field(default_factory=RenderViewsConfig)


# share of a LearnObject job per progress stage (measured on the small preset: self-annotation
# ~50 s, the tiny render set ~10 s; the demo grid's 378 renders take longer)
_SELF_ANNOTATION_WEIGHTS = (("loading", 2), ("tracking", 20), ("loop_closure", 3), ("scene", 10),
                            ("registration", 25), ("annotation", 8), ("view_selection", 4))
_RENDER_WEIGHTS = (("render_setup", 2), ("refine", 6), ("finetune", 4), ("render", 30))


def learn_progress_spans(live_export: bool, render: bool) -> dict[str, tuple[float, float]]:
    """Stage -> [lo, hi) share of a LearnObject job."""
    w = ([("export", 4)] if live_export else []) + list(_SELF_ANNOTATION_WEIGHTS) + \
        (list(_RENDER_WEIGHTS) if render else [])
    total, acc, out = float(sum(x for _, x in w)), 0.0, {}
    for name, x in w:
        out[name] = (acc / total, (acc + x) / total)
        acc += x
    return out


def poses_from_msgs(poses, max_poses: int) -> np.ndarray:
    """geometry_msgs/Pose[] (T_camera_object) -> (B, 4, 4); PoseError naming the bad one."""
    from nol_ros.streaming.messages import matrix_from_pose

    if not poses:
        raise PoseError("no poses given; send at least one T_camera_object")
    if len(poses) > max_poses:
        raise PoseError(f"{len(poses)} poses in one request; at most {max_poses} "
                        "(render_views.max_poses): split the request")
    out = []
    for i, p in enumerate(poses):
        v = [p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y,
             p.orientation.z, p.orientation.w]
        if not np.all(np.isfinite(v)):
            raise PoseError(f"pose {i} contains NaN/inf ({v}); send finite T_camera_object poses")
        try:
            T = matrix_from_pose(p)
        except InputError as e:
            raise PoseError(f"pose {i}: {e}") from e
        if T[2, 3] <= 0:
            raise PoseError(f"pose {i} has z = {T[2, 3]:.3f} m: the object is behind the camera; "
                            "poses are T_camera_object in the optical frame (z forward)")
        out.append(T)
    return np.stack(out)


class RendererCache:
    """Loaded renderers by key, the least recently used dropped beyond ``max_entries``, all
    dropped by :meth:`release_idle` when unused for ``idle_s``. ``stamp`` (e.g. the views.json
    mtime) reloads an entry whose object was learnt again. Thread-safe; an entry in use is
    never released."""

    def __init__(self, load, idle_s: float, max_entries: int = 2):
        self.load, self.idle_s, self.max_entries = load, idle_s, max_entries
        self._d: OrderedDict = OrderedDict()   # key -> [renderer, stamp, last_used, users]
        self._lock = threading.Lock()
        self.loads = self.releases = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)

    def acquire(self, key, stamp):
        with self._lock:
            e = self._d.get(key)
            if e is not None and e[1] == stamp:
                e[3] += 1
                self._d.move_to_end(key)
                return e[0]
        r = self.load(key)  # outside the lock: loading takes seconds
        with self._lock:
            self.loads += 1
            self._d[key] = [r, stamp, time.monotonic(), 1]
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                k, old = next(iter(self._d.items()))
                if old[3] > 0:
                    break
                del self._d[k]
        return r

    def release(self, key) -> None:
        with self._lock:
            e = self._d.get(key)
            if e is not None:
                e[3] = max(0, e[3] - 1)
                e[2] = time.monotonic()

    def release_idle(self, now: float | None = None) -> int:
        """Drop entries unused for idle_s (0 = keep nothing once unused); returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [k for k, e in self._d.items() if e[3] == 0 and now - e[2] >= self.idle_s]
            for k in old:
                del self._d[k]
            self.releases += len(old)
        if old:
            release_memory()
        return len(old)


def learn_config_with_options(cfg: LearnConfig, options_yaml: str) -> LearnConfig:
    """``cfg`` with the overrides of a LearnObject's options_yaml: a mapping of learn-config
    keys, nested or dotted (``self_annotation.annotate_step: 2``). Unknown keys are refused."""
    from nol_ros.config import override, parse_options

    return override(cfg, parse_options(options_yaml), "options_yaml: ")


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
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node

    from nol_ros.action import Learn
    from nol_ros.learn import load_renderer, resolve_device
    from nol_ros.msg import JobProgress
    from nol_ros.ros.clients import ServiceCaller, export_live_buffer
    from nol_ros.ros.conversions import numpy_to_image
    from nol_ros.ros.job_services import JobNodeShutdown, attach_job_services
    from nol_ros.ros.params import declare_and_read
    from nol_ros.srv import ExportSequence, LearnObject, RenderViews
    from nol_ros.streaming.messages import camera_info_to_intrinsics

    class NolNode(JobNodeShutdown, Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: NolNodeConfig = declare_and_read(self, NolNodeConfig)
            self.device = resolve_device(self.cfg.device)
            if self.device != self.cfg.device:
                self.get_logger().warning(f"device '{self.cfg.device}' is not available: "
                                          f"running on {self.device}")
            rv = self.cfg.render_views
            self.renderers = RendererCache(self._load_renderer, rv.idle_release_s,
                                           rv.cache_objects)
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
            self.create_service(RenderViews, "~/render_views", self._on_render_views,
                                callback_group=MutuallyExclusiveCallbackGroup())
            self.create_timer(max(0.5, min(5.0, rv.idle_release_s / 4)), self._on_idle_timer,
                              callback_group=MutuallyExclusiveCallbackGroup(),
                              clock=Clock(clock_type=ClockType.STEADY_TIME))  # idle: wall time
            r = self.cfg.learn.render
            self.get_logger().info(
                f"nol node ready (device {self.device}, workspace "
                f"{self.cfg.learn.workspace_root}, live buffer from "
                f"{self.exporter.resolved_name}; renders: "
                f"{'method ' + r.method + ', preset ' + r.preset if r.enabled else 'off'})")

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
            """[(stage name, fn(ctx, progress))]; ctx carries source_path, workspace, obj_id.
            fn reports through ctx["progress"] (one job-wide fraction)."""
            live = source == SOURCE_LIVE_BUFFER and not path

            def export(ctx, progress):
                report = ctx["progress"]
                report("export", 0.0, f"exporting the live buffer of "
                                      f"{self.exporter.resolved_name}")
                ctx["source_path"] = export_live_buffer(self.exporter, self._live_export_dir(),
                                                        self.cfg.export_timeout_s)
                report("export", 1.0, f"live buffer exported to {ctx['source_path']}")

            def learn(ctx, progress):
                ctx["workspace"] = learn_object(name, mesh, source, ctx["source_path"], cfg,
                                                ctx["progress"], device=self.device)
                lo = LearntObject(Path(ctx["workspace"]))
                try:  # a learnt object with a caveat (e.g. INSUFFICIENT_COVERAGE): say so
                    warning = lo.read_report()["objects"][name].get("warning")
                except (NolError, KeyError):
                    warning = None
                if warning:
                    self.get_logger().warning(warning)
                if cfg.render.enabled:
                    rep = json.loads(lo.render_report.read_text())
                    self.get_logger().info(
                        f"{name}: {rep['images']} training images rendered ({rep['method']}, "
                        f"preset {rep['preset']}) in {rep['seconds']['total']:.1f} s")

            stages = [("export", export)] if live else []
            stages.append(("learn", learn))
            return stages, learn_progress_spans(live, cfg.render.enabled)

        def _submit_learn(self, req):
            """Check the request, then queue the job; raises NolError (the reply's code)."""
            name = req.object_name
            mesh = self.cfg.objects.mesh_for(name, req.mesh_path) if name else ""
            check_learn_request(name, mesh, int(req.source), req.source_path)
            cfg = learn_config_with_options(self.cfg.learn, req.options_yaml)
            stages, spans = self._learn_stages(name, mesh, int(req.source), req.source_path,
                                               cfg)

            def run(progress):
                ctx = {"source_path": req.source_path, "workspace": "", "obj_id": 0,
                       "progress": OverallProgress(progress.report, spans)}
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

        # -- RenderViews -------------------------------------------------------------------------
        def _load_renderer(self, key):
            name, refine = key
            t0 = time.perf_counter()
            ws = Path(self.cfg.learn.workspace_root) / name
            r, _ = load_renderer(ws, name, self.cfg.learn.render, self.device, prepare=refine)
            self.get_logger().info(f"RenderViews: loaded the {r.cfg.method} renderer of "
                                   f"'{name}'{' (sources refined)' if refine else ''} in "
                                   f"{time.perf_counter() - t0:.1f} s")
            return r

        def _on_idle_timer(self):
            n = self.renderers.release_idle()
            if n:
                self.get_logger().info(f"RenderViews: released {n} renderer(s) after "
                                       f"{self.cfg.render_views.idle_release_s:.0f} s idle")

        def _on_render_views(self, req, resp):
            t0 = time.perf_counter()
            name = req.object_name
            try:
                ws = Workspace(self.cfg.learn.workspace_root)
                try:
                    views = ws.learnt(name).files.views_json
                except BadPathError:
                    views = None
                if views is None or not views.is_file():
                    raise UnknownObjectError(
                        f"object '{name}' is not learnt in {ws.root} (learnt: "
                        f"{', '.join(ws.names()) or 'none'}); call LearnObject first")
                intr = camera_info_to_intrinsics(req.camera_info)
                if intr.width * intr.height > self.cfg.render_views.max_pixels:
                    from nol_ros.streaming.messages import CameraInfoError

                    raise CameraInfoError(
                        f"CameraInfo asks for {intr.width}x{intr.height} images; at most "
                        f"{self.cfg.render_views.max_pixels} pixels (render_views.max_pixels)")
                Ts = poses_from_msgs(req.poses, self.cfg.render_views.max_poses)
                key = (name, bool(req.refine))
                r = self.renderers.acquire(key, views.stat().st_mtime_ns)
                try:
                    rgb, mask = r.render(Ts, intr)
                finally:
                    self.renderers.release(key)
                stamp = self.get_clock().now().to_msg()
                fid = req.camera_info.header.frame_id
                resp.images = [numpy_to_image(np.ascontiguousarray(x), "rgb8", stamp, fid)
                               for x in rgb]
                resp.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8", stamp, fid)
                              for m in mask]
                resp.success = True
                resp.message = (f"{len(Ts)} view(s) of {name} at {intr.width}x{intr.height} in "
                                f"{time.perf_counter() - t0:.2f} s")
            except NolError as e:
                resp.success, resp.error_code, resp.message = False, e.code, str(e)
                self.get_logger().error(f"RenderViews '{name}' failed [{e.code}]: {e}")
            except Exception as e:  # a renderer bug must not take the node down
                traceback.print_exc()
                resp.success, resp.error_code = False, "INTERNAL_ERROR"
                resp.message = f"{type(e).__name__}: {e}"
                self.get_logger().error(f"RenderViews '{name}' failed [INTERNAL_ERROR]: "
                                        f"{resp.message}")
            return resp

    return NolNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
