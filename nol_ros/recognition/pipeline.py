"""From a renderer per object to a models folder: render sets -> detector set -> detector and
pose network -> ``MODELS/`` (loadable by :class:`~nol_ros.recognition.recognizer.Recognizer`).

    objects = synthetic_objects("data/demo", "gt")          # or your own TrainObject list
    objects = workspace_objects("ws/", "nol")               # learnt objects, NOL renderer
    report = train_recognisers(objects, "work/", "work/models", preset="demo")

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
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.errors import ConfigError, FileFormatError, InputError
from nol_ros.io_utils import atomic_write_json
from nol_ros.mesh import Mesh
from nol_ros.recognition.detector import DetectorConfig, detector_config
from nol_ros.recognition.detset import DetectionSetConfig
from nol_ros.recognition.posenet import PoseNetConfig, posenet_config
from nol_ros.recognition.poses import PoseGridConfig
from nol_ros.recognition.recognizer import RecognizerConfig

ProgressFn = Callable[[str, float, str], None]


def _noop(stage: str, fraction: float, message: str = "") -> None:
    pass


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
PRESETS: dict[str, RecognitionPreset] = {
    "tiny": RecognitionPreset(
        "tiny",
        PoseGridConfig(az_step_deg=60, el_step_deg=30, el_max_deg=60, inplane_step_deg=45,
                       crop_size=64),
        DetectionSetConfig(n_images=64, objects=(1, 3), n_backgrounds=6, **_HALF),
        detector_config("tiny", min_size=240, max_size=320, epochs=8, lr=4e-3),
        posenet_config("tiny")),
    "demo": RecognitionPreset(
        "demo",
        PoseGridConfig(az_step_deg=20, **_ROBOT_GRID),
        DetectionSetConfig(n_images=800, distance_m=_ROBOT_DISTANCE, **_HALF),
        detector_config("cpu", epochs=3),
        posenet_config("cpu", channels=(16, 24, 32, 48, 64), steps=700, ckpt_every=250)),
    "cpu": RecognitionPreset(
        "cpu",
        PoseGridConfig(az_step_deg=10, **_ROBOT_GRID),
        DetectionSetConfig(n_images=3000, distance_m=_ROBOT_DISTANCE, **_HALF),
        detector_config("cpu", epochs=3),
        posenet_config("cpu", steps=2000)),
    "paper": RecognitionPreset(
        "paper",
        PoseGridConfig(crop_size=256),
        DetectionSetConfig(n_images=150_000),
        detector_config("paper"), posenet_config("paper"), max_paste_per_object=3000),
}


def recognition_preset(name: str | RecognitionPreset) -> RecognitionPreset:
    if isinstance(name, RecognitionPreset):
        return name
    if name not in PRESETS:
        raise ConfigError(f"recognition preset '{name}' unknown; use one of {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass
class TrainObject:
    """One object to learn. mesh: its geometry (metres, object frame; the mesh the renderer
    draws). renderer: draws it (NOL, IBR, textured mesh), or None with real_scene: a BOP scene
    holding annotated real images of it (the "real" source)."""

    obj_id: int
    name: str
    mesh: Mesh
    renderer: object | None = None
    real_scene: str | None = None
    symmetric: bool = False
    symmetry_axis: tuple | None = None   # (axis (3,), offset (3,) m) of a continuous symmetry


def _stage_done(path: Path, key: dict) -> bool:
    """True when ``path`` records a finished stage for ``key`` (compared as JSON: tuples in the
    configs come back as lists)."""
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("key") == json.loads(json.dumps(key))
    except json.JSONDecodeError:
        return False


def _keyed_dir(d: Path, key: dict) -> None:
    """A network's folder for training data and config ``key``: resumed when the key is the
    same, emptied when it changed (a checkpoint of other data must not be continued)."""
    kp = d / "input_key.json"
    if d.is_dir() and not _stage_done(kp, key):
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    if not kp.is_file():
        atomic_write_json(kp, {"key": key})


def train_recognisers(objects: list[TrainObject], work_dir: str | Path,
                      models_dir: str | Path, preset: str | RecognitionPreset = "demo",
                      source: str = "", seed: int = 0, device: str | None = None,
                      progress: ProgressFn = _noop, scenes=None) -> dict:
    """Run every stage for ``objects`` and write the models folder. scenes: backgrounds from
    the robot's own frames for the detector set
    (:class:`~nol_ros.recognition.scenes.SceneBackgrounds`; None = random textures only).
    Returns a report with the
    wall-clock and CPU seconds of each stage (CPU time: all threads of this process; on a busy
    machine it says what the stage costs), the image counts and the final training losses (also
    written to work_dir/train_report.json)."""
    from nol_ros.recognition.detector import train_detector
    from nol_ros.recognition.detset import write_detection_set
    from nol_ros.recognition.posenet import train_posenet
    from nol_ros.recognition.recognizer import write_models_folder
    from nol_ros.recognition.trainset import (
        load_paste_samples,
        load_pose_samples,
        read_render_set,
        write_render_set,
    )

    p = recognition_preset(preset)
    if not objects:
        raise InputError("the object set is empty: give at least one TrainObject")
    ids = [o.obj_id for o in objects]
    if len(set(ids)) != len(ids):
        raise InputError(f"object ids {ids} repeat")
    for o in objects:
        if o.renderer is None and not o.real_scene:
            raise InputError(f"object {o.obj_id} ({o.name}) has neither a renderer nor a real "
                             "scene to learn from")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"preset": p.name, "source": source, "objects": ids, "seconds": {},
                    "cpu_seconds": {}}
    c0 = time.process_time()

    def lap(name: str, t_start: float) -> None:
        nonlocal c0
        report["seconds"][name] = time.perf_counter() - t_start
        report["cpu_seconds"][name] = time.process_time() - c0
        c0 = time.process_time()
    names = {o.obj_id: o.name for o in objects}

    # 1. render sets (objects with a renderer)
    t0 = time.perf_counter()
    scene_of: dict[int, tuple[Path, float, bool]] = {}
    grid_key = dataclasses.asdict(p.grid)
    for k, o in enumerate(objects):
        if o.renderer is None:
            scene_of[o.obj_id] = (Path(o.real_scene), p.real_min_visib, True)
            continue
        rdir = work / "render"
        done = False
        try:
            meta = read_render_set(rdir)
            e = meta["objects"].get(str(o.obj_id))
            done = e is not None and meta.get("grid") == grid_key and \
                meta.get("source") == source and e["images"] == p.grid.n_images
        except FileFormatError:
            pass
        if not done:
            def sub(stage, f, m, k=k):
                progress("render", (k + f) / len(objects), m)

            write_render_set(o.renderer, o.mesh, o.obj_id, rdir, p.grid, source=source,
                             name=o.name, progress=sub)
        scene_of[o.obj_id] = (rdir / f"{o.obj_id:06d}", 0.0, False)
    lap("render", t0)

    # 2. detector set
    t0 = time.perf_counter()
    ddir = work / "detset"
    dkey = {"config": dataclasses.asdict(p.detset), "objects": ids, "source": source,
            "grid": grid_key, "scenes": list(scenes.sources) if scenes is not None else []}
    if not _stage_done(ddir / "stage.json", dkey):
        paste = {}
        for o in objects:
            sd, mv, _ = scene_of[o.obj_id]
            paste[o.obj_id] = load_paste_samples(sd, o.obj_id, p.max_paste_per_object, mv,
                                                 seed=seed)
        summ = write_detection_set(paste, ddir, p.detset, names, progress, scenes)
        atomic_write_json(ddir / "stage.json", {"key": dkey, "summary": summ})
        del paste
    lap("detection_set", t0)

    # 3. detector
    t0 = time.perf_counter()
    _keyed_dir(work / "detector", {**dkey, "detector": p.detector.to_dict(), "seed": seed})
    det = train_detector(ddir / "annotations.json", work / "detector", p.detector, seed=seed,
                         device=device, progress=progress)
    report["detector"] = {"epochs": det["epochs"], "steps": det["steps"],
                          "loss": det["history"][-1]["loss"] if det["history"] else None,
                          "train_seconds": det["seconds"]}
    lap("detector", t0)

    # 4. pose network
    t0 = time.perf_counter()
    samples = []
    for k, o in enumerate(objects):
        sd, mv, real = scene_of[o.obj_id]
        samples.append(load_pose_samples(sd, o.obj_id, o.mesh, p.pose.store_size,
                                         wide=p.pose.wide, min_visib=mv,
                                         max_samples=p.max_pose_per_object,
                                         keep_background=real, seed=seed,
                                         symmetry_axis=o.symmetry_axis))
        progress("load crops", (k + 1) / len(objects), f"{o.name}: {len(samples[-1])} crops")
    lap("pose_crops", t0)
    t0 = time.perf_counter()
    _keyed_dir(work / "posenet", {"grid": grid_key, "objects": ids, "source": source,
                                  "scenes": dkey["scenes"], "pose": p.pose.to_dict(),
                                  "max_pose": p.max_pose_per_object, "seed": seed})
    pose = train_posenet(samples, {o.obj_id: o.mesh.vertices for o in objects},
                         work / "posenet", p.pose, names, seed=seed, device=device,
                         progress=progress, scenes=scenes, scene_prob=p.detset.scene_bg_prob)
    report["pose"] = {"steps": pose["steps"], "loss": pose["history"][-1] if pose["history"]
                      else None, "train_seconds": pose["seconds"],
                      "crops": {o.obj_id: len(s) for o, s in zip(objects, samples)}}
    lap("pose", t0)
    del samples

    # 5. models folder
    write_models_folder(models_dir, work / "detector" / "detector.pt",
                        work / "posenet" / "posenet.pt",
                        [{"obj_id": o.obj_id, "name": o.name, "mesh": o.mesh,
                          "symmetric": o.symmetric} for o in objects], p.recognizer,
                        extra={"preset": p.name, "source": source})
    report["seconds"]["total"] = sum(report["seconds"].values())
    report["cpu_seconds"]["total"] = sum(report["cpu_seconds"].values())
    atomic_write_json(work / "train_report.json", report)
    return report


def synthetic_objects(data_root: str | Path, source: str, obj_ids: list[int] | None = None,
                      workspace: str | Path | None = None, checkpoint: str | None = None,
                      device: str | None = None) -> list[TrainObject]:
    """The learnt objects of a synthetic world (``python -m nol_ros.datasets.synthetic``) for a
    training source: ``gt`` (the ground-truth textured models), ``real`` (crops of
    train/000001 with its ground-truth poses and masks), ``nol`` / ``ibr`` (the NOL renderer
    and its image-based baseline on a self-annotated ``workspace``; needs
    nol_ros.nol.renderer)."""
    import numpy as np

    from nol_ros.datasets.bop import read_models_info
    from nol_ros.mesh import load_mesh
    from nol_ros.recognition.renderers import TexturedMeshRenderer

    root = Path(data_root)
    wj = root / "world.json"
    if not wj.is_file():
        raise FileFormatError(f"'{wj}' does not exist: '{root}' is not a synthetic world")
    world = json.loads(wj.read_text())
    info = read_models_info(root / "models" / "models_info.json")
    ids = [int(k) for k in world["objects"]] if obj_ids is None else [int(i) for i in obj_ids]
    if not ids:
        raise InputError("no objects selected")
    out = []
    for oid in ids:
        if oid not in info:
            raise InputError(f"object {oid} is not in {root / 'models'}")
        name = str(info[oid].get("name", f"obj_{oid:06d}"))
        sym = bool(info[oid].get("symmetries_continuous") or info[oid].get("symmetries_discrete"))
        cont = info[oid].get("symmetries_continuous") or []
        axis = (np.asarray(cont[0]["axis"], float),
                np.asarray(cont[0].get("offset", [0, 0, 0]), float) * 1e-3) if cont else None
        geom = load_mesh(root / "models" / f"obj_{oid:06d}.ply")
        if source == "gt":
            tex = load_mesh(root / "models_textured" / f"obj_{oid:06d}.obj")
            out.append(TrainObject(oid, name, tex.untextured(), TexturedMeshRenderer(tex),
                                   symmetric=sym, symmetry_axis=axis))
        elif source == "real":
            out.append(TrainObject(oid, name, geom, None, str(root / "train" / "000001"),
                                   symmetric=sym, symmetry_axis=axis))
        elif source in ("nol", "ibr"):
            if workspace is None:
                raise InputError(f"source '{source}' needs the self-annotated workspace")
            w = workspace_objects(workspace, source, [name], checkpoint, device)[0]
            out.append(TrainObject(oid, name, geom, w.renderer, symmetric=sym,
                                   symmetry_axis=axis))
        else:
            raise InputError(f"training source '{source}' unknown; use gt, real, nol or ibr")
    return out


def workspace_objects(workspace: str | Path, method: str = "nol", names: list[str] | None = None,
                      checkpoint: str | None = None, device: str | None = None
                      ) -> list[TrainObject]:
    """The learnt objects of a self-annotation workspace (``WORKSPACE/objects/NAME/`` with
    mesh.ply, object.json, views.json, views/) with their NOL (or ``ibr``) renderers, for
    :func:`train_recognisers` -- what the demo and the nol node use. names: a subset (default:
    every object folder with a views.json). Object ids come from object.json (0 there: numbered
    1, 2, ... in name order). The renderers are prepared as LearnObject's render stage
    prepares them (nol_ros.learn.load_renderer: per-object refinement, its configuration)."""
    try:
        from nol_ros.learn import RenderStageConfig, load_renderer
    except ImportError as e:
        raise ConfigError(f"method '{method}' needs nol_ros.nol.renderer, which is not "
                          f"available ({e})") from e
    from nol_ros.mesh import load_mesh

    root = Path(workspace) / "objects"
    if not root.is_dir():
        raise FileFormatError(f"'{workspace}' has no objects/ folder: it is not a learnt "
                              "workspace (run LearnObject / run_self_annotation first)")
    avail = sorted(p.name for p in root.iterdir() if (p / "views.json").is_file())
    names = avail if names is None else list(names)
    missing = [n for n in names if n not in avail]
    if missing:
        raise InputError(f"objects {missing} are not learnt in '{workspace}' (learnt: {avail})")
    if not names:
        raise InputError(f"'{workspace}' holds no learnt object: nothing to train on")
    out, used = [], set()
    for k, n in enumerate(names):
        meta = json.loads((root / n / "object.json").read_text())
        oid = int(meta.get("obj_id") or 0) or k + 1
        while oid in used:
            oid += 1
        used.add(oid)
        r, _ = load_renderer(Path(workspace), n, RenderStageConfig(
            method=method, checkpoint=str(checkpoint or "")), device)
        out.append(TrainObject(oid, n, load_mesh(root / n / "mesh.ply"), r,
                               symmetric=bool(meta.get("symmetric", False))))
    return out
