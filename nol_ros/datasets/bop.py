"""BOP scene-wise format (the interchange format of the 6D pose field), read and write.

Files of a scene folder: scene_camera.json (cam_K row-major, depth_scale, cam_R_w2c/cam_t_w2c
in mm), scene_gt.json (cam_R_m2c row-major, cam_t_m2c mm, obj_id), scene_gt_info.json (bbox_obj,
bbox_visib [x, y, w, h], px_count_all/valid/visib, visib_fract), rgb/%06d.png (or .jpg),
depth/%06d.png (uint16, depth_mm = value * depth_scale), mask/ and mask_visib/%06d_%06d.png.
Millimetres only here; everything returned is in metres. Stamps (not in BOP) live in an extra
scene_stamps.json. Dataset-level models_info.json is read/written by the *_models_info functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.datasets.sequence import FrameRecord, ObjectInfo, Sequence
from nol_ros.errors import FileFormatError, InputError
from nol_ros.io_utils import atomic_write_image, atomic_write_json


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileFormatError(f"missing file '{path}'")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FileFormatError(f"'{path}' is not valid JSON: {e}") from e


def _key(d: dict, key: str, where: str):
    if key not in d:
        raise FileFormatError(f"{where} has no '{key}'")
    return d[key]


def pose_to_bop(T: np.ndarray) -> tuple[list[float], list[float]]:
    """(4, 4) metres -> (R row-major 9, t mm 3)."""
    T = np.asarray(T, dtype=np.float64)
    return T[:3, :3].reshape(-1).tolist(), (T[:3, 3] * 1000.0).tolist()


def pose_from_bop(R, t, where: str = "") -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if R.size != 9 or t.size != 3 or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise FileFormatError(f"{where}: pose needs 9 finite rotation and 3 translation values")
    T = np.eye(4)
    T[:3, :3] = R.reshape(3, 3)
    T[:3, 3] = t.reshape(3) / 1000.0
    return T


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]


class BopSceneWriter:
    """Write one BOP scene frame by frame; JSON files are written (atomically) on close()."""

    def __init__(self, scene_dir: str | Path, intrinsics: Intrinsics, depth_scale: float = 1.0,
                 rgb_ext: str = ".png"):
        self.dir = Path(scene_dir)
        self.intr = intrinsics
        self.depth_scale = float(depth_scale)  # mm per depth unit (BOP convention)
        self.rgb_ext = rgb_ext
        self.gt: dict[str, list] = {}
        self.cam: dict[str, dict] = {}
        self.info: dict[str, list] = {}
        self.stamps: dict[str, dict] = {}
        self.dir.mkdir(parents=True, exist_ok=True)

    def add_frame(self, im_id: int, rgb: np.ndarray, depth_m: np.ndarray | None,
                  T_world_camera: np.ndarray | None = None, objects=(),
                  stamp_ns: int | None = None, depth_stamp_ns: int | None = None) -> None:
        """objects: iterable of (obj_id, T_camera_object, mask_full, mask_visib)."""
        H, W = self.intr.height, self.intr.width
        rgb = np.asarray(rgb)
        if rgb.shape != (H, W, 3) or rgb.dtype != np.uint8:
            raise InputError(f"frame {im_id}: rgb must be ({H}, {W}, 3) uint8, got "
                             f"{rgb.shape} {rgb.dtype}")
        key = str(int(im_id))
        atomic_write_image(self.dir / "rgb" / f"{im_id:06d}{self.rgb_ext}", rgb)
        valid = None
        if depth_m is not None:
            d = np.asarray(depth_m, dtype=np.float64)
            if d.shape != (H, W):
                raise InputError(f"frame {im_id}: depth is {d.shape}, expected {(H, W)}")
            d = np.where(np.isfinite(d) & (d > 0), d, 0.0)
            units = np.round(d * 1000.0 / self.depth_scale)
            atomic_write_image(self.dir / "depth" / f"{im_id:06d}.png",
                               np.clip(units, 0, 65535).astype(np.uint16))
            valid = d > 0
        cam = {"cam_K": self.intr.K.reshape(-1).tolist(), "depth_scale": self.depth_scale}
        if T_world_camera is not None:
            R, t = pose_to_bop(np.linalg.inv(T_world_camera))
            cam["cam_R_w2c"], cam["cam_t_w2c"] = R, t
        self.cam[key] = cam
        gts, infos = [], []
        for k, (obj_id, T_co, mask_full, mask_visib) in enumerate(objects):
            R, t = pose_to_bop(T_co)
            gts.append({"cam_R_m2c": R, "cam_t_m2c": t, "obj_id": int(obj_id)})
            mf, mv = np.asarray(mask_full, bool), np.asarray(mask_visib, bool)
            n_all, n_vis = int(mf.sum()), int(mv.sum())
            infos.append({"bbox_obj": _bbox(mf), "bbox_visib": _bbox(mv), "px_count_all": n_all,
                          "px_count_valid": int((mf & valid).sum()) if valid is not None else 0,
                          "px_count_visib": n_vis,
                          "visib_fract": float(n_vis / n_all) if n_all else 0.0})
            atomic_write_image(self.dir / "mask" / f"{im_id:06d}_{k:06d}.png",
                               mf.astype(np.uint8) * 255)
            atomic_write_image(self.dir / "mask_visib" / f"{im_id:06d}_{k:06d}.png",
                               mv.astype(np.uint8) * 255)
        self.gt[key], self.info[key] = gts, infos
        if stamp_ns is not None:
            self.stamps[key] = {"rgb_ns": int(stamp_ns),
                                "depth_ns": int(depth_stamp_ns if depth_stamp_ns is not None
                                                else stamp_ns)}

    def close(self) -> None:
        atomic_write_json(self.dir / "scene_camera.json", self.cam)
        atomic_write_json(self.dir / "scene_gt.json", self.gt)
        atomic_write_json(self.dir / "scene_gt_info.json", self.info)
        if self.stamps:
            atomic_write_json(self.dir / "scene_stamps.json", self.stamps)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()


def write_models_info(path: str | Path, info: dict) -> None:
    atomic_write_json(path, {str(k): v for k, v in info.items()})


def read_models_info(path: str | Path) -> dict[int, dict]:
    d = _load_json(Path(path))
    out = {}
    for k, v in d.items():
        if "diameter" not in v:
            raise FileFormatError(f"{path}: model {k} has no 'diameter'")
        out[int(k)] = v
    return out


def read_bop_scene(scene_dir: str | Path, models_dir: str | Path | None = None,
                   frame_period_ns: int = 33_333_333) -> Sequence:
    """Read a BOP scene folder into a Sequence (poses in metres)."""
    d = Path(scene_dir)
    if not d.is_dir():
        raise FileFormatError(f"BOP scene folder '{d}' does not exist")
    cams = _load_json(d / "scene_camera.json")
    gt = _load_json(d / "scene_gt.json") if (d / "scene_gt.json").exists() else {}
    stamps = _load_json(d / "scene_stamps.json") if (d / "scene_stamps.json").exists() else {}
    if not cams:
        raise FileFormatError(f"'{d / 'scene_camera.json'}' lists no images")
    ids = sorted(int(k) for k in cams)
    first = cams[str(ids[0])]
    K = np.asarray(_key(first, "cam_K", f"scene_camera.json: image {ids[0]}"), float)
    if K.size != 9:
        raise FileFormatError(f"scene_camera.json: image {ids[0]}: cam_K needs 9 values")
    probe = _find_rgb(d, ids[0])
    import cv2

    img = cv2.imread(str(probe), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileFormatError(f"cannot read '{probe}'")
    intr = Intrinsics.from_K(K.reshape(3, 3), img.shape[1], img.shape[0])
    frames = []
    world_poses: dict[int, np.ndarray] = {}
    for i in ids:
        c = cams[str(i)]
        where = f"{d / 'scene_camera.json'}: image {i}"
        scale_m = float(_key(c, "depth_scale", where)) * 1e-3
        T_wc = None
        if "cam_R_w2c" in c and "cam_t_w2c" in c:
            T_wc = np.linalg.inv(pose_from_bop(c["cam_R_w2c"], c["cam_t_w2c"], where))
        T_co = {}
        for j, a in enumerate(gt.get(str(i), [])):
            w = f"{d / 'scene_gt.json'}: image {i}, annotation {j}"
            T = pose_from_bop(_key(a, "cam_R_m2c", w), _key(a, "cam_t_m2c", w), w)
            oid = int(_key(a, "obj_id", w))
            T_co[oid] = T
            if T_wc is not None and oid not in world_poses:
                world_poses[oid] = T_wc @ T
        st = stamps.get(str(i), {})
        t_rgb = int(st.get("rgb_ns", i * frame_period_ns))
        depth_path = d / "depth" / f"{i:06d}.png"
        frames.append(FrameRecord(index=i, stamp_ns=t_rgb,
                                  depth_stamp_ns=int(st.get("depth_ns", t_rgb)),
                                  rgb_path=str(_find_rgb(d, i)), depth_path=str(depth_path),
                                  T_world_camera=T_wc, depth_scale_m=scale_m,
                                  T_camera_objects=T_co))
        if not depth_path.exists():
            raise FileFormatError(f"missing depth image '{depth_path}'")
    obj_ids = sorted({o for f in frames for o in f.T_camera_objects})
    sym = {}
    mdir = Path(models_dir) if models_dir else None
    if mdir is not None and (mdir / "models_info.json").exists():
        info = read_models_info(mdir / "models_info.json")
        sym = {k: bool(v.get("symmetries_continuous") or v.get("symmetries_discrete"))
               for k, v in info.items()}
    objects = [ObjectInfo(obj_id=o, name=f"obj_{o:06d}",
                          mesh_path=str(mdir / f"obj_{o:06d}.ply") if mdir else "",
                          symmetric=sym.get(o, False), T_world_object=world_poses.get(o))
               for o in obj_ids]
    return Sequence(name=d.name, intrinsics=intr, frames=frames, objects=objects, root=str(d),
                    depth_scale_m=frames[0].depth_scale_m)


def _find_rgb(d: Path, i: int) -> Path:
    for sub in ("rgb", "gray"):
        for ext in (".png", ".jpg", ".tif"):
            p = d / sub / f"{i:06d}{ext}"
            if p.exists():
                return p
    raise FileFormatError(f"missing colour image for image {i} in '{d / 'rgb'}' "
                          "(expected %06d.png or .jpg)")


def read_masks(scene_dir: str | Path, im_id: int, n: int, visib: bool = True) -> list[np.ndarray]:
    """The n masks (bool) of image im_id, in annotation order."""
    import cv2

    sub = "mask_visib" if visib else "mask"
    out = []
    for k in range(n):
        p = Path(scene_dir) / sub / f"{im_id:06d}_{k:06d}.png"
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise FileFormatError(f"missing mask '{p}'")
        out.append(m > 127)
    return out
