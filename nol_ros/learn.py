"""Learning objects (core, no rclpy): what the nol node's LearnObject job and ``nol-ros learn``
run. Training the recognisers on what was learnt: :mod:`nol_ros.recognition.pipeline`.

Learning one object (:func:`learn_object`): source -> sequence -> self-annotation + view
selection (:func:`annotate_object`) -> its training set rendered with the object renderer
(:func:`render_training_set`: NOL or its IBR baseline, the pose grid of a recognition preset).
An object self-annotated elsewhere (SOURCE_WORKSPACE: the package a robot's view selection wrote,
:mod:`nol_ros.handoff`) skips the self-annotation: the package is taken as it is
(:func:`adopt_workspace`) and only rendered here.
The result is the learnt object ``ROOT/NAME`` of the workspace root (layout:
:mod:`nol_ros.workspace`). Learning again builds the new version beside the old one
(``ROOT/.NAME.new``) and swaps it in only when every stage succeeded: a failed or cancelled
re-learn leaves the object as it was.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros import distributed
from nol_ros.datasets.bag_import import bag_to_bop_scene, load_odometry
from nol_ros.datasets.bop import read_bop_scene
from nol_ros.datasets.smot import read_smot
from nol_ros.device import release_memory, resolve_device
from nol_ros.enums import Preset, RenderStageMethod, parse_field
from nol_ros.errors import ConfigError, FileFormatError, InputError, error_for_code
from nol_ros.handoff import check_package
from nol_ros.io_utils import atomic_write_json
from nol_ros.mesh import load_mesh
from nol_ros.progress import ProgressFn, noop_progress, prefixed
from nol_ros.recognition.pipeline import recognition_preset
from nol_ros.recognition.trainset import write_render_set
from nol_ros.selfannotate import ObjectSpec, SelfAnnotationConfig, run_self_annotation
from nol_ros.threads import thread_settings
from nol_ros.workspace import BadPathError, LearntObject, Workspace, safe_name

SOURCE_LIVE_BUFFER, SOURCE_BAG, SOURCE_DATASET = 0, 1, 2
SOURCE_WORKSPACE = 3  # an object self-annotated elsewhere (a robot's package): render only


@dataclass(frozen=True)
class RenderStageConfig:
    """The last stage of learning an object: its training set, rendered.

    method: auto (the renderer the shipped model card records as measured best: nol, fit or
    ibr; nol_ros.nol.renderer.default_method), nol, fit (the surface colour fitted to the
    views, nol_ros.nol.surface_fit), ibr (= ibr_angle), ibr_mean, ibr_best.
    checkpoint: NOL checkpoint for method nol ("" = the shipped model). preset: the recognition
    preset whose pose grid is rendered (tiny 54 images, demo 378, cpu 756, paper 9072 per
    object). refine_sources: refine the source poses once (paper Sec. 3.3) before rendering.
    finetune: fine-tune the NOL network on the object's own views (method nol) after that
    (measured on real scanned objects: +0.5 dB on a box at 0-10 mm of pose noise, +0.1 dB on a
    can; BENCHMARKS.md "NOL on real textures").
    batch: target poses per renderer call. Everything else is the one configuration of
    :meth:`object_renderer_config` (nol_ros.nol.renderer.ObjectRendererConfig), which the
    benchmarks measure."""

    enabled: bool = True
    method: RenderStageMethod = RenderStageMethod.AUTO
    checkpoint: str = ""
    preset: Preset = Preset.DEMO
    refine_sources: bool = True
    finetune: bool = True
    batch: int = 16

    def __post_init__(self):
        parse_field(self, "method", RenderStageMethod, "render.method")
        parse_field(self, "preset", Preset, "render.preset")
        if not 1 <= self.batch <= 1024:
            raise ConfigError(f"render.batch {self.batch} must be in [1, 1024] poses per "
                              "renderer call")

    def object_renderer_config(self, method: str | None = None):
        """The renderer configuration this stage runs (nol_ros.nol.renderer.
        ObjectRendererConfig): its defaults, with this stage's method ("auto" resolved by
        nol_ros.nol.renderer.default_method), batch, and the per-object refinement and
        fine-tuning switched off when ``refine_sources`` / ``finetune`` say so."""
        # lazy: nol_ros.nol.renderer imports torch (~2 s)
        from nol_ros.nol.renderer import (
            FinetuneConfig,
            ObjectRendererConfig,
            RefineConfig,
            resolve_method,
        )

        m = resolve_method(method or self.method, bool(self.checkpoint))
        base = ObjectRendererConfig()
        return ObjectRendererConfig(
            render=dataclasses.replace(base.render, method=m, batch=self.batch),
            refine_object=base.refine_object if self.refine_sources
            else RefineConfig(method="none"),
            finetune=base.finetune if self.finetune else FinetuneConfig(steps=0))


@dataclass(frozen=True)
class LearnConfig:
    """workspace_root: where learnt objects go (:mod:`nol_ros.workspace`). The rest: how the
    source is read and the object self-annotated and rendered."""

    workspace_root: str = "nol_workspace"
    self_annotation: SelfAnnotationConfig = field(default_factory=SelfAnnotationConfig)
    bag_rgb_topic: str = "/camera/rgb/image_raw"
    bag_depth_topic: str = "/camera/depth_registered/image_raw"
    bag_camera_info_topic: str = "/camera/rgb/camera_info"
    smot_sequence: str = "train/seq1"
    render: RenderStageConfig = field(default_factory=RenderStageConfig)


def detect_dataset(path: str | Path) -> str:
    """'bop' for a BOP scene folder, 'smot' for a SMOT-layout root, else FileFormatError."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"dataset path '{p}' does not exist")
    if (p / "scene_camera.json").exists() and (p / "scene_gt.json").exists():
        return "bop"
    if (p / "camera_intrinsic.json").exists():
        return "smot"
    raise FileFormatError(
        f"'{p}' is neither a BOP scene folder (scene_camera.json + scene_gt.json) nor a SMOT "
        "root (camera_intrinsic.json); point source_path at one of those")


