"""Learning objects and their recognisers (core, no rclpy); the nol and trainer nodes and the
CLI call this.

Learning one object (:func:`learn_object`, the LearnObject job): source -> sequence ->
self-annotation + view selection (:func:`annotate_object`) -> its training set rendered with the
object renderer (:func:`render_training_set`: NOL or its IBR baseline, the pose grid of a
recognition preset). Everything lands in the object's workspace ``ROOT/NAME/``::

    ROOT/object_ids.json          name -> BOP object id, assigned once per name (first learnt = 1)
    ROOT/NAME/report.json ...     self-annotation (nol_ros.selfannotate)
    ROOT/NAME/objects/NAME/       mesh, poses, masks, selected views: the renderer's input
    ROOT/NAME/renders/            the render set (nol_ros.recognition.trainset): render_set.json,
                                  OBJ_ID/ (BOP scene: rgb, depth, masks, poses), render_report.json

Training recognisers over learnt objects (the trainer node): :func:`train_plan` checks a
request and fixes the work folder; :func:`run_train_stage` runs one of two stages on it --
``detector`` (detector set pasted from the objects' render sets + the 2D detector) or ``pose``
(pose crops + the pose network) -- and whichever stage completes the pair assembles the models
folder (:func:`nol_ros.recognition.recognizer.write_models_folder`) that the recogniser loads.
A stage that is already done for the same objects, renders and configuration is skipped; an
interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.errors import ConfigError, FileFormatError, InputError, NolError
from nol_ros.selfannotate import ObjectSpec, SelfAnnotationConfig, run_self_annotation

SOURCE_LIVE_BUFFER, SOURCE_BAG, SOURCE_DATASET = 0, 1, 2


RECOGNITION_PRESETS = ("tiny", "demo", "cpu", "paper")  # nol_ros.recognition.pipeline.PRESETS
RENDER_METHODS = ("auto", "nol", "ibr", "ibr_angle", "ibr_mean", "ibr_best")


def check_preset(name: str, what: str = "preset") -> str:
    if name not in RECOGNITION_PRESETS:
        raise ConfigError(f"{what} '{name}' unknown; use one of {list(RECOGNITION_PRESETS)} "
                          "(tiny: tests, demo: make demo, cpu: benchmark, paper: GPU)")
    return name


@dataclass(frozen=True)
class RenderStageConfig:
    """The last stage of learning an object: its training set, rendered.

    method: auto (the shipped NOL model when it exists and measured better than the IBR
    baseline, else IBR), nol, ibr (= ibr_angle), ibr_mean, ibr_best (nol_ros.nol.renderer).
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
    method: str = "auto"
    checkpoint: str = ""
    preset: str = "demo"
    refine_sources: bool = True
    finetune: bool = True
    batch: int = 16

    def __post_init__(self):
        if self.method not in RENDER_METHODS:
            raise ConfigError(f"render.method '{self.method}' unknown; use one of "
                              f"{list(RENDER_METHODS)}")
        check_preset(self.preset, "render.preset")
        if self.batch < 1:
            raise ConfigError(f"render.batch {self.batch} must be >= 1")

    def object_renderer_config(self, method: str | None = None):
        """The renderer configuration this stage runs (nol_ros.nol.renderer.
        ObjectRendererConfig): its defaults, with this stage's method ("auto" resolved by
        nol_ros.nol.renderer.default_method), batch, and the per-object refinement and
        fine-tuning switched off when ``refine_sources`` / ``finetune`` say so."""
        from nol_ros.nol.renderer import (
            FinetuneConfig,
            ObjectRendererConfig,
            RefineConfig,
            default_method,
        )

        m = method or self.method
        if m == "auto":
            m = default_method() if not self.checkpoint else "nol"
        if m == "ibr":
            m = "ibr_angle"
        base = ObjectRendererConfig()
        return ObjectRendererConfig(
            render=dataclasses.replace(base.render, method=m, batch=self.batch),
            refine_object=base.refine_object if self.refine_sources
            else RefineConfig(method="none"),
            finetune=base.finetune if self.finetune else FinetuneConfig(steps=0))


