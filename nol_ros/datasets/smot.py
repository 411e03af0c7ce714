"""SMOT layout (the NOL paper's dataset), read; and a writer for fixtures in that layout.

    ROOT/camera_intrinsic.json   Open3D PinholeCameraIntrinsic: width, height, intrinsic_matrix
                                 (9 numbers, COLUMN-major)
    ROOT/models/obj_XX.ply       metres
    ROOT/train/seq1, train/seq2, test/...: scene_gt.json (BOP keys, cam_R_m2c row-major,
                                 cam_t_m2c in METRES), color/%06d.png, depth/%06d.png (uint16 mm)

SMOT gives object poses per image but no camera poses. The world frame is chosen as the frame
of the first object annotated in the first image, so T_world_camera = T_world_obj @ inv(T_cam_obj)
with that object (objects are static in SMOT).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.datasets.sequence import FrameRecord, ObjectInfo, Sequence
from nol_ros.errors import FileFormatError
from nol_ros.io_utils import atomic_write_image, atomic_write_json


def read_smot_intrinsics(root: str | Path) -> Intrinsics:
    p = Path(root) / "camera_intrinsic.json"
    if not p.is_file():
        raise FileFormatError(f"missing '{p}' (Open3D-style camera intrinsics of the SMOT root)")
    d = json.loads(p.read_text())
    for k in ("width", "height", "intrinsic_matrix"):
        if k not in d:
            raise FileFormatError(f"{p} has no '{k}'")
    m = np.asarray(d["intrinsic_matrix"], dtype=np.float64)
    if m.size != 9:
        raise FileFormatError(f"{p}: intrinsic_matrix needs 9 numbers")
    K = m.reshape(3, 3).T  # column-major on disk
    return Intrinsics.from_K(K, d["width"], d["height"])


def read_smot(root: str | Path, seq: str = "train/seq1") -> Sequence:
    root = Path(root)
    intr = read_smot_intrinsics(root)
    d = root / seq
    gt_path = d / "scene_gt.json"
    if not gt_path.is_file():
        raise FileFormatError(f"missing '{gt_path}'; seq must name a folder such as train/seq1")
    gt = json.loads(gt_path.read_text())
    ids = sorted(int(k) for k in gt)
    if not ids:
        raise FileFormatError(f"'{gt_path}' lists no images")
    frames: list[FrameRecord] = []
    T_cos: list[dict[int, np.ndarray]] = []
    for i in ids:
        anns = gt[str(i)]
        T_co = {}
        for j, a in enumerate(anns):
            where = f"{gt_path}: image {i}, annotation {j}"
            for k in ("cam_R_m2c", "cam_t_m2c", "obj_id"):
                if k not in a:
                    raise FileFormatError(f"{where} has no '{k}'")
            R = np.asarray(a["cam_R_m2c"], float).reshape(3, 3)
            t = np.asarray(a["cam_t_m2c"], float).reshape(3)
            if np.abs(t).max() > 20:
                raise FileFormatError(f"{where}: cam_t_m2c = {t.tolist()} looks like millimetres;"
                                      " SMOT stores metres")
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = R, t
            T_co[int(a["obj_id"])] = T
        T_cos.append(T_co)
        for sub, name in (("color", "colour"), ("depth", "depth")):
            p = d / sub / f"{i:06d}.png"
            if not p.exists():
                raise FileFormatError(f"missing {name} image '{p}'")
    if not T_cos[0]:
        raise FileFormatError(f"{gt_path}: the first image has no annotation to anchor the world")
    anchor = next(iter(T_cos[0]))
    obj_ids = sorted({o for t in T_cos for o in t})
    world: dict[int, np.ndarray] = {}
    for i, T_co in zip(ids, T_cos):
        T_wc = None
        if anchor in T_co:
            T_wc = np.linalg.inv(T_co[anchor])  # world = anchor object frame
            for o, T in T_co.items():
                world.setdefault(o, T_wc @ T)
        frames.append(FrameRecord(index=i, stamp_ns=i * 33_333_333, depth_stamp_ns=i * 33_333_333,
                                  rgb_path=str(d / "color" / f"{i:06d}.png"),
                                  depth_path=str(d / "depth" / f"{i:06d}.png"),
                                  T_world_camera=T_wc, depth_scale_m=1e-3, T_camera_objects=T_co))
    objects = [ObjectInfo(obj_id=o, name=f"obj_{o:02d}",
                          mesh_path=str(root / "models" / f"obj_{o:02d}.ply"),
                          T_world_object=world.get(o)) for o in obj_ids]
    return Sequence(name=seq, intrinsics=intr, frames=frames, objects=objects, root=str(root),
                    depth_scale_m=1e-3)


def write_smot_fixture(root: str | Path, intr: Intrinsics, seq: str, frames) -> None:
    """Write a sequence in the SMOT layout. frames: iterable of (im_id, rgb (H,W,3) uint8,
    depth_m (H,W), {obj_id: T_camera_object})."""
    root = Path(root)
    atomic_write_json(root / "camera_intrinsic.json",
                      {"width": intr.width, "height": intr.height,
                       "intrinsic_matrix": intr.K.T.reshape(-1).tolist()})
    d = root / seq
    gt = {}
    for im_id, rgb, depth_m, objs in frames:
        atomic_write_image(d / "color" / f"{im_id:06d}.png", rgb)
        mm = np.clip(np.round(np.nan_to_num(depth_m) * 1000), 0, 65535).astype(np.uint16)
        atomic_write_image(d / "depth" / f"{im_id:06d}.png", mm)
        gt[str(im_id)] = [{"cam_R_m2c": T[:3, :3].reshape(-1).tolist(),
                           "cam_t_m2c": T[:3, 3].tolist(), "obj_id": int(o)}
                          for o, T in objs.items()]
    atomic_write_json(d / "scene_gt.json", gt)