def load_source(source: int, path: str, cfg: LearnConfig, scene_dir: Path):
    """Read the source of a LearnObject request into (Sequence, T_odom_camera per frame or
    None); a bag is converted into the BOP scene ``scene_dir`` first (replaced)."""
    if source == SOURCE_DATASET:
        kind = detect_dataset(path)
        if kind == "bop":
            return read_bop_scene(path), None
        return read_smot(path, seq=cfg.smot_sequence), None
    if source == SOURCE_BAG:
        if not Path(path).exists():
            raise FileFormatError(f"bag '{path}' does not exist")
        if scene_dir.exists():
            shutil.rmtree(scene_dir)
        bag_to_bop_scene(path, scene_dir, rgb_topic=cfg.bag_rgb_topic,
                         depth_topic=cfg.bag_depth_topic,
                         camera_info_topic=cfg.bag_camera_info_topic)
        seq = read_bop_scene(scene_dir)
        return seq, load_odometry(scene_dir, len(seq.frames))
    if source == SOURCE_LIVE_BUFFER:
        if not path or not Path(path).exists():
            raise InputError("the live buffer has not been exported; call the reconstruction "
                             "node's export service first (the nol node does this for you)")
        seq = read_bop_scene(path)
        # odometry.json of an export = the live tracked poses: the motion prior of re-tracking
        return seq, load_odometry(path, len(seq.frames))
    raise InputError(f"unknown source {source}; use 0 (live buffer), 1 (bag) or 2 (dataset)")