@dataclass(frozen=True)
class LearnConfig:
    workspace_root: str = "nol_workspace"
    self_annotation: SelfAnnotationConfig = field(default_factory=SelfAnnotationConfig)
    bag_rgb_topic: str = "/camera/rgb/image_raw"
    bag_depth_topic: str = "/camera/depth_registered/image_raw"
    bag_camera_info_topic: str = "/camera/rgb/camera_info"
    smot_sequence: str = "train/seq1"
    render: RenderStageConfig = field(default_factory=RenderStageConfig)


def resolve_device(device: str | None) -> str:
    """``device`` (cpu, cuda, cuda:N; "" / None = cuda when present) as torch will use it:
    cuda falls back to cpu when torch sees no GPU (the caller may log that)."""
    import torch

    d = (device or "").strip()
    if not d:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    try:
        torch.device(d)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"device '{d}' unknown ({e}); use cpu or cuda") from e
    return d


def release_memory() -> None:
    """Give freed memory back: Python garbage, torch's CUDA cache, glibc's heap (malloc_trim:
    without it a process keeps the peak RSS of a render job)."""
    import ctypes
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class OverallProgress:
    """Maps the (stage, fraction of that stage) reports of a core function onto one monotonic
    job fraction: ``spans`` gives each stage's share [lo, hi) of the job; unknown stages keep
    the current span. Calls ``report(stage, overall_fraction, message)``."""

    def __init__(self, report, spans: dict[str, tuple[float, float]], default=(0.0, 1.0)):
        self.report, self.spans, self._span, self._best = report, spans, default, 0.0

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self._span = self.spans.get(stage, self._span)
        lo, hi = self._span
        f = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
        self._best = max(self._best, f)
        self.report(stage, self._best, message)


# -- object ids ------------------------------------------------------------------------------------
OBJECT_IDS_FILE = "object_ids.json"


def object_id_for(workspace_root: str | Path, name: str, assign: bool = True) -> int:
    """The BOP object id of ``name`` in a workspace root (``ROOT/object_ids.json``); a new name
    gets the next free id (1, 2, ...) when ``assign``, else 0. The recognisers' classes are
    these ids, so every learnt object of a root has its own."""
    from nol_ros.io_utils import atomic_write_json

    p = Path(workspace_root) / OBJECT_IDS_FILE
    ids: dict[str, int] = {}
    if p.is_file():
        try:
            ids = {str(k): int(v) for k, v in json.loads(p.read_text()).items()}
        except (json.JSONDecodeError, ValueError, AttributeError) as e:
            raise FileFormatError(f"'{p}' is not a name -> id mapping ({e}); fix or delete it "
                                  "(ids are then assigned again)") from e
    if name in ids or not assign:
        return ids.get(name, 0)
    ids[name] = max(ids.values(), default=0) + 1
    atomic_write_json(p, ids)
    return ids[name]


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


def load_source(source: int, path: str, cfg: LearnConfig, scratch: Path):
    """Read the source of a LearnObject request into (Sequence, T_odom_camera per frame or
    None)."""
    if source == SOURCE_DATASET:
        kind = detect_dataset(path)
        if kind == "bop":
            from nol_ros.datasets.bop import read_bop_scene

            return read_bop_scene(path), None
        from nol_ros.datasets.smot import read_smot

        return read_smot(path, seq=cfg.smot_sequence), None
    if source == SOURCE_BAG:
        from nol_ros.datasets.bag_import import bag_to_bop_scene, load_odometry
        from nol_ros.datasets.bop import read_bop_scene

        if not Path(path).exists():
            raise FileFormatError(f"bag '{path}' does not exist")
        scene_dir = scratch / "sequence"
        if scene_dir.exists():
            import shutil

            shutil.rmtree(scene_dir)
        bag_to_bop_scene(path, scene_dir, rgb_topic=cfg.bag_rgb_topic,
                         depth_topic=cfg.bag_depth_topic,
                         camera_info_topic=cfg.bag_camera_info_topic)
        seq = read_bop_scene(scene_dir)
        return seq, load_odometry(scene_dir, len(seq.frames))
    if source == SOURCE_LIVE_BUFFER:
        from nol_ros.datasets.bag_import import load_odometry
        from nol_ros.datasets.bop import read_bop_scene

        if not path or not Path(path).exists():
            raise InputError("the live buffer has not been exported; call the reconstruction "
                             "node's export service first (the nol node does this for you)")
        seq = read_bop_scene(path)
        # odometry.json of an export = the live tracked poses: the motion prior of re-tracking
        return seq, load_odometry(path, len(seq.frames))
    raise InputError(f"unknown source {source}; use 0 (live buffer), 1 (bag) or 2 (dataset)")


