"""Learning an object end to end (core, no rclpy): source -> sequence -> self-annotation -> views
(-> NOL renders, once the renderer is configured). The nol node and the CLI both call this."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.errors import FileFormatError, InputError
from nol_ros.selfannotate import ObjectSpec, SelfAnnotationConfig, run_self_annotation

SOURCE_LIVE_BUFFER, SOURCE_BAG, SOURCE_DATASET = 0, 1, 2


@dataclass(frozen=True)
class LearnConfig:
    workspace_root: str = "nol_workspace"
    self_annotation: SelfAnnotationConfig = field(default_factory=SelfAnnotationConfig)
    bag_rgb_topic: str = "/camera/rgb/image_raw"
    bag_depth_topic: str = "/camera/depth_registered/image_raw"
    bag_camera_info_topic: str = "/camera/rgb/camera_info"
    smot_sequence: str = "train/seq1"


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
                 cfg: LearnConfig = LearnConfig(), progress=None, obj_id: int = 1,
                 symmetric: bool = False, prior_point=None, model_free: bool = False) -> str:
    """Learn one object; returns its workspace directory."""
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
    spec = ObjectSpec(name=name, mesh_path=mesh_path, obj_id=obj_id, symmetric=symmetric,
                      prior_point=prior_point, model_free=model_free)
    rep = run_self_annotation(seq, [spec], ws, cfg.self_annotation,
                              progress or (lambda *a: None), T_odom_cameras=odom)
    entry = rep["objects"][name]
    if "error_code" in entry:
        from nol_ros.errors import NolError

        err = NolError(entry["error"])
        err.code = entry["error_code"]
        raise err
    return str(ws)