def learn_object(name: str, mesh_path: str, source: int, source_path: str,
                 cfg: LearnConfig = LearnConfig(), progress: ProgressFn = noop_progress,
                 obj_id: int | None = None,
                 symmetric: bool = False, prior_point=None, model_free: bool = False,
                 device: str | None = None) -> str:
    """Learn one object: :func:`annotate_object` (source SOURCE_WORKSPACE: :func:`adopt_workspace`
    of the package at ``source_path``, "" = ``ROOT/NAME`` itself; ``mesh_path`` unused, the
    package brings its mesh), then (``cfg.render.enabled``) :func:`render_training_set`, built
    in ``ROOT/.NAME.new`` and swapped in as ``ROOT/NAME`` when both succeeded. obj_id: None =
    the root's id for ``name`` (assigned on first use). Returns the learnt object's folder."""
    ws = Workspace(cfg.workspace_root)
    final = ws.learnt(name)
    if obj_id is None:
        obj_id = ws.object_id(name)
    staging = LearntObject(ws.root / f".{name}.new")
    _recover(final)
    if staging.dir.exists():
        shutil.rmtree(staging.dir)  # an earlier attempt's (ours: the name is ours)
    try:
        if source == SOURCE_WORKSPACE:
            progress("workspace", 0.0, f"{name}: taking the learnt object from "
                                       f"{source_path or final.dir}")
            adopt_workspace(name, source_path or str(final.dir), cfg, into=staging)
        else:
            annotate_object(name, mesh_path, source, source_path, cfg, progress, obj_id=obj_id,
                            symmetric=symmetric, prior_point=prior_point,
                            model_free=model_free, into=staging)
        if cfg.render.enabled:
            render_training_set(staging, name, obj_id, cfg.render, device, progress)
        _swap_in(staging, final)
    except BaseException:
        shutil.rmtree(staging.dir, ignore_errors=True)
        raise
    return str(final.dir)


def _recover(final: LearntObject) -> None:
    """A swap interrupted between its two renames (a crash) left ROOT/.NAME.old and no
    ROOT/NAME: put the old version back."""
    old = final.dir.parent / f".{final.name}.old"
    if old.is_dir() and not final.dir.exists():
        old.rename(final.dir)


def _swap_in(staging: LearntObject, final: LearntObject) -> None:
    old = final.dir.parent / f".{final.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if final.dir.exists():
        final.dir.rename(old)
    staging.dir.rename(final.dir)
    if old.exists():
        shutil.rmtree(old)


def annotate_object(name: str, mesh_path: str, source: int, source_path: str,
                    cfg: LearnConfig = LearnConfig(), progress: ProgressFn = noop_progress,
                    obj_id: int = 1,
                    symmetric: bool = False, prior_point=None, model_free: bool = False,
                    into: LearntObject | None = None) -> str:
    """Self-annotation + view selection of one object into ``into`` (default: the learnt object
    ``cfg.workspace_root/NAME`` itself, its renders of an earlier run removed: they show the
    old views). Returns that folder. Runs with :func:`nol_ros.threads.thread_settings` on the
    calling thread: a node's job thread and a script compute the same answer."""
    with thread_settings():
        return _annotate_object(name, mesh_path, source, source_path, cfg, progress, obj_id,
                                symmetric, prior_point, model_free, into)


def _annotate_object(name, mesh_path, source, source_path, cfg, progress, obj_id, symmetric,
                     prior_point, model_free, into) -> str:
    safe_name(name)
    if not model_free:
        if not mesh_path:
            raise InputError(f"{name}: no mesh_path; give the object's mesh (PLY/OBJ, metres) or "
                             "use the model-free option with a prior point")
        if not Path(mesh_path).is_file():
            raise FileFormatError(f"{name}: mesh '{mesh_path}' does not exist or is not a file")
        # before any long work: an unreadable, empty or centimetre mesh is refused in a second
        # (BAD_MESH / EMPTY_MESH / MESH_UNITS), not after the tracking of the whole sequence
        # (a dataset folder's kind is checked first: as cheap, and the likelier mistake)
        if source == SOURCE_DATASET:
            detect_dataset(source_path)
        load_mesh(mesh_path)
    lo = into or Workspace(cfg.workspace_root).learnt(name)
    lo.dir.mkdir(parents=True, exist_ok=True)
    progress("loading", 0.0, f"reading source {source_path}")
    seq, odom = load_source(source, source_path, cfg, lo.sequence)
    if lo.renders.exists():
        shutil.rmtree(lo.renders)
    spec = ObjectSpec(name=name, mesh_path=mesh_path, obj_id=obj_id, symmetric=symmetric,
                      prior_point=prior_point, model_free=model_free)
    rep = run_self_annotation(seq, [spec], lo.dir, cfg.self_annotation,
                              progress, T_odom_cameras=odom)
    entry = rep["objects"][name]
    if "error_code" in entry:   # raised again as its class: MESH_MISMATCH is bad input (exit 2)
        raise error_for_code(entry["error_code"], entry["error"])
    return str(lo.dir)