def learn_object(name: str, mesh_path: str, source: int, source_path: str,
                 cfg: LearnConfig = LearnConfig(), progress=None, obj_id: int | None = None,
                 symmetric: bool = False, prior_point=None, model_free: bool = False,
                 device: str | None = None) -> str:
    """Learn one object: :func:`annotate_object`, then (``cfg.render.enabled``)
    :func:`render_training_set`. obj_id: None = the workspace root's id for ``name``
    (:func:`object_id_for`). Returns the object's workspace directory."""
    if obj_id is None:
        obj_id = object_id_for(cfg.workspace_root, name)
    ws = annotate_object(name, mesh_path, source, source_path, cfg, progress, obj_id=obj_id,
                         symmetric=symmetric, prior_point=prior_point, model_free=model_free)
    if cfg.render.enabled:
        render_training_set(ws, name, obj_id, cfg.render, device, progress)
    return ws


def annotate_object(name: str, mesh_path: str, source: int, source_path: str,
                    cfg: LearnConfig = LearnConfig(), progress=None, obj_id: int = 1,
                    symmetric: bool = False, prior_point=None, model_free: bool = False) -> str:
    """Self-annotation + view selection of one object into ``cfg.workspace_root/NAME`` (its
    renders of an earlier run are removed: they show the old views). Returns the workspace."""
    if not name or "/" in name:
        raise InputError(f"object name '{name}' must be non-empty and contain no '/'")
    if not model_free:
        if not mesh_path:
            raise InputError(f"{name}: no mesh_path; give the object's mesh (PLY/OBJ, metres) or "
                             "use the model-free option with a prior point")
        if not Path(mesh_path).is_file():
            raise FileFormatError(f"{name}: mesh '{mesh_path}' does not exist or is not a file")
    ws = Path(cfg.workspace_root) / name
    ws.mkdir(parents=True, exist_ok=True)
    report = (progress or (lambda *a: None))
    report("loading", 0.0, f"reading source {source_path}")
    seq, odom = load_source(source, source_path, cfg, ws)
    if (ws / RENDERS).exists():
        shutil.rmtree(ws / RENDERS)
    spec = ObjectSpec(name=name, mesh_path=mesh_path, obj_id=obj_id, symmetric=symmetric,
                      prior_point=prior_point, model_free=model_free)
    rep = run_self_annotation(seq, [spec], ws, cfg.self_annotation,
                              progress or (lambda *a: None), T_odom_cameras=odom)
    entry = rep["objects"][name]
    if "error_code" in entry:
        err = NolError(entry["error"])
        err.code = entry["error_code"]
        raise err
    return str(ws)


# -- rendering the training set --------------------------------------------------------------------
RENDERS = "renders"
RENDER_REPORT = "render_report.json"


def object_dir(workspace: str | Path, name: str) -> Path:
    """The learnt object's folder (the renderer's input): WORKSPACE/objects/NAME."""
    return Path(workspace) / "objects" / name


