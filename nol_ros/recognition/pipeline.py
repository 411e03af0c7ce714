"""Training the recognisers: the one pipeline the trainer node, ``nol-ros train-*``, the demo
and the benchmark run. Training images (per object a BOP scene: its rendered training set or a
real annotated sequence) -> detection set -> 2D detector, and pose crops -> pose network ->
``MODELS/`` (loadable by :class:`~nol_ros.recognition.recognizer.Recognizer`)::

    plan = train_plan(TrainConfig(workspace_root="ws"), ["mug"], "demo")   # learnt objects
    run_stage(plan, "detector"); run_stage(plan, "pose")    # the trainer node's two services
    report = train(plan)                                      # both, in one call

A :class:`TrainPlan` names the preset, the objects (:class:`TrainObject`), the work folder and
the models folder; :func:`train_plan` makes one from a workspace root of learnt objects (what
LearnObject wrote), :func:`synthetic_objects` the objects of a synthetic world for the
benchmark (ground-truth textures, real frames, or learnt). Each stage keeps its artefacts in
the work folder and is reused when done for the same objects, images and configuration,
resumed after an interruption, trained afresh otherwise; whichever stage completes the pair
writes the models folder (swapped in whole), with each object's learnt appearance (vertex
colours baked from its training images) so the recogniser can tell turns the geometry cannot
(:mod:`nol_ros.recognition.appearance`). An object whose shape is one of revolution (a can, a
bottle) has the axis detected from its mesh and its pose labels made unique about it: the pose
net learns what the shape shows, and the turn is found by the print after ICP
(:func:`label_axis`; an object declared symmetric, shape and print, keeps that pose).

Presets (:data:`PRESETS`) bundle the pose grid, the detector set, the detector and the pose
network; every stage keeps its artefacts in ``work_dir`` and is skipped (or resumed) when they
are already there for the same configuration:

- ``tiny``: for tests (a minute for one object: 54 renders, 64 detector images at 320x240,
  128 detector steps, 40 pose steps).
- ``demo``: fits the ~6-8 min recognition share of ``make demo`` on the 2-core reference
  machine (4 objects): a robot's view range (below) every 20 deg in azimuth and 10 deg in
  elevation (126 views x 3 in-plane = 378 images per object, 128 px), 800 detector images at
  320x240, detector ``cpu`` for 3 epochs, pose net ``cpu`` (narrow) for 700 steps.
- ``cpu``: the benchmark preset: the robot's view range every 10 deg (252 x 3 = 756 images per
  object), 3000 detector images, detector ``cpu`` for 3 epochs (1125 steps), pose net ``cpu``
  for 2000 steps.
- ``paper``: the paper's setup for a GPU: 5 deg grid (1296 x 7), 256 px renders, 150,000
  detector images at 640x480, RetinaNet ResNet-50-FPN, Pix2Pose with ResNet-50, ~14K steps.

The robot's view range of ``demo`` and ``cpu``: elevation 0-60 deg, in-plane -15..15 deg,
detector images pasted at 0.6-1.4 m -- a mobile robot looks at objects on a table from the side
and above, hardly rolled, not from overhead; the paper's full hemisphere (to 85 deg, +-45 deg,
0.65-1.6 m) made the training boxes squarer and smaller than what such a robot sees (BENCHMARKS.md
"Recognition"). For another robot: ``detset.distance_m`` in the training options, and a
``RecognitionPreset`` of your own with its ``PoseGridConfig`` (Python API) for the grid.

Backgrounds: random textures, and with ``scenes`` (what the trainer node and ``nol-ros
train-*`` pass: the learnt objects' own workspaces) views of the frames the robot learnt its
objects from, the objects inpainted away, for ``detset.scene_bg_prob`` (0.5) of the detector
images and pose crops -- the room, its tables and the other things on them are what the
detector must tell the objects from (:mod:`nol_ros.recognition.scenes`).

Training sources: an :class:`~nol_ros.recognition.renderers.ObjectRenderer` per object (NOL,
IBR, ground-truth textures), or ``real``: crops of a real training sequence (BOP scene) where
the object is visible >= 50 %.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros import distributed
from nol_ros.config import override, parse_options, to_dict
from nol_ros.datasets.bop import read_models_info
from nol_ros.device import resolve_device
from nol_ros.enums import Preset, TrainSource, parse_field
from nol_ros.errors import ConfigError, FileFormatError, InputError, NolError
from nol_ros.io_utils import atomic_write_json
from nol_ros.mesh import load_mesh
from nol_ros.metrics import continuous_symmetry_axis
from nol_ros.progress import OverallProgress, ProgressFn, noop_progress
from nol_ros.recognition.appearance import bake_vertex_colors, scene_views
from nol_ros.recognition.detector import DetectorConfig, detector_config, train_detector
from nol_ros.recognition.detset import DetectionSetConfig, write_detection_set
from nol_ros.recognition.posenet import PoseNetConfig, posenet_config, train_posenet
from nol_ros.recognition.poses import PoseGridConfig
from nol_ros.recognition.recognizer import RecognizerConfig, write_models_folder
from nol_ros.recognition.renderers import TexturedMeshRenderer
from nol_ros.recognition.scenes import SceneBackgrounds
from nol_ros.recognition.trainset import (
    load_paste_samples,
    load_pose_samples,
    read_render_set,
    write_render_set,
)
from nol_ros.workspace import Workspace, safe_name


@dataclass(frozen=True)
class RecognitionPreset:
    name: str
    grid: PoseGridConfig
    detset: DetectionSetConfig
    detector: DetectorConfig
    pose: PoseNetConfig
    real_min_visib: float = 0.5
    max_paste_per_object: int | None = None
    max_pose_per_object: int | None = None
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)

    def replace(self, **kw) -> RecognitionPreset:
        return dataclasses.replace(self, **kw)


_HALF = dict(width=320, height=240, focal_px=538.391 / 2)
# What a mobile robot's camera sees of an object standing on a table: from the side to 60 deg
# above (not from straight overhead), with the camera hardly rolled; the learnt sequence of the
# synthetic world sees its objects from 0.95-1.37 m, the detector set is pasted at 0.6-1.4 m
# (the robot also comes closer than it learnt from). The paper's full hemisphere (to 85 deg,
# in-plane +-45 deg, 0.65-1.6 m) stays in the ``paper`` preset; measured against each other in
# BENCHMARKS.md "Recognition".
_ROBOT_GRID = dict(el_min_deg=0.0, el_max_deg=60.0, el_step_deg=10.0, inplane_min_deg=-15.0,
                   inplane_max_deg=15.0, inplane_step_deg=15.0, crop_size=128)
_ROBOT_DISTANCE = (0.6, 1.4)
PRESETS: dict[Preset, RecognitionPreset] = {
    Preset.TINY: RecognitionPreset(
        "tiny",
        PoseGridConfig(az_step_deg=60, el_step_deg=30, el_max_deg=60, inplane_step_deg=45,
                       crop_size=64),
        DetectionSetConfig(n_images=64, objects=(1, 3), n_backgrounds=6, **_HALF),
        detector_config("tiny", min_size=240, max_size=320, epochs=8, lr=4e-3),
        posenet_config("tiny")),
    Preset.DEMO: RecognitionPreset(
        "demo",
        PoseGridConfig(az_step_deg=20, **_ROBOT_GRID),
        DetectionSetConfig(n_images=800, distance_m=_ROBOT_DISTANCE, **_HALF),
        detector_config("cpu", epochs=3),
        posenet_config("cpu", channels=(16, 24, 32, 48, 64), steps=700, ckpt_every=250)),
    Preset.CPU: RecognitionPreset(
        "cpu",
        PoseGridConfig(az_step_deg=10, **_ROBOT_GRID),
        DetectionSetConfig(n_images=3000, distance_m=_ROBOT_DISTANCE, **_HALF),
        detector_config("cpu", epochs=3),
        posenet_config("cpu", steps=2000)),
    Preset.PAPER: RecognitionPreset(
        "paper",
        PoseGridConfig(crop_size=256),
        DetectionSetConfig(n_images=150_000),
        detector_config("paper"), posenet_config("paper"), max_paste_per_object=3000),
}


def recognition_preset(name: str | RecognitionPreset) -> RecognitionPreset:
    if isinstance(name, RecognitionPreset):
        return name
    return PRESETS[Preset.parse(name)]


# -- what a training run trains on ---------------------------------------------------------------
@dataclass(frozen=True)
class TrainObject:
    """One object of a training run: its BOP object id (the recognisers' class), name, mesh
    (metres, object frame) and the BOP scene holding its training images -- a rendered set
    (``renders/OBJ_ID`` of a learnt object, or one written by :func:`render_objects`) or, with
    ``real``, a real annotated sequence (crops where it is visible >= the preset's
    real_min_visib, their backgrounds kept). ``fingerprint`` changes whenever those images
    change, so a finished stage is trained again on new images and reused otherwise.
    ``learnt_dir``: the learnt object (``ROOT/NAME``) the images came from, if any: its frames,
    the objects removed, are the detector's scene backgrounds. ``scene_obj_id``: the id the
    object has in scene_dir when it differs from obj_id (0 = the same)."""

    obj_id: int
    name: str
    mesh_path: Path
    scene_dir: Path
    real: bool = False
    symmetric: bool = False
    fingerprint: str = ""
    method: str = ""
    learnt_dir: Path | None = None
    scene_obj_id: int = 0

    @property
    def scene_id(self) -> int:
        return self.scene_obj_id or self.obj_id

    def mesh(self):
        return load_mesh(self.mesh_path, units="m")

    @classmethod
    def from_learnt(cls, lo, obj_id: int | None = None) -> TrainObject:
        """A learnt object with its rendered set (:class:`nol_ros.workspace.LearntObject`).
        obj_id: another id than the render set's (e.g. a dataset's, to score against it)."""
        try:
            obj = lo.files.read_object()
            rset = json.loads(lo.render_set_json.read_text())
            (oid, entry), = rset["objects"].items()
        except (OSError, json.JSONDecodeError, KeyError, ValueError) as e:
            raise FileFormatError(f"learnt object '{lo.name}': its object.json or render set is "
                                  f"unreadable ({e}); learn it again") from e
        fp = hashlib.sha1(json.dumps([rset.get("grid"), entry], sort_keys=True).encode()
                          ).hexdigest()[:12]
        return cls(int(obj_id or oid), lo.name, lo.files.mesh, lo.render_scene(int(oid)),
                   symmetric=bool(obj.get("symmetric", False)), fingerprint=fp,
                   method=str(rset.get("source", "")), learnt_dir=lo.dir,
                   scene_obj_id=int(oid))


@dataclass(frozen=True)
class TrainPlan:
    """One training run: the preset (with its overrides), the objects (in class order), the
    work folder that keeps every stage's artefacts, the models folder, the seed and the
    wall-clock budget of one stage (0 = none: training stops after the epoch / step that
    crosses it, and what was trained so far is kept). ``backgrounds``: learnt-object folders
    whose frames, the objects removed, are scene backgrounds (None = the objects' own learnt
    folders; () = none, random textures only)."""

    preset: RecognitionPreset
    objects: tuple[TrainObject, ...]
    work_dir: Path
    models_dir: Path
    seed: int = 0
    max_seconds: float = 0.0
    backgrounds: tuple[Path, ...] | None = None

    @property
    def background_dirs(self) -> list[Path]:
        if self.backgrounds is not None:
            return [Path(d) for d in self.backgrounds]
        return [o.learnt_dir for o in self.objects if o.learnt_dir is not None]

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    def __post_init__(self):
        ids = [o.obj_id for o in self.objects]
        if not ids:
            raise InputError("the object set is empty: give at least one object to train on")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"objects {self.names} share object ids {ids}; every class needs "
                              "its own id (learn them into one workspace root)")


STAGES = ("detector", "pose")


def _stage_key(plan: TrainPlan, stage: str) -> dict:
    p = plan.preset
    conf = ({"detset": to_dict(p.detset), "detector": to_dict(p.detector),
             "max_paste": p.max_paste_per_object} if stage == "detector" else
            {"pose": to_dict(p.pose), "max_pose": p.max_pose_per_object})
    return json.loads(json.dumps({
        "stage": stage, "seed": plan.seed, **conf, "real_min_visib": p.real_min_visib,
        "backgrounds": [str(d) for d in plan.background_dirs] if p.detset.scene_bg_prob > 0
        else [],
        "objects": [[o.obj_id, o.name, o.fingerprint, o.real] for o in plan.objects]}))


def _read_stage(d: Path) -> dict:
    try:
        return json.loads((d / "stage.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def stage_done(plan: TrainPlan, stage: str) -> bool:
    d = plan.work_dir / stage
    st = _read_stage(d)
    ck = d / ("detector.pt" if stage == "detector" else "posenet.pt")
    return st.get("key") == _stage_key(plan, stage) and bool(st.get("done")) and ck.is_file()


def run_stage(plan: TrainPlan, stage: str, device: str | None = None,
              progress: ProgressFn = noop_progress) -> dict:
    """Train one stage of ``plan`` -- ``detector`` (detection set pasted from the objects'
    images + the 2D detector) or ``pose`` (pose crops + the pose network) -- in
    plan.work_dir/STAGE/: reused when done for the same objects, images and configuration,
    resumed after an interruption, started afresh otherwise. Then writes the models folder
    when the other stage is done too. progress(stage, fraction, message) with one fraction
    over the stage. Returns {stage, reused, models_dir ("" = not written yet), seconds,
    cpu_seconds, steps, loss, ...}. Under torchrun (nol_ros.distributed) the ranks train
    together and rank 0 alone writes the work folder and the models folder."""
    if stage not in STAGES:
        raise InputError(f"training stage '{stage}' unknown; use one of {STAGES}")
    dev = resolve_device(device)
    ctx = distributed.setup(dev)                # SINGLE (all no-ops) outside torchrun
    if not ctx.is_main:
        progress = noop_progress
    p, d = plan.preset, plan.work_dir / stage
    key = _stage_key(plan, stage)
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {"stage": stage, "preset": p.name, "objects": plan.names, "device": dev,
                 "work_dir": str(d), "reused": False}
    budget = plan.max_seconds or None
    if stage_done(plan, stage):
        out["reused"] = True
        out.update(_read_stage(d).get("result", {}))
        progress(stage, 0.9, f"{stage} already trained for {plan.names} ({p.name}); reused")
    else:
        if ctx.is_main:
            if _read_stage(d).get("key") != key and d.exists():
                shutil.rmtree(d)  # another object set, images or config: start afresh
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_json(d / "stage.json", {"key": key, "done": False})
        ctx.barrier()
        if stage == "detector":
            prog = OverallProgress(progress, {"detection set": (0.0, 0.1),
                                              "train detector": (0.1, 0.95)}, (0.0, 0.1))
            res = _train_detector(plan, d, dev, budget, prog)
        else:
            prog = OverallProgress(progress, {"load crops": (0.0, 0.05),
                                              "train pose": (0.05, 0.95)}, (0.0, 0.05))
            res = _train_pose(plan, d, dev, budget, prog)
        out.update(res)
        if ctx.is_main:
            atomic_write_json(d / "stage.json", {"key": key, "done": True, "result": res})
    other = "pose" if stage == "detector" else "detector"
    out["models_dir"] = ""
    if ctx.is_main and stage_done(plan, other):
        progress("models", 0.95, f"writing the models folder {plan.models_dir}")
        out["models_dir"] = str(write_models(plan))
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    return out


def train(plan: TrainPlan, device: str | None = None, progress: ProgressFn = noop_progress) -> dict:
    """Both stages and the models folder (what ``nol-ros train-detector`` + ``train-pose``, the
    trainer node's two services and the benchmark run, one stage at a time). Returns a report
    (also plan.work_dir/train_report.json): per stage its result, ``reused`` (the stages found
    done), wall-clock and CPU seconds."""
    report: dict = {"preset": plan.preset.name, "objects": [o.obj_id for o in plan.objects],
                    "names": plan.names, "seconds": {}, "cpu_seconds": {}, "reused": []}
    for stage in STAGES:
        r = run_stage(plan, stage, device, progress)
        report[stage] = r
        report["seconds"][stage] = r["seconds"]
        report["cpu_seconds"][stage] = r["cpu_seconds"]
        if r["reused"]:
            report["reused"].append(stage)
    report["models_dir"] = report["pose"]["models_dir"]
    report["seconds"]["total"] = sum(report["seconds"].values())
    report["cpu_seconds"]["total"] = sum(report["cpu_seconds"].values())
    if distributed.current().is_main:          # under torchrun: rank 0 writes
        atomic_write_json(plan.work_dir / "train_report.json", report)
    return report


def _scene_backgrounds(plan: TrainPlan, prog, stage: str):
    """The frames the objects were learnt from, the objects removed (backgrounds for
    ``detset.scene_bg_prob`` of the detector images and pose crops), or None (prob 0, off, or
    no learnt object: random backgrounds only, said in the progress)."""
    dirs = plan.background_dirs
    if plan.preset.detset.scene_bg_prob <= 0 or not dirs:
        return None
    try:
        return SceneBackgrounds.from_workspaces(dirs, width=plan.preset.detset.width)
    except NolError as e:
        prog(stage, 0.0, f"random backgrounds only: {e}")
        return None


def _min_visib(plan: TrainPlan, o: TrainObject) -> float:
    return plan.preset.real_min_visib if o.real else 0.0


def _train_detector(plan: TrainPlan, d: Path, device, budget, prog) -> dict:
    p = plan.preset
    names = {o.obj_id: o.name for o in plan.objects}
    paste = {}
    for k, o in enumerate(plan.objects):
        prog("detection set", 0.5 * k / len(plan.objects), f"{o.name}: reading its images")
        paste[o.obj_id] = [dataclasses.replace(s, obj_id=o.obj_id) for s in load_paste_samples(
            o.scene_dir, o.scene_id, p.max_paste_per_object, _min_visib(plan, o),
            seed=plan.seed)]
    scenes = _scene_backgrounds(plan, prog, "detection set")
    ctx = distributed.current()                 # under torchrun: rank 0 writes the set
    summ = write_detection_set(paste, d / "detset", p.detset, names,
                               lambda s, f, m="": prog("detection set", 0.5 + 0.5 * f, m),
                               scenes) if ctx.is_main else {}
    ctx.barrier()
    del paste
    r = train_detector(d / "detset" / "annotations.json", d, p.detector, seed=plan.seed,
                       device=device, max_seconds=budget, progress=prog)
    return {"images": int(summ.get("images", p.detset.n_images)),
            "scene_backgrounds": int(summ.get("scene_backgrounds", 0)), "epochs": r["epochs"],
            "steps": r["steps"], "loss": r["history"][-1]["loss"] if r["history"] else None,
            "train_seconds": r["seconds"]}


def label_axis(o: TrainObject, mesh, pose: PoseNetConfig) -> tuple | None:
    """The axis (unit (3,), point (3,) m, object frame) the pose labels of ``o`` are made
    unique about, or None. An object that looks the same turned about an axis (shape and print:
    declared symmetric) always gets one. A printed object of revolution (a can, a bottle) gets
    its shape's axis too when ``pose.canonical_turns``: the network then learns only what the
    shape shows and the recogniser's turn by the learnt print finds the turn after ICP; a net
    asked to learn the turn from the print blurs its coordinates about the axis, and the pose
    is refused (the demo world: 24 of 35 cans, 27 of 40 bottles unposed with `demo` models)."""
    if not (o.symmetric or pose.canonical_turns):
        return None
    return continuous_symmetry_axis(mesh.vertices, mesh.faces)


def _train_pose(plan: TrainPlan, d: Path, device, budget, prog) -> dict:
    p = plan.preset
    samples, verts, axes = [], {}, {}
    for k, o in enumerate(plan.objects):
        mesh = o.mesh()
        verts[o.obj_id] = mesh.vertices
        axes[o.name] = label_axis(o, mesh, p.pose)
        s = load_pose_samples(o.scene_dir, o.scene_id, mesh, p.pose.store_size,
                              wide=p.pose.wide, min_visib=_min_visib(plan, o),
                              max_samples=p.max_pose_per_object, keep_background=o.real,
                              seed=plan.seed, symmetry_axis=axes[o.name])
        s.obj_id = o.obj_id
        samples.append(s)
        prog("load crops", (k + 1) / len(plan.objects), f"{o.name}: {len(samples[-1])} crops")
    r = train_posenet(samples, verts, d, p.pose, {o.obj_id: o.name for o in plan.objects},
                      seed=plan.seed, device=device, max_seconds=budget, progress=prog,
                      scenes=_scene_backgrounds(plan, prog, "load crops"),
                      scene_prob=p.detset.scene_bg_prob)
    last = r["history"][-1] if r["history"] else {}
    return {"steps": r["steps"], "loss": last.get("loss"), "train_seconds": r["seconds"],
            "crops": {o.name: len(s) for o, s in zip(plan.objects, samples)},
            "symmetry_axes": {n: None if a is None else [a[0].tolist(), a[1].tolist()]
                              for n, a in axes.items()}}


def write_models(plan: TrainPlan) -> Path:
    """Assemble plan.models_dir from the two trained stages (written beside it, then swapped
    in, so a recogniser never loads a half-written folder)."""
    dst = plan.models_dir
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp"
    old = dst.parent / f".{dst.name}.old"
    for x in (tmp, old):
        if x.exists():
            shutil.rmtree(x)
    objs = [{"obj_id": o.obj_id, "name": o.name, "mesh": o.mesh(), "symmetric": o.symmetric}
            for o in plan.objects]
    if plan.preset.recognizer.appearance:
        for o, d in zip(plan.objects, objs):   # the learnt print, to tell turns apart
            if not o.symmetric:
                d["appearance"], _ = bake_vertex_colors(d["mesh"], scene_views(o.scene_dir,
                                                                             o.scene_id))
    write_models_folder(tmp, plan.work_dir / "detector" / "detector.pt",
                        plan.work_dir / "pose" / "posenet.pt", objs, plan.preset.recognizer,
                        extra={"preset": plan.preset.name,
                               "source": ",".join(sorted({o.method or ("real" if o.real else "")
                                                          for o in plan.objects})),
                               "work_dir": str(plan.work_dir)})
    if dst.exists():
        if not (dst / "recognition.json").is_file() and any(dst.iterdir()):
            shutil.rmtree(tmp)
            raise FileFormatError(f"models_dir '{dst}' exists and is not a models folder; "
                                  "refusing to replace it (choose another models folder)")
        dst.rename(old)
    tmp.rename(dst)
    if old.exists():
        shutil.rmtree(old)
    atomic_write_json(plan.work_dir / "models.json", {"models_dir": str(dst),
                                                      "written": time.time()})
    return dst


# -- training requests over a workspace root (the trainer node, nol-ros train-*) -----------------
@dataclass(frozen=True)
class TrainConfig:
    """Training recognisers (the trainer node's ``train.*`` parameters).

    workspace_root: where LearnObject put the learnt objects (the nol node's
    learn.workspace_root). models_dir: the models folder the recogniser loads, relative to the
    root ("" = ROOT/_models). preset: tiny | demo | cpu | paper when a request names none.
    max_seconds: wall-clock budget of one training stage (0 = none)."""

    workspace_root: str = "nol_workspace"
    models_dir: str = ""
    preset: Preset = Preset.DEMO
    seed: int = 0
    max_seconds: float = 0.0

    def __post_init__(self):
        parse_field(self, "preset", Preset, "train.preset")
        if self.max_seconds < 0:
            raise ConfigError(f"train.max_seconds {self.max_seconds} must be >= 0 (0 = none)")

    @property
    def workspace(self):
        return Workspace(self.workspace_root)

    @property
    def models_path(self) -> Path:
        ws = self.workspace
        return ws.within(self.models_dir, "train.models_dir") if self.models_dir else ws.models


PRESET_SECTIONS = ("detset", "detector", "pose", "recognizer")  # what options_yaml may change


@dataclass(frozen=True)
class RunOptions:
    """The per-request run settings of a training request (options_yaml ``seed``,
    ``max_seconds``)."""

    seed: int = 0
    max_seconds: float = 0.0

    def __post_init__(self):
        if self.max_seconds < 0:
            raise ConfigError(f"max_seconds must be >= 0, got {self.max_seconds}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")


class UnknownObjectError(InputError):
    code = "UNKNOWN_OBJECT"


class NoObjectsError(InputError):
    code = "NO_OBJECTS"


def learnt_objects(workspace) -> dict[str, TrainObject]:
    """Every object of a workspace root that was learnt and rendered, by name."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    return {n: TrainObject.from_learnt(ws.learnt(n)) for n in ws.names(rendered=True)}


def train_plan(cfg: TrainConfig, object_names=(), preset: str = "",
               options_yaml: str = "") -> TrainPlan:
    """Check a TrainDetector / TrainPoseEstimator request (raises the NolError its reply
    reports): object_names (empty = every learnt object of the root), preset ("" = cfg's),
    options_yaml: overrides, e.g. ``{detector.epochs: 4, pose.steps: 200, seed: 1,
    max_seconds: 600}`` (sections detset, detector, pose, recognizer; keys of their configs in
    nol_ros.recognition)."""
    p = recognition_preset(preset or cfg.preset)
    opts = parse_options(options_yaml)
    top = {k: opts.pop(k) for k in ("seed", "max_seconds") if k in opts}
    bad = [k for k in opts if k.partition(".")[0] not in PRESET_SECTIONS or "." not in k]
    if bad:
        raise ConfigError(f"options_yaml: unknown key(s) {bad}; use seed, max_seconds or "
                          "detset.* / detector.* / pose.* / recognizer.* (fields of the "
                          "nol_ros.recognition configs)")
    p = override(p, opts, "options_yaml: ")
    run = override(RunOptions(cfg.seed, cfg.max_seconds), top, "options_yaml: ")
    names = [safe_name(n) for n in object_names]
    if len(set(names)) != len(names):
        raise InputError(f"object_names {names} repeats a name")
    ws = cfg.workspace
    known = learnt_objects(ws)
    if not names:
        names = sorted(known)
        if not names:
            raise NoObjectsError(f"no learnt object with renders in '{ws.root}'; call "
                                 "LearnObject first (with render.enabled)")
    missing = [n for n in names if n not in known]
    if missing:
        raise UnknownObjectError(f"objects {missing} are not learnt in '{ws.root}' (learnt with "
                                 f"renders: {sorted(known) or 'none'}); call LearnObject for "
                                 "them first")
    objs = tuple(sorted((known[n] for n in names), key=lambda o: o.obj_id))
    key = f"{p.name}_" + "+".join(o.name for o in objs)
    if len(key) > 120:
        key = f"{p.name}_{hashlib.sha1(key.encode()).hexdigest()[:16]}"
    return TrainPlan(p, objs, ws.training(key), cfg.models_path, run.seed, run.max_seconds)


# -- objects for the benchmark: a synthetic world's, from each training source ---------------------
def render_objects(objects: list[tuple[int, str, object, object]], out_dir: str | Path,
                   grid: PoseGridConfig, source: str, progress: ProgressFn = noop_progress
                   ) -> dict[int, Path]:
    """Render (obj_id, name, renderer, mesh) on ``grid`` into the render set ``out_dir`` (an
    object already rendered there on the same grid and source is kept). Returns obj_id -> its
    BOP scene."""
    out = Path(out_dir)
    grid_key = dataclasses.asdict(grid)
    scenes = {}
    for k, (oid, name, renderer, mesh) in enumerate(objects):
        try:
            meta = read_render_set(out)
            e = meta["objects"].get(str(oid))
            done = e is not None and meta.get("grid") == grid_key and \
                meta.get("source") == source and e["images"] == grid.n_images
        except FileFormatError:
            done = False
        if not done:
            write_render_set(renderer, mesh, oid, out, grid, source=source, name=name,
                             progress=lambda s, f, m, k=k: progress(
                                 "render", (k + f) / len(objects), m))
        scenes[oid] = out / f"{oid:06d}"
    return scenes


def synthetic_objects(data_root: str | Path, source: str | TrainSource, work_dir: str | Path,
                      grid: PoseGridConfig, obj_ids: list[int] | None = None,
                      workspace_root: str | Path | None = None,
                      progress: ProgressFn = noop_progress) -> list[TrainObject]:
    """A synthetic world's objects (``python -m nol_ros.datasets.synthetic``), with the training
    images of a source, under the world's object ids: ``gt`` (the ground-truth textured models,
    rendered on ``grid`` into work_dir/render), ``real`` (crops of train/000001 with its
    ground-truth poses and masks), or ``nol`` / ``ibr``: the learnt objects' training sets that
    LearnObject rendered with that method into ``workspace_root`` (the nol node's / ``nol-ros
    learn``'s root: ROOT/NAME/renders; objects matched to the world's by name)."""
    source = TrainSource.parse(source, "training source", InputError)
    root = Path(data_root)
    wj = root / "world.json"
    if not wj.is_file():
        raise FileFormatError(f"'{wj}' does not exist: '{root}' is not a synthetic world")
    world = json.loads(wj.read_text())
    info = read_models_info(root / "models" / "models_info.json")
    ids = [int(k) for k in world["objects"]] if obj_ids is None else [int(i) for i in obj_ids]
    if not ids:
        raise InputError("no objects selected")
    for oid in ids:
        if oid not in info:
            raise InputError(f"object {oid} is not in {root / 'models'}")

    def name(oid):
        return str(info[oid].get("name", f"obj_{oid:06d}"))

    def sym(oid):
        return bool(info[oid].get("symmetries_continuous") or
                    info[oid].get("symmetries_discrete"))

    if source == TrainSource.GT:
        todo = []
        for oid in ids:
            tex = load_mesh(root / "models_textured" / f"obj_{oid:06d}.obj")
            todo.append((oid, name(oid), TexturedMeshRenderer(tex), tex.untextured()))
        scenes = render_objects(todo, Path(work_dir) / "render", grid, "gt", progress)
        rset = read_render_set(Path(work_dir) / "render")
        return [TrainObject(oid, name(oid), root / "models" / f"obj_{oid:06d}.ply", scenes[oid],
                            symmetric=sym(oid), method="gt",
                            fingerprint=hashlib.sha1(json.dumps(
                                rset["objects"][str(oid)], sort_keys=True).encode()
                            ).hexdigest()[:12]) for oid in ids]
    if source == TrainSource.REAL:
        scene = root / "train" / "000001"
        return [TrainObject(oid, name(oid), root / "models" / f"obj_{oid:06d}.ply", scene,
                            real=True, symmetric=sym(oid), method="real",
                            fingerprint=f"real:{scene}") for oid in ids]
    if workspace_root is None:
        raise InputError(f"source '{source}' needs the workspace root of the learnt objects")
    learnt = learnt_objects(workspace_root)
    out = []
    for oid in ids:
        if name(oid) not in learnt:
            raise InputError(f"'{name(oid)}' is not learnt with renders in '{workspace_root}' "
                             f"(learnt: {sorted(learnt) or 'none'})")
        t = learnt[name(oid)]
        if not t.method.startswith(source):
            raise InputError(f"'{name(oid)}' in '{workspace_root}' was rendered with "
                             f"{t.method}, not {source}: learn it with render.method {source}")
        out.append(dataclasses.replace(t, obj_id=oid, scene_obj_id=t.scene_id,
                                       symmetric=sym(oid)))
    return out
