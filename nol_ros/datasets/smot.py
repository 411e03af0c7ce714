"""SMOT layout (the NOL paper's dataset), read; and a writer for fixtures in that layout.

    ROOT/camera_intrinsic.json   Open3D PinholeCameraIntrinsic JSON: {"width", "height",
                                 "intrinsic_matrix": 9 numbers, COLUMN-major}
    ROOT/models/obj_XX.ply       object meshes in metres (XX = 01..08)
    ROOT/train/seq1 (objects 1-4), ROOT/train/seq2 (objects 5-8), ROOT/test/...: each with
        scene_gt.json            BOP keys: {im_id: [{cam_R_m2c: 9 floats row-major,
                                 cam_t_m2c: 3 floats in METRES (unlike BOP), obj_id}]}
        color/%06d.png           RGB
        depth/%06d.png           uint16 millimetres, 0 = invalid

World frame: SMOT gives object poses per image but no camera poses. The world frame is chosen
as the frame of the first object annotated in the first image (the "anchor"); since the objects
are static, T_world_camera = T_world_anchor @ inv(T_camera_anchor) = inv(T_camera_anchor) in
every image that annotates the anchor (None in the others), and every other object's world pose
is T_world_camera @ T_camera_object in the first image that annotates both. Stamps are not
stored; frames are taken as 30 Hz (33.3 ms apart).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from nol_ros.camera import Intrinsics
from nol_ros.datasets.sequence import FrameRecord, ObjectInfo, Sequence
from nol_ros.errors import FileFormatError, InputError
from nol_ros.io_utils import atomic_write_image, atomic_write_json
from nol_ros.mesh import save_mesh

FRAME_PERIOD_NS = 33_333_333
_MAX_PLAUSIBLE_M = 20.0  # a translation above 20 "metres": the file is in millimetres


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise FileFormatError(f"missing '{path}' ({what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"'{path}' is not valid JSON: {e}; rewrite the file") from e


def read_smot_intrinsics(root: str | Path) -> Intrinsics:
    """ROOT/camera_intrinsic.json (Open3D layout, column-major matrix) -> Intrinsics."""
    p = Path(root) / "camera_intrinsic.json"
    d = _load_json(p, "Open3D-style camera intrinsics of the SMOT root")
    if not isinstance(d, dict):
        raise FileFormatError(f"'{p}' must hold a JSON object with width, height, "
                              "intrinsic_matrix")
    for k in ("width", "height", "intrinsic_matrix"):
        if k not in d:
            raise FileFormatError(f"{p.name} has no '{k}'; add it (Open3D "
                                  "PinholeCameraIntrinsic layout)")
    try:
        m = np.asarray(d["intrinsic_matrix"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise FileFormatError(f"{p.name}: 'intrinsic_matrix' must be 9 numbers") from e
    if m.size != 9 or not np.all(np.isfinite(m)):
        raise FileFormatError(f"{p.name}: 'intrinsic_matrix' must be 9 finite numbers "
                              "(column-major)")
    K = m.reshape(3, 3).T  # column-major on disk
    if K[0, 1] != 0 or K[1, 0] != 0 or abs(K[2, 2] - 1) > 1e-9 or K[2, 0] or K[2, 1]:
        raise FileFormatError(f"{p.name}: 'intrinsic_matrix' {m.tolist()} is not a pinhole K in "
                              "column-major order ([fx, 0, 0, 0, fy, 0, cx, cy, 1])")
    try:
        return Intrinsics.from_K(K, int(d["width"]), int(d["height"]))
    except InputError as e:
        raise FileFormatError(f"{p.name}: {e}") from e


def _pose_m(a, where: str) -> tuple[int, np.ndarray]:
    if not isinstance(a, dict):
        raise FileFormatError(f"{where} must be an object with cam_R_m2c, cam_t_m2c, obj_id")
    for k in ("cam_R_m2c", "cam_t_m2c", "obj_id"):
        if k not in a:
            raise FileFormatError(f"{where} has no '{k}'; add it")
    try:
        R = np.asarray(a["cam_R_m2c"], float).reshape(3, 3)
        t = np.asarray(a["cam_t_m2c"], float).reshape(3)
    except (TypeError, ValueError) as e:
        raise FileFormatError(f"{where}: cam_R_m2c needs 9 and cam_t_m2c 3 numbers") from e
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise FileFormatError(f"{where}: the pose contains NaN or infinity")
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
        raise FileFormatError(f"{where}: 'cam_R_m2c' is not a rotation matrix (row-major)")
    if np.abs(t).max() > _MAX_PLAUSIBLE_M:
        raise FileFormatError(f"{where}: cam_t_m2c = {t.tolist()} looks like millimetres; SMOT "
                              "stores metres: divide by 1000")
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return int(a["obj_id"]), T


def read_smot(root: str | Path, seq: str = "train/seq1") -> Sequence:
    """Read one SMOT sequence (``seq`` relative to ``root``, e.g. "train/seq1") into a
    :class:`Sequence`; world frame = first object of the first image (module docstring)."""
    root = Path(root)
    intr = read_smot_intrinsics(root)
    d = root / seq
    gt_path = d / "scene_gt.json"
    if not gt_path.is_file():
        raise FileFormatError(f"missing '{gt_path}'; seq must name a sequence folder such as "
                              "train/seq1")
    gt = _load_json(gt_path, "object poses")
    if not isinstance(gt, dict) or not gt:
        raise FileFormatError(f"'{gt_path}' lists no images")
    try:
        ids = sorted(int(k) for k in gt)
    except ValueError as e:
        raise FileFormatError(f"'{gt_path}': keys must be image ids: {e}") from e
    T_cos: list[dict[int, np.ndarray]] = []
    for i in ids:
        T_co: dict[int, np.ndarray] = {}
        for j, a in enumerate(gt[str(i)]):
            oid, T = _pose_m(a, f"{gt_path.name}: image {i}, annotation {j}")
            T_co.setdefault(oid, T)
        T_cos.append(T_co)
        for sub, name in (("color", "colour"), ("depth", "depth")):
            p = d / sub / f"{i:06d}.png"
            if not p.exists():
                raise FileFormatError(f"missing {name} image '{p}'")
            try:
                with Image.open(p) as im:
                    size = im.size
            except Exception as e:  # PIL raises several types
                raise FileFormatError(f"cannot read {name} image '{p}': {e}") from e
            if size != (intr.width, intr.height):
                raise FileFormatError(f"{name} image '{p}' is {size[0]}x{size[1]} but "
                                      f"camera_intrinsic.json says {intr.width}x{intr.height}")
    if not T_cos[0]:
        raise FileFormatError(f"{gt_path.name}: the first image (id {ids[0]}) has no annotation "
                              "to anchor the world frame")
    anchor = next(iter(T_cos[0]))
    world: dict[int, np.ndarray] = {}
    frames: list[FrameRecord] = []
    for i, T_co in zip(ids, T_cos):
        T_wc = None
        if anchor in T_co:
            T_wc = np.linalg.inv(T_co[anchor])  # world = anchor object frame
            for o, T in T_co.items():
                world.setdefault(o, T_wc @ T)
        frames.append(FrameRecord(index=i, stamp_ns=i * FRAME_PERIOD_NS,
                                  depth_stamp_ns=i * FRAME_PERIOD_NS,
                                  rgb_path=str(d / "color" / f"{i:06d}.png"),
                                  depth_path=str(d / "depth" / f"{i:06d}.png"),
                                  T_world_camera=T_wc, depth_scale_m=1e-3, T_camera_objects=T_co))
    obj_ids = sorted({o for t in T_cos for o in t})
    objects = [ObjectInfo(obj_id=o, name=f"obj_{o:02d}",
                          mesh_path=str(root / "models" / f"obj_{o:02d}.ply"),
                          T_world_object=world.get(o)) for o in obj_ids]
    return Sequence(name=seq, intrinsics=intr, frames=frames, objects=objects, root=str(root),
                    depth_scale_m=1e-3)


def write_smot_fixture(root: str | Path, intr: Intrinsics, seq: str, frames,
                       meshes: dict | None = None) -> None:
    """Write a sequence in the SMOT layout (for tests and tools).

    frames: iterable of (im_id, rgb (H, W, 3) uint8, depth_m (H, W) float metres with 0/NaN =
    invalid, {obj_id: T_camera_object (4, 4) metres}). meshes: optional {obj_id: Mesh} written
    to ROOT/models/obj_XX.ply. Writes camera_intrinsic.json (column-major K) too.
    """
    root = Path(root)
    atomic_write_json(root / "camera_intrinsic.json",
                      {"width": intr.width, "height": intr.height,
                       "intrinsic_matrix": intr.K.T.reshape(-1).tolist()})
    d = root / seq
    gt = {}
    for im_id, rgb, depth_m, objs in frames:
        rgb = np.asarray(rgb)
        depth_m = np.asarray(depth_m, dtype=np.float64)
        if rgb.shape != (intr.height, intr.width, 3) or rgb.dtype != np.uint8:
            raise InputError(f"frame {im_id}: rgb must be ({intr.height}, {intr.width}, 3) "
                             f"uint8, got {rgb.shape} {rgb.dtype}")
        if depth_m.shape != (intr.height, intr.width):
            raise InputError(f"frame {im_id}: depth is {depth_m.shape}, expected "
                             f"{(intr.height, intr.width)}")
        atomic_write_image(d / "color" / f"{int(im_id):06d}.png", rgb)
        ok = np.isfinite(depth_m) & (depth_m > 0)
        mm = np.clip(np.round(np.where(ok, depth_m, 0.0) * 1000), 0, 65535).astype(np.uint16)
        atomic_write_image(d / "depth" / f"{int(im_id):06d}.png", mm)
        gt[str(int(im_id))] = [{"cam_R_m2c": np.asarray(T)[:3, :3].reshape(-1).tolist(),
                                "cam_t_m2c": np.asarray(T)[:3, 3].tolist(), "obj_id": int(o)}
                               for o, T in objs.items()]
    atomic_write_json(d / "scene_gt.json", gt)
    if meshes:
        for o, mesh in meshes.items():
            save_mesh(mesh, root / "models" / f"obj_{int(o):02d}.ply")
