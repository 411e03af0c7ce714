"""Registering objects in a recorded sequence and selecting their source views as jobs: what the
view_selection node offers, without ROS.

A request names objects (with meshes, or from the catalogue), a sequence (a BOP scene folder
inside ``data_root``, or none: the reconstruction node's exported buffer) and an output
workspace (a safe name inside ``workspace_root``; default the job id). The job runs the core
chain :func:`nol_ros.selfannotate.run_self_annotation` and returns the selections; an object
that cannot be registered is reported and left out, the job fails (with that code) only when no
object could be selected. With ``packages`` (default) every selected object's package -- what a
workstation renders and trains from, :mod:`nol_ros.handoff` -- is written to
``<run folder>/packages/NAME``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.catalog import ObjectCatalogConfig
from nol_ros.datasets.bag_import import load_odometry
from nol_ros.datasets.bop import read_bop_scene
from nol_ros.device import release_memory
from nol_ros.errors import (
    FileFormatError,
    InputError,
    ServiceUnavailableError,
    error_for_code,
)
from nol_ros.handoff import PACKAGES, pack_learnt_object
from nol_ros.jobs import JobInfo, JobManager
from nol_ros.mesh import load_mesh
from nol_ros.selfannotate import ObjectSpec, SelfAnnotationConfig, run_self_annotation
from nol_ros.workspace import AnnotationFiles, Workspace, confine, safe_name


@dataclass(frozen=True)
class SelectionConfig:
    """The view_selection node's parameters."""

    workspace_root: str = "nol_workspace/view_selection"  # a job writes <root>/<name or job id>/
    data_root: str = ""                                   # sequences and meshes of requests lie
    #                                                       in here; "" = workspace_root
    reconstruction_node: str = "reconstruction"  # whose ~/export_sequence gives the live buffer
    live_export_dir: str = "_live_buffer"        # where it is exported, inside workspace_root
    export_timeout_s: float = 120.0
    max_queued: int = 2
    max_job_s: float = 21600.0                    # a job's time budget; then TIME_BUDGET (0: none)
    image_tile_px: int = 160                      # height of one view in ~/annotated_image
    image_max_views: int = 8                      # views per object drawn
    packages: bool = True                         # write <run>/packages/NAME for a workstation
    package_keyframe_step: int = 4                # (nol_ros.handoff): views + every n-th frame
    objects: ObjectCatalogConfig = field(default_factory=ObjectCatalogConfig)
    self_annotation: SelfAnnotationConfig = field(default_factory=SelfAnnotationConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_root or self.workspace_root).expanduser()


@dataclass(frozen=True)
class SelectRequest:
    object_names: tuple[str, ...] = ()
    mesh_paths: tuple[str, ...] = ()
    sequence_path: str = ""
    workspace: str = ""


@dataclass
class SelectionResult:
    """What a finished job found: the run folder, the sequence, the selected objects, and the
    ones that failed [(name, code, message)]."""

    workspace: Path
    sequence_path: str
    selected: list[str]
    failed: list[tuple[str, str, str]]


def resolve_objects(cfg: SelectionConfig, names, mesh_paths) -> list[tuple[str, str]]:
    """[(name, mesh)] of a request (checked, meshes inside data_root; raises the reply's
    NolError)."""
    names, mesh_paths = list(names), list(mesh_paths)
    if mesh_paths and len(mesh_paths) != len(names):
        raise InputError(f"{len(names)} object_names but {len(mesh_paths)} mesh_paths; give one "
                         "mesh per name, or none to use the objects.* parameters")
    if not names:
        names = list(cfg.objects.names)
        if not names:
            raise InputError("no object named and no objects configured; pass object_names "
                             "(+ mesh_paths) or set the objects.names / objects.mesh_paths "
                             "parameters")
    if len(set(names)) != len(names):
        raise InputError(f"object_names {names} repeats a name")
    out = []
    for i, name in enumerate(names):
        safe_name(name)
        mesh = confine(cfg.data_path, cfg.objects.mesh_for(name, mesh_paths[i] if mesh_paths
                                                            else ""), "mesh_path",
                       must_exist=True)
        load_mesh(mesh)
        out.append((name, str(mesh)))
    return out