def load_renderer(workspace: str | Path, name: str, cfg: RenderStageConfig = RenderStageConfig(),
                  device: str | None = None, prepare: bool = True, progress=None):
    """The object renderer (nol_ros.nol.renderer.NolRenderer) of a learnt object, prepared by
    nol_ros.nol.renderer.prepare_renderer with ``cfg.object_renderer_config()`` (per-object
    refinement and fine-tuning as ``cfg`` says) -- the one path LearnObject, RenderViews and
    bench/bench_nol_real.py run. prepare=False: the renderer as loaded (no refinement, no
    fine-tuning). Returns (renderer, preparation info)."""
    from nol_ros.nol.network import load_checkpoint
    from nol_ros.nol.renderer import (
        SHIPPED_MODEL,
        FinetuneConfig,
        ObjectRendererConfig,
        RefineConfig,
        load_sources,
        prepare_renderer,
    )

    d = object_dir(workspace, name)
    if not (d / "views.json").is_file():
        raise InputError(f"'{name}' has no selected views in '{d}': learn it first "
                         "(LearnObject); its self-annotation may have failed")
    ocfg = cfg.object_renderer_config()
    if not prepare:
        ocfg = ObjectRendererConfig(render=ocfg.render, refine_object=RefineConfig(method="none"),
                                    finetune=FinetuneConfig(steps=0))
    dev = resolve_device(device)
    mesh, sources, _ = load_sources(d)
    net = None
    if ocfg.render.method == "nol":
        net, _ = load_checkpoint(cfg.checkpoint or SHIPPED_MODEL, dev)
    return prepare_renderer(mesh, sources, net, ocfg, dev, progress)