def adopt_workspace(name: str, source_path: str, cfg: LearnConfig = LearnConfig(),
                    into: LearntObject | None = None) -> str:
    """The learnt object ``into`` (default ``ROOT/NAME``) from a package of object ``name`` --
    an object self-annotated elsewhere (nol_ros.handoff; LearnObject with SOURCE_WORKSPACE).
    ``source_path`` empty or the folder of ``into``: the package is there already (a transfer
    put it there); another folder (e.g. on a shared file system) is copied in (its renders
    left out). Renders of an earlier run are removed. A package with a symbolic link is refused
    (BAD_PATH): it could lead out of its folder. Returns the learnt object's folder."""
    lo = into or Workspace(cfg.workspace_root).learnt(name)
    safe_name(name)
    src = Path(source_path) if source_path else lo.dir
    check_package(src, name)
    links = [p for p in src.rglob("*") if p.is_symlink()]
    if links:
        raise BadPathError(f"the package '{src}' holds symbolic links ({links[0]}); send the "
                           "files themselves")
    if src.resolve() != lo.dir.resolve():
        tmp = lo.dir.parent / f".{lo.dir.name}.adopt"
        if tmp.exists():
            shutil.rmtree(tmp)
        skip = {lo.renders.name, lo.renders_tmp.name, lo.renders_old.name}
        shutil.copytree(src, tmp, ignore=lambda d, names: [n for n in names if n in skip]
                        if Path(d) == src else [])
        if lo.dir.exists():
            shutil.rmtree(lo.dir)
        tmp.rename(lo.dir)
    for d in (lo.renders, lo.renders_tmp):
        if d.exists():
            shutil.rmtree(d)
    return str(lo.dir)


# -- rendering the training set --------------------------------------------------------------------
def _learnt(workspace: str | Path | LearntObject) -> LearntObject:
    return workspace if isinstance(workspace, LearntObject) else LearntObject(Path(workspace))


def load_renderer(workspace: str | Path | LearntObject, name: str,
                  cfg: RenderStageConfig = RenderStageConfig(), device: str | None = None,
                  prepare: bool = True, progress: ProgressFn = noop_progress):
    """The object renderer (nol_ros.nol.renderer.NolRenderer) of a learnt object, prepared by
    nol_ros.nol.renderer.prepare_renderer with ``cfg.object_renderer_config()`` (per-object
    refinement and fine-tuning as ``cfg`` says) -- the one path LearnObject, RenderViews and
    bench/bench_nol_real.py run. prepare=False: the renderer as loaded (no refinement, no
    fine-tuning). Returns (renderer, preparation info)."""
    # lazy: nol_ros.nol.network, nol_ros.nol.renderer import torch (~2 s)
    from nol_ros.nol.network import load_checkpoint
    from nol_ros.nol.renderer import (
        SHIPPED_MODEL,
        FinetuneConfig,
        ObjectRendererConfig,
        RefineConfig,
        load_sources,
        prepare_renderer,
    )

    files = _learnt(workspace).object(name)
    if not files.learnt:
        raise InputError(f"'{name}' has no selected views in '{files.dir}': learn it first "
                         "(LearnObject); its self-annotation may have failed")
    ocfg = cfg.object_renderer_config()
    if not prepare:
        ocfg = ObjectRendererConfig(render=ocfg.render, refine_object=RefineConfig(method="none"),
                                    finetune=FinetuneConfig(steps=0))
    dev = resolve_device(device)
    mesh, sources, _ = load_sources(files.dir)
    net = None
    if ocfg.render.method == "nol":
        net, _ = load_checkpoint(cfg.checkpoint or SHIPPED_MODEL, dev)
    return prepare_renderer(mesh, sources, net, ocfg, dev, progress)