class SelectionService:
    """SelectViews as jobs. ``export(output_dir, timeout_s) -> scene folder`` (None: requests
    without a sequence fail at their export stage); ``on_update(JobInfo)``;
    ``on_done(SelectionResult)`` when a job selected something; ``log(level, text)``."""

    def __init__(self, cfg: SelectionConfig, export: Callable[[str, float], str] | None = None,
                 on_update: Callable[[JobInfo], None] | None = None,
                 on_done: Callable[[SelectionResult], None] | None = None,
                 log: Callable[[str, str], None] | None = None):
        self.cfg, self.export = cfg, export
        self.on_done = on_done or (lambda r: None)
        self.log = log or (lambda level, text: None)
        self.jobs = JobManager(max_queued=cfg.max_queued, on_update=on_update,
                               name="view_selection", max_job_s=cfg.max_job_s)

    def submit(self, req: SelectRequest) -> JobInfo:
        cfg = self.cfg
        objects = resolve_objects(cfg, req.object_names, req.mesh_paths)
        seq = ""
        if req.sequence_path:
            p = confine(cfg.data_path, req.sequence_path, "sequence_path", must_exist=True)
            if not (p / "scene_camera.json").is_file():
                raise FileFormatError(f"sequence_path '{req.sequence_path}' is not a BOP scene "
                                      "folder (no scene_camera.json); leave it empty to export "
                                      "the reconstruction node's buffer")
            seq = str(p)
        ws = Workspace(cfg.workspace_root)
        out = ws.root / safe_name(req.workspace, "workspace") if req.workspace else None

        def run(progress):
            try:
                return self._run(objects, seq, out or ws.root / progress.job_id, progress)
            finally:   # an idle node gives the job's peak back (the soak: ~140 MB held)
                release_memory()

        return self.jobs.submit("select_views", run, ",".join(n for n, _ in objects))

    def _run(self, objects, sequence_path: str, out: Path, progress) -> str:
        if not sequence_path:
            if self.export is None:
                raise ServiceUnavailableError("no reconstruction node to export the live "
                                              "buffer from; give sequence_path")
            progress.report("export", 0.0, "exporting the live buffer")
            live = Workspace(self.cfg.workspace_root).within(self.cfg.live_export_dir,
                                                             "live_export_dir")
            sequence_path = self.export(str(live), self.cfg.export_timeout_s)
        seq = read_bop_scene(sequence_path)
        odom = load_odometry(sequence_path, len(seq.frames))
        specs = [ObjectSpec(name=n, mesh_path=m, obj_id=i + 1)
                 for i, (n, m) in enumerate(objects)]
        report = run_self_annotation(seq, specs, out, self.cfg.self_annotation,
                                     progress.report, T_odom_cameras=odom)
        good, errors = [], []
        for name, entry in report["objects"].items():
            if "error_code" in entry:
                errors.append((name, entry["error_code"], entry["error"]))
                self.log("error", f"{name}: no selection [{entry['error_code']}]: "
                                  f"{entry['error']}")
            else:
                good.append(name)
            if "warning" in entry:  # e.g. INSUFFICIENT_COVERAGE: selected, but say so
                self.log("warning", entry["warning"])
        if not good:
            name, code, msg = errors[0]
            raise error_for_code(code, f"no object could be selected; {name}: {msg}")
        if self.cfg.packages:  # what a workstation renders and trains from (nol_ros.handoff)
            for name in good:
                progress.report("package", 1.0, f"{name}: writing its package")
                pack_learnt_object(out, name, sequence_path, out / PACKAGES / name,
                                   self.cfg.package_keyframe_step)
        progress.report("publish", 1.0, f"publishing {len(good)} selections")
        self.on_done(SelectionResult(AnnotationFiles(out).dir, sequence_path, good, errors))
        return str(out)

    def shutdown(self) -> None:
        self.jobs.shutdown()