def render_training_set(workspace: str | Path, name: str, obj_id: int,
                        cfg: RenderStageConfig = RenderStageConfig(), device: str | None = None,
                        progress=None) -> dict:
    """Render a learnt object on the pose grid of ``cfg.preset`` into WORKSPACE/renders/ (a
    render set, nol_ros.recognition.trainset; written to renders.tmp/ and moved into place when
    complete, so a cancelled or failed render never leaves a half set that looks done). The
    source poses are refined once first (``cfg.refine_sources``). progress(stage, fraction,
    message): stages "render_setup", "refine", "finetune", "render". Returns the report (also
    WORKSPACE/renders/render_report.json)."""
    from nol_ros.io_utils import atomic_write_json
    from nol_ros.recognition.pipeline import recognition_preset
    from nol_ros.recognition.trainset import write_render_set

    report = progress or (lambda *a: None)
    ws = Path(workspace)
    t0 = time.perf_counter()
    c0 = time.process_time()
    report("render_setup", 0.0, f"{name}: loading the {cfg.method} renderer")
    r, prep = load_renderer(ws, name, cfg, device,
                            progress=lambda s, f, m="": report(s, f, f"{name}: {m}"))
    method = r.cfg.method
    grid = recognition_preset(cfg.preset).grid
    out = {"name": name, "obj_id": int(obj_id), "method": method, "preset": cfg.preset,
           "device": str(r.device), "sources": len(r.sources),
           "config": json.loads(json.dumps(dataclasses.asdict(cfg.object_renderer_config()),
                                           default=str)),
           "refine": prep["refine"], "finetune": prep.get("finetune"),
           "seconds": {"load": time.perf_counter() - t0 - prep["seconds"],
                       "prepare": prep["seconds"]}}
    tmp = ws / (RENDERS + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    t2 = time.perf_counter()
    try:
        entry = write_render_set(r, r.mesh, obj_id, tmp, grid, source=method, name=name,
                                 batch=cfg.batch,
                                 progress=lambda s, f, m="": report("render", f, f"{name}: {m}"))
    except BaseException:  # cancelled or failed: no half set left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out["seconds"]["render"] = time.perf_counter() - t2
    out["images"] = int(entry["images"])
    out["empty_images"] = int(entry["empty_images"])
    out["seconds_per_image"] = out["seconds"]["render"] / max(1, out["images"])
    out["seconds"]["total"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    atomic_write_json(tmp / RENDER_REPORT, out)
    final = ws / RENDERS
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    del r
    release_memory()
    return out


# -- training the recognisers over learnt objects ------------------------------------------------
STAGES = ("detector", "pose")


class UnknownObjectError(InputError):
    code = "UNKNOWN_OBJECT"


class NoObjectsError(InputError):
    code = "NO_OBJECTS"


@dataclass(frozen=True)
class TrainConfig:
    """Training recognisers (the trainer node's ``train.*`` parameters).

    workspace_root: where LearnObject put the learnt objects (the nol node's
    learn.workspace_root). models_dir: the models folder the recogniser loads ("" =
    ROOT/_models). preset: tiny | demo | cpu | paper when a request names none. max_seconds:
    wall-clock budget of one training stage (0 = none): training stops after the epoch / step
    that crosses it and the model trained so far is kept."""

    workspace_root: str = "nol_workspace"
    models_dir: str = ""
    preset: str = "demo"
    seed: int = 0
    max_seconds: float = 0.0

    def __post_init__(self):
        check_preset(self.preset, "train.preset")
        if self.max_seconds < 0:
            raise ConfigError(f"train.max_seconds {self.max_seconds} must be >= 0 (0 = none)")

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else \
            Path(self.workspace_root) / "_models"


@dataclass(frozen=True)
class LearntObject:
    """A learnt object with a render set: name, obj_id, its workspace, mesh and render scene."""

    name: str
    obj_id: int
    workspace: Path
    symmetric: bool
    method: str
    fingerprint: str           # changes whenever the object's renders are written again

    @property
    def mesh_path(self) -> Path:
        return object_dir(self.workspace, self.name) / "mesh.ply"

    @property
    def scene_dir(self) -> Path:
        return self.workspace / RENDERS / f"{self.obj_id:06d}"


def learnt_objects(workspace_root: str | Path) -> dict[str, LearntObject]:
    """Every object of ``workspace_root`` that was learnt and rendered (ROOT/NAME/renders/)."""
    root = Path(workspace_root)
    out: dict[str, LearntObject] = {}
    if not root.is_dir():
        return out
    for ws in sorted(root.iterdir()):
        if not ws.is_dir() or ws.name.startswith(("_", ".")):
            continue
        oj, rs = object_dir(ws, ws.name) / "object.json", ws / RENDERS / "render_set.json"
        if not (oj.is_file() and rs.is_file()):
            continue
        try:
            obj = json.loads(oj.read_text())
            rset = json.loads(rs.read_text())
            (oid, entry), = rset["objects"].items()
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise FileFormatError(f"learnt object '{ws.name}': {oj} or {rs} is unreadable ({e}); "
                                  "learn it again") from e
        fp = hashlib.sha1(json.dumps([rset.get("grid"), entry], sort_keys=True).encode()
                          ).hexdigest()[:12]
        out[ws.name] = LearntObject(ws.name, int(oid), ws, bool(obj.get("symmetric", False)),
                                    str(rset.get("source", "")), fp)
    return out


def _override(cfg, opts: dict, section: str):
    """``cfg`` (a frozen config dataclass) with ``opts`` {field: value}; types checked against
    the current values (lists for tuples)."""
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(opts) - names)
    if unknown:
        raise ConfigError(f"options_yaml: {section} has no keys {unknown}; valid: "
                          f"{sorted(names)}")
    kw = {}
    for k, v in opts.items():
        cur = getattr(cfg, k)
        ok = (isinstance(v, bool) if isinstance(cur, bool) else
              isinstance(v, int) and not isinstance(v, bool) if isinstance(cur, int) else
              isinstance(v, (int, float)) and not isinstance(v, bool) if isinstance(cur, float)
              else isinstance(v, str) if isinstance(cur, str) else
              isinstance(v, (list, tuple)) if isinstance(cur, tuple) else True)
        if not ok:
            raise ConfigError(f"options_yaml: {section}.{k} must be like {cur!r}, got {v!r}")
        kw[k] = float(v) if isinstance(cur, float) else v
    d = {**dataclasses.asdict(cfg), **kw}
    if hasattr(type(cfg), "from_dict"):
        return type(cfg).from_dict(d)
    return dataclasses.replace(cfg, **{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in kw.items()})


@dataclass(frozen=True)
class TrainPlan:
    """One checked training request: the preset (with its overrides), the objects (by obj_id),
    the work folder of this object set and preset, and the models folder."""

    preset: object                  # nol_ros.recognition.pipeline.RecognitionPreset
    objects: tuple[LearntObject, ...]
    work_dir: Path
    models_dir: Path
    seed: int
    max_seconds: float

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]