def finish_render_set(lo: LearntObject, tmp: Path, out: dict, entry: dict, t0: float,
                      c0: float) -> None:
    """The render report (counts and times from ``entry``, wall since ``t0``, CPU since ``c0``)
    written into the finished set ``tmp``, which then replaces ``lo.renders`` (the old set is
    moved aside first and removed after)."""
    out["images"] = int(entry["images"])
    out["empty_images"] = int(entry["empty_images"])
    out["seconds_per_image"] = out["seconds"]["render"] / max(1, out["images"])
    out["seconds"]["total"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    atomic_write_json(tmp / lo.render_report.name, out)
    old = lo.renders_old
    if old.exists():
        shutil.rmtree(old)
    if lo.renders.exists():
        lo.renders.rename(old)
    tmp.rename(lo.renders)
    if old.exists():
        shutil.rmtree(old)


def render_report_head(name: str, obj_id: int, r, cfg: RenderStageConfig, prep: dict,
                       t0: float) -> dict:
    """The render report's fields on the renderer and its preparation (``prep``, from
    :func:`load_renderer`; t0: when loading began), the same for one worker and for ranks."""
    return {"name": name, "obj_id": int(obj_id), "method": r.cfg.method, "preset": cfg.preset,
            "device": str(r.device), "sources": len(r.sources),
            "config": json.loads(json.dumps(dataclasses.asdict(cfg.object_renderer_config()),
                                            default=str)),
            "refine": prep["refine"], "finetune": prep.get("finetune"),
            "fit": prep.get("fit"), "poses": prep.get("poses"),
            "seconds": {"load": time.perf_counter() - t0 - prep["seconds"],
                        "prepare": prep["seconds"]}}


def render_training_set(workspace: str | Path | LearntObject, name: str, obj_id: int,
                        cfg: RenderStageConfig = RenderStageConfig(), device: str | None = None,
                        progress: ProgressFn = noop_progress) -> dict:
    """Render a learnt object on the pose grid of ``cfg.preset`` into its renders/ (a render
    set, nol_ros.recognition.trainset; written to renders.tmp/ and swapped in when complete, so
    a cancelled or failed render never leaves a half set that looks done and keeps the previous
    one). The renderer is prepared first (:func:`load_renderer`: per-object source refinement
    and fine-tuning). progress(stage, fraction, message): stages "render_setup", "refine",
    "finetune", "render". Returns the report (also renders/render_report.json). Under torchrun
    the ranks render parts of the grid (nol_ros.recognition.render_shards): the same set, in a
    fraction of the time."""
    if distributed.setup(resolve_device(device)).enabled:  # torchrun: the ranks share the grid
        # lazy: circular (learn <-> recognition.render_shards)
        from nol_ros.recognition.render_shards import render_training_set_sharded

        return render_training_set_sharded(_learnt(workspace), name, obj_id, cfg, device,
                                           progress)
    lo = _learnt(workspace)
    t0 = time.perf_counter()
    c0 = time.process_time()
    progress("render_setup", 0.0, f"{name}: loading the {cfg.method} renderer")
    r, prep = load_renderer(lo, name, cfg, device,
                            progress=prefixed(progress, name))
    method = r.cfg.method
    grid = recognition_preset(cfg.preset).grid
    out = render_report_head(name, obj_id, r, cfg, prep, t0)
    tmp = lo.renders_tmp
    if tmp.exists():
        shutil.rmtree(tmp)
    t2 = time.perf_counter()
    try:
        entry = write_render_set(r, r.mesh, obj_id, tmp, grid, source=method, name=name,
                                 batch=cfg.batch,
                                 progress=prefixed(progress, name, "render"))
    except BaseException:  # cancelled or failed: no half set left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out["seconds"]["render"] = time.perf_counter() - t2
    finish_render_set(lo, tmp, out, entry, t0, c0)
    del r
    release_memory()
    return out
