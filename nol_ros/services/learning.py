"""Learning objects as jobs, and rendering learnt objects on request: what the nol node offers,
without ROS.

LearnObject (:meth:`LearningService.submit`): a request is checked before it is queued, so the
reply itself carries the error code of a bad request -- a name that is not a safe name or is
reserved (BAD_PATH), UNKNOWN_OBJECT (no mesh_path and not in the catalogue), BAD_PATH (a mesh
or source path outside ``data_root``, or missing: one message for both), BAD_MESH / EMPTY_MESH
/ MESH_UNITS, BAD_FILE (a source that is not a bag / dataset), BAD_CONFIG (options_yaml: size,
aliases, unknown keys, values), QUEUE_FULL. The job then runs the stages -- export (the live
buffer, through the ``export`` callback the node gives) and :func:`nol_ros.learn.learn_object`
(self-annotation, view selection, the rendered training set, built beside the learnt object and
swapped in when all succeeded) -- reporting one monotonic fraction over the job; a job that
fails ends with its error's code (e.g. MESH_MISMATCH: the mesh matches nothing in the scene).
SOURCE_WORKSPACE (3): an object self-annotated elsewhere -- the package a robot's view
selection wrote (nol_ros.handoff), fetched by a transfer node into ``ROOT/NAME`` (empty
source_path) or lying in ``data_root`` -- is only rendered; the package brings its mesh
(mesh_path is ignored), and one that is not a learnt object NAME is refused (BAD_FILE).

RenderViews (:meth:`RenderViewsService.render`): a learnt object in given poses, with limits on
poses, pixels per image and pixels per request; renderers are cached per object (reloaded when
the object is learnt again) and released with their memory after ``idle_release_s``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nol_ros.catalog import ObjectCatalogConfig
from nol_ros.config import override, parse_options
from nol_ros.datasets.bag import open_bag
from nol_ros.device import release_memory
from nol_ros.errors import (
    ConfigError,
    FileFormatError,
    InputError,
    NolError,
    PoseError,
    ServiceUnavailableError,
)
from nol_ros.handoff import check_package
from nol_ros.jobs import JobInfo, JobManager
from nol_ros.learn import (
    SOURCE_BAG,
    SOURCE_DATASET,
    SOURCE_LIVE_BUFFER,
    SOURCE_WORKSPACE,
    LearnConfig,
    detect_dataset,
    learn_object,
    load_renderer,
)
from nol_ros.mesh import load_mesh
from nol_ros.nol.network import load_checkpoint
from nol_ros.progress import OverallProgress
from nol_ros.recognition.pipeline import UnknownObjectError
from nol_ros.streaming.messages import CameraInfoError
from nol_ros.workspace import BadPathError, LearntObject, Workspace, confine, safe_name


@dataclass(frozen=True)
class RenderViewsConfig:
    idle_release_s: float = 120.0    # cached renderers are released after this idle time
    max_poses: int = 64              # per request
    max_pixels: int = 1920 * 1080    # per image (width * height)
    max_request_pixels: int = 16 * 640 * 480  # poses x pixels per request (the work it makes)
    cache_objects: int = 2           # renderers kept at most (least recently used go first)

    def __post_init__(self):
        if self.idle_release_s < 0 or self.max_poses < 1 or self.max_pixels < 1 or \
                self.cache_objects < 1 or self.max_request_pixels < 1:
            raise ConfigError("render_views: idle_release_s >= 0, max_poses, max_pixels, "
                              "max_request_pixels and cache_objects >= 1 needed")


@dataclass(frozen=True)
class LearningConfig:
    """The nol node's parameters."""

    device: str = "cpu"
    max_queued: int = 4
    max_job_s: float = 21600.0       # a LearnObject job's time budget; then TIME_BUDGET (0: none)
    data_root: str = ""              # meshes and sources of requests lie in here; "" = the
    #                                  learn.workspace_root
    reconstruction_node: str = "reconstruction"  # whose ~/export_sequence gives the live buffer
    live_export_dir: str = "_live_buffer"        # where it is exported, inside the workspace root
    export_timeout_s: float = 120.0
    objects: ObjectCatalogConfig = field(default_factory=ObjectCatalogConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)
    render_views: RenderViewsConfig = field(default_factory=RenderViewsConfig)

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.learn.workspace_root)

    @property
    def data_path(self) -> Path:
        return Path(self.data_root or self.learn.workspace_root).expanduser()