def train_plan(cfg: TrainConfig, object_names=(), preset: str = "",
               options_yaml: str = "") -> TrainPlan:
    """Check a TrainDetector / TrainPoseEstimator request (raises the NolError its reply
    reports): object_names (empty = every learnt object of the root), preset ("" = cfg's),
    options_yaml: overrides, e.g. ``{detector.epochs: 4, pose.steps: 200, seed: 1,
    max_seconds: 600}`` (sections detset, detector, pose, recognizer; keys of their configs in
    nol_ros.recognition)."""
    import yaml

    from nol_ros.recognition.pipeline import recognition_preset

    p = recognition_preset(check_preset(preset or cfg.preset))
    seed, max_s = cfg.seed, cfg.max_seconds
    if options_yaml.strip():
        try:
            opts = yaml.safe_load(options_yaml)
        except yaml.YAMLError as e:
            raise ConfigError(f"options_yaml is not valid YAML: {e}") from e
        if not isinstance(opts, dict):
            raise ConfigError("options_yaml must be a mapping, e.g. 'detector.epochs: 4'")
        from nol_ros.ros.params import flatten_mapping

        sections: dict[str, dict] = {}
        for k, v in flatten_mapping(opts).items():
            head, _, rest = k.partition(".")
            if head == "seed" and not rest:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ConfigError(f"options_yaml: seed must be an integer, got {v!r}")
                seed = v
            elif head == "max_seconds" and not rest:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise ConfigError(f"options_yaml: max_seconds must be >= 0, got {v!r}")
                max_s = float(v)
            elif head in ("detset", "detector", "pose", "recognizer") and rest and \
                    "." not in rest:
                sections.setdefault(head, {})[rest] = v
            else:
                raise ConfigError(f"options_yaml: unknown key '{k}'; use seed, max_seconds or "
                                  "detset.* / detector.* / pose.* / recognizer.* (fields of the "
                                  "nol_ros.recognition configs)")
        p = p.replace(**{k: _override(getattr(p, k), v, k) for k, v in sections.items()})
    names = list(object_names)
    if len(set(names)) != len(names):
        raise InputError(f"object_names {names} repeats a name")
    known = learnt_objects(cfg.workspace_root)
    if not names:
        names = sorted(known)
        if not names:
            raise NoObjectsError(f"no learnt object with renders in '{cfg.workspace_root}'; "
                                 "call LearnObject first (with render.enabled)")
    missing = [n for n in names if n not in known]
    if missing:
        raise UnknownObjectError(f"objects {missing} are not learnt in '{cfg.workspace_root}' "
                                 f"(learnt with renders: {sorted(known) or 'none'}); call "
                                 "LearnObject for them first")
    objs = sorted((known[n] for n in names), key=lambda o: o.obj_id)
    ids = [o.obj_id for o in objs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"learnt objects {names} share object ids {ids}; learn them into one "
                          f"workspace root (its {OBJECT_IDS_FILE} gives each name its own id)")
    key = f"{p.name}_" + "+".join(o.name for o in objs)
    if len(key) > 120:
        key = f"{p.name}_{hashlib.sha1(key.encode()).hexdigest()[:16]}"
    return TrainPlan(p, tuple(objs), Path(cfg.workspace_root) / "_training" / key,
                     cfg.models_path, seed, max_s)