# share of a LearnObject job per progress stage (measured on the small preset: self-annotation
# ~50 s, the tiny render set ~10 s; the demo grid's 378 renders take longer)
_SELF_ANNOTATION_WEIGHTS = (("loading", 2), ("tracking", 20), ("loop_closure", 3), ("scene", 10),
                            ("registration", 25), ("annotation", 8), ("view_selection", 4))
_RENDER_WEIGHTS = (("render_setup", 2), ("refine", 6), ("finetune", 4), ("fit", 4),
                   ("render", 30))


def learn_progress_spans(live_export: bool, render: bool, annotate: bool = True
                         ) -> dict[str, tuple[float, float]]:
    """Stage -> [lo, hi) share of a LearnObject job (annotate False: SOURCE_WORKSPACE, an object
    self-annotated elsewhere)."""
    w = ([("export", 4)] if live_export else []) + \
        (list(_SELF_ANNOTATION_WEIGHTS) if annotate else [("workspace", 1)]) + \
        (list(_RENDER_WEIGHTS) if render else [])
    total, acc, out = float(sum(x for _, x in w)), 0.0, {}
    for name, x in w:
        out[name] = (acc / total, (acc + x) / total)
        acc += x
    return out


def learn_config_with_options(cfg: LearnConfig, options_yaml: str) -> LearnConfig:
    """``cfg`` with the overrides of a LearnObject's options_yaml: a mapping of learn-config
    keys, nested or dotted (``self_annotation.annotate_step: 2``). Unknown keys are refused, and
    so is a workspace_root (the node's root is not a request's to change)."""
    opts = parse_options(options_yaml)
    if "workspace_root" in opts:
        raise ConfigError("options_yaml: workspace_root is the node's parameter, not an option")
    return override(cfg, opts, "options_yaml: ")


@dataclass(frozen=True)
class LearnRequest:
    """A LearnObject request (the message's fields)."""

    object_name: str
    mesh_path: str = ""
    source: int = SOURCE_LIVE_BUFFER
    source_path: str = ""
    options_yaml: str = ""


@dataclass(frozen=True)
class CheckedLearn:
    name: str
    mesh: str
    source: int
    source_path: str
    cfg: LearnConfig

    @property
    def live_export(self) -> bool:
        return self.source == SOURCE_LIVE_BUFFER and not self.source_path

    @property
    def annotate(self) -> bool:
        return self.source != SOURCE_WORKSPACE


def check_learn_request(cfg: LearningConfig, req: LearnRequest) -> CheckedLearn:
    """Cheap checks before a job is queued (raise the NolError a reply reports); paths resolved
    inside data_root."""
    name = req.object_name
    lo = cfg.workspace.learnt(name)          # safe, not reserved
    root = cfg.data_path
    if req.source not in (SOURCE_LIVE_BUFFER, SOURCE_BAG, SOURCE_DATASET, SOURCE_WORKSPACE):
        raise InputError(f"unknown source {req.source}; use 0 (live buffer), 1 (bag), "
                         "2 (dataset) or 3 (workspace: an object self-annotated elsewhere)")
    if req.source == SOURCE_WORKSPACE:       # the package brings its mesh
        src = str(confine(root, req.source_path, "source_path", must_exist=True)) \
            if req.source_path else ""
        check_package(src or lo.dir, name)   # BAD_FILE naming what is missing
        learn_cfg = _checked_checkpoint(cfg, learn_config_with_options(cfg.learn,
                                                                       req.options_yaml))
        return CheckedLearn(name, "", req.source, src, learn_cfg)
    mesh = str(confine(root, cfg.objects.mesh_for(name, req.mesh_path), "mesh_path",
                       must_exist=True))
    src = ""
    if req.source == SOURCE_BAG:
        p = confine(root, req.source_path or ".", "source_path", must_exist=True)
        if not ((p if p.is_dir() else p.parent) / "metadata.yaml").exists():
            raise FileFormatError(f"'{req.source_path}' is not a rosbag2 folder (no "
                                  "metadata.yaml)")
        open_bag(p).close()  # a damaged or truncated bag: BAD_FILE now, not in the job
        src = str(p)
    elif req.source == SOURCE_DATASET:
        p = confine(root, req.source_path or ".", "source_path", must_exist=True)
        detect_dataset(p)  # raises FileFormatError naming the problem
        src = str(p)
    elif req.source_path:
        src = str(confine(root, req.source_path, "source_path", must_exist=True))
    learn_cfg = _checked_checkpoint(cfg, learn_config_with_options(cfg.learn, req.options_yaml))
    load_mesh(mesh)  # unreadable / empty / other-unit meshes: BAD_MESH, EMPTY_MESH, MESH_UNITS
    return CheckedLearn(name, mesh, req.source, src, learn_cfg)


def _checked_checkpoint(cfg: LearningConfig, learn_cfg: LearnConfig) -> LearnConfig:
    """A NOL checkpoint named in options_yaml (render.checkpoint) is a path from a request: it
    must lie inside data_root (BAD_PATH, the same message whether outside or missing) and load
    as a NOL checkpoint (BAD_WEIGHTS) before the job is queued, not after the self-annotation.
    Returned with the resolved path. The node's own parameter is the operator's: not confined."""
    ck = learn_cfg.render.checkpoint
    if not ck or ck == cfg.learn.render.checkpoint:
        return learn_cfg
    p = confine(cfg.data_path, ck, "render.checkpoint", must_exist=True)
    load_checkpoint(p)
    return dataclasses.replace(learn_cfg, render=dataclasses.replace(learn_cfg.render,
                                                                     checkpoint=str(p)))


class LearningService:
    """LearnObject as jobs (see the module doc). ``export(output_dir, timeout_s) -> scene
    folder`` asks the reconstruction node for its live buffer (None: live-buffer requests fail
    at their export stage, naming it); ``on_update(JobInfo)``; ``log(level, text)``."""

    def __init__(self, cfg: LearningConfig, device: str,
                 export: Callable[[str, float], str] | None = None,
                 on_update: Callable[[JobInfo], None] | None = None,
                 log: Callable[[str, str], None] | None = None):
        self.cfg, self.device, self.export = cfg, device, export
        self.log = log or (lambda level, text: None)
        self.jobs = JobManager(max_queued=cfg.max_queued, on_update=on_update, name="nol",
                               max_job_s=cfg.max_job_s)

    def live_export_dir(self) -> Path:
        return self.cfg.workspace.within(self.cfg.live_export_dir, "live_export_dir")

    def submit(self, req: LearnRequest) -> JobInfo:
        """Check the request and queue its job; raises the NolError a reply reports."""
        c = check_learn_request(self.cfg, req)
        spans = learn_progress_spans(c.live_export, c.cfg.render.enabled, c.annotate)

        def run(progress):
            report = OverallProgress(progress.report, spans)
            source_path = c.source_path
            if c.live_export:
                if self.export is None:
                    raise ServiceUnavailableError(
                        "no reconstruction node to export the live buffer from; give "
                        "source_path (an exported buffer) or another source")
                report("export", 0.0, "exporting the live buffer")
                source_path = self.export(str(self.live_export_dir()), self.cfg.export_timeout_s)
                report("export", 1.0, f"live buffer exported to {source_path}")
            progress.check()
            ws = learn_object(c.name, c.mesh, c.source, source_path, c.cfg, report,
                              device=self.device)
            self._log_result(LearntObject(Path(ws)), c)
            return ws

        return self.jobs.submit("learn_object", run, c.name)

    def _log_result(self, lo: LearntObject, c: CheckedLearn) -> None:
        try:  # a learnt object with a caveat (e.g. INSUFFICIENT_COVERAGE): say so
            warning = lo.read_report()["objects"][c.name].get("warning")
        except (NolError, KeyError):
            warning = None
        if warning:
            self.log("warning", warning)
        if c.cfg.render.enabled and lo.render_report.is_file():
            rep = json.loads(lo.render_report.read_text())
            self.log("info", f"{c.name}: {rep['images']} training images rendered "
                             f"({rep['method']}, preset {rep['preset']}) in "
                             f"{rep['seconds']['total']:.1f} s")

    def shutdown(self) -> None:
        self.jobs.shutdown()