def _stage_key(plan: TrainPlan, stage: str) -> dict:
    p = plan.preset
    conf = ({"detset": dataclasses.asdict(p.detset), "detector": p.detector.to_dict(),
             "max_paste": p.max_paste_per_object} if stage == "detector" else
            {"pose": p.pose.to_dict(), "max_pose": p.max_pose_per_object})
    return json.loads(json.dumps({"stage": stage, "seed": plan.seed, **conf,
                                  "objects": [[o.obj_id, o.name, o.fingerprint]
                                              for o in plan.objects]}))


def _read_stage(d: Path) -> dict:
    try:
        return json.loads((d / "stage.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _stage_done(plan: TrainPlan, stage: str) -> bool:
    d = plan.work_dir / stage
    st = _read_stage(d)
    ck = d / ("detector.pt" if stage == "detector" else "posenet.pt")
    return st.get("key") == _stage_key(plan, stage) and bool(st.get("done")) and ck.is_file()


def run_train_stage(plan: TrainPlan, stage: str, device: str | None = None,
                    progress=None) -> dict:
    """Train one stage of ``plan`` ("detector" or "pose") into plan.work_dir/STAGE/ (skipped
    when done for the same objects, renders and config; resumed after an interruption); then
    write the models folder if the other stage is done too. progress(stage, fraction, message)
    with one overall fraction. Returns {stage, skipped, models_dir ("" = not written yet),
    seconds, cpu_seconds, steps, loss, ...}."""
    from nol_ros.io_utils import atomic_write_json

    if stage not in STAGES:
        raise InputError(f"training stage '{stage}' unknown; use one of {STAGES}")
    report = progress or (lambda *a: None)
    dev = resolve_device(device)
    p, d = plan.preset, plan.work_dir / stage
    key = _stage_key(plan, stage)
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {"stage": stage, "preset": p.name, "objects": plan.names, "device": dev,
                 "work_dir": str(d), "skipped": False}
    names = {o.obj_id: o.name for o in plan.objects}
    budget = plan.max_seconds or None
    if _stage_done(plan, stage):
        out["skipped"] = True
        out.update(_read_stage(d).get("result", {}))
        report(stage, 0.9, f"{stage} already trained for {plan.names} ({p.name}); reused")
    else:
        if _read_stage(d).get("key") != key and d.exists():
            shutil.rmtree(d)  # another object set, renders or config: start afresh
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "stage.json", {"key": key, "done": False})
        if stage == "detector":
            prog = OverallProgress(report, {"detection set": (0.0, 0.1),
                                            "train detector": (0.1, 0.95)}, (0.0, 0.1))
            res = _train_detector(plan, d, names, dev, budget, prog)
        else:
            prog = OverallProgress(report, {"load crops": (0.0, 0.05),
                                            "train pose": (0.05, 0.95)}, (0.0, 0.05))
            res = _train_pose(plan, d, names, dev, budget, prog)
        out.update(res)
        atomic_write_json(d / "stage.json", {"key": key, "done": True, "result": res})
    other = "pose" if stage == "detector" else "detector"
    out["models_dir"] = ""
    if _stage_done(plan, other):
        report("models", 0.95, f"writing the models folder {plan.models_dir}")
        out["models_dir"] = str(write_models(plan))
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    return out


def _scene_backgrounds(plan: TrainPlan, prog, stage: str):
    """The frames the objects were learnt from, the objects removed (backgrounds for
    ``detset.scene_bg_prob`` of the detector images and pose crops), or None (prob 0, or the
    workspaces lack them: random backgrounds only, said in the progress)."""
    p = plan.preset
    if p.detset.scene_bg_prob <= 0:
        return None
    from nol_ros.recognition.scenes import SceneBackgrounds

    try:
        return SceneBackgrounds.from_workspaces([o.workspace for o in plan.objects],
                                                width=p.detset.width)
    except NolError as e:
        prog(stage, 0.0, f"random backgrounds only: {e}")
        return None


def _train_detector(plan: TrainPlan, d: Path, names, device, budget, prog) -> dict:
    from nol_ros.recognition.detector import train_detector
    from nol_ros.recognition.detset import write_detection_set
    from nol_ros.recognition.trainset import load_paste_samples

    p = plan.preset
    ddir = d / "detset"
    paste = {}
    for k, o in enumerate(plan.objects):
        prog("detection set", 0.5 * k / len(plan.objects), f"{o.name}: reading its renders")
        paste[o.obj_id] = load_paste_samples(o.scene_dir, o.obj_id, p.max_paste_per_object,
                                             0.0, seed=plan.seed)
    scenes = _scene_backgrounds(plan, prog, "detection set")
    summ = write_detection_set(paste, ddir, p.detset, names,
                               lambda s, f, m="": prog("detection set", 0.5 + 0.5 * f, m),
                               scenes)
    del paste
    r = train_detector(ddir / "annotations.json", d, p.detector, seed=plan.seed, device=device,
                       max_seconds=budget, progress=prog)
    return {"images": int(summ.get("images", p.detset.n_images)),
            "scene_backgrounds": int(summ.get("scene_backgrounds", 0)), "epochs": r["epochs"],
            "steps": r["steps"], "loss": r["history"][-1]["loss"] if r["history"] else None,
            "train_seconds": r["seconds"]}


def _train_pose(plan: TrainPlan, d: Path, names, device, budget, prog) -> dict:
    from nol_ros.mesh import load_mesh
    from nol_ros.recognition.posenet import train_posenet
    from nol_ros.recognition.trainset import load_pose_samples

    p = plan.preset
    samples, verts = [], {}
    for k, o in enumerate(plan.objects):
        mesh = load_mesh(o.mesh_path, units="m")
        verts[o.obj_id] = mesh.vertices
        samples.append(load_pose_samples(o.scene_dir, o.obj_id, mesh, p.pose.store_size,
                                         wide=p.pose.wide, min_visib=0.0,
                                         max_samples=p.max_pose_per_object, seed=plan.seed))
        prog("load crops", (k + 1) / len(plan.objects), f"{o.name}: {len(samples[-1])} crops")
    r = train_posenet(samples, verts, d, p.pose, names, seed=plan.seed, device=device,
                      max_seconds=budget, progress=prog,
                      scenes=_scene_backgrounds(plan, prog, "load crops"),
                      scene_prob=p.detset.scene_bg_prob)
    last = r["history"][-1] if r["history"] else {}
    return {"steps": r["steps"], "loss": last.get("loss"), "train_seconds": r["seconds"],
            "crops": {o.name: len(s) for o, s in zip(plan.objects, samples)}}


def write_models(plan: TrainPlan) -> Path:
    """Assemble plan.models_dir from the two trained stages (written beside it, then swapped
    in, so a recogniser never loads a half-written folder)."""
    from nol_ros.io_utils import atomic_write_json
    from nol_ros.mesh import load_mesh
    from nol_ros.recognition.recognizer import write_models_folder

    dst = plan.models_dir
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp"
    old = dst.parent / f".{dst.name}.old"
    for x in (tmp, old):
        if x.exists():
            shutil.rmtree(x)
    objs = [{"obj_id": o.obj_id, "name": o.name, "mesh": load_mesh(o.mesh_path, units="m"),
             "symmetric": o.symmetric} for o in plan.objects]
    write_models_folder(tmp, plan.work_dir / "detector" / "detector.pt",
                        plan.work_dir / "pose" / "posenet.pt", objs, plan.preset.recognizer,
                        extra={"preset": plan.preset.name,
                               "source": ",".join(sorted({o.method for o in plan.objects})),
                               "work_dir": str(plan.work_dir)})
    if dst.exists():
        if not (dst / "recognition.json").is_file() and any(dst.iterdir()):
            shutil.rmtree(tmp)
            raise FileFormatError(f"models_dir '{dst}' exists and is not a models folder; "
                                  "refusing to replace it (choose another train.models_dir)")
        dst.rename(old)
    tmp.rename(dst)
    if old.exists():
        shutil.rmtree(old)
    atomic_write_json(plan.work_dir / "models.json", {"models_dir": str(dst),
                                                      "written": time.time()})
    return dst