# -- RenderViews ---------------------------------------------------------------------------------
def check_poses(T: np.ndarray, max_poses: int) -> np.ndarray:
    """(B, 4, 4) T_camera_object, each finite, rigid and in front of the camera; PoseError
    naming the bad one."""
    T = np.asarray(T, np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) == 0:
        raise PoseError("no poses given; send at least one T_camera_object")
    if len(T) > max_poses:
        raise PoseError(f"{len(T)} poses in one request; at most {max_poses} "
                        "(render_views.max_poses): split the request")
    for i, Ti in enumerate(T):
        if not np.all(np.isfinite(Ti)):
            raise PoseError(f"pose {i} contains NaN/inf; send finite T_camera_object poses")
        if Ti[2, 3] <= 0:
            raise PoseError(f"pose {i} has z = {Ti[2, 3]:.3f} m: the object is behind the "
                            "camera; poses are T_camera_object in the optical frame (z forward)")
    return T


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


class RenderViewsService:
    """RenderViews (see the module doc). ``log(level, text)``."""

    def __init__(self, cfg: LearningConfig, device: str,
                 log: Callable[[str, str], None] | None = None):
        self.cfg, self.device = cfg, device
        self.log = log or (lambda level, text: None)
        rv = cfg.render_views
        self.renderers = RendererCache(self._load, rv.idle_release_s, rv.cache_objects)

    def _load(self, key):
        name, refine = key
        t0 = time.perf_counter()
        r, _ = load_renderer(self.cfg.workspace.learnt(name), name, self.cfg.learn.render,
                             self.device, prepare=refine)
        self.log("info", f"RenderViews: loaded the {r.cfg.method} renderer of '{name}'"
                         f"{' (sources refined)' if refine else ''} in "
                         f"{time.perf_counter() - t0:.1f} s")
        return r

    def render(self, name: str, T_camera_object: np.ndarray, intrinsics, refine: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """``name`` rendered at (B, 4, 4) T_camera_object with ``intrinsics`` -> (rgb (B, H, W,
        3) uint8, mask (B, H, W) bool). Raises UNKNOWN_OBJECT, BAD_POSE, BAD_CAMERA_INFO."""
        rv = self.cfg.render_views
        ws = self.cfg.workspace
        try:
            views = ws.learnt(name).files.views_json
        except BadPathError:
            views = None
        if views is None or not views.is_file():
            raise UnknownObjectError(f"object '{name}' is not learnt in {ws.root} (learnt: "
                                     f"{', '.join(ws.names()) or 'none'}); call LearnObject "
                                     "first")
        px = intrinsics.width * intrinsics.height
        if px > rv.max_pixels:
            raise CameraInfoError(f"CameraInfo asks for {intrinsics.width}x{intrinsics.height}"
                                  f" images; at most {rv.max_pixels} pixels "
                                  "(render_views.max_pixels)")
        T = check_poses(T_camera_object, rv.max_poses)
        if px * len(T) > rv.max_request_pixels:
            raise PoseError(f"{len(T)} views of {intrinsics.width}x{intrinsics.height} are "
                            f"{px * len(T)} pixels; at most {rv.max_request_pixels} per request "
                            "(render_views.max_request_pixels): split the request or render "
                            "smaller images")
        key = (safe_name(name), bool(refine))
        r = self.renderers.acquire(key, views.stat().st_mtime_ns)
        try:
            rgb, mask = r.render(T, intrinsics)
        finally:
            self.renderers.release(key)
        return np.asarray(rgb), np.asarray(mask)

    def release_idle(self) -> int:
        return self.renderers.release_idle()
