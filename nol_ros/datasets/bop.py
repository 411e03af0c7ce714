"""BOP scene-wise format (the interchange format of the 6D pose field), read and write.

Files of a scene folder (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md):

    scene_camera.json   {im_id: {cam_K: 9 floats row-major, depth_scale: mm per depth unit,
                         cam_R_w2c: 9 floats row-major, cam_t_w2c: 3 floats mm}}  (w2c optional)
    scene_gt.json       {im_id: [{cam_R_m2c: 9 floats row-major, cam_t_m2c: 3 floats mm,
                         obj_id: int}, ...]}
    scene_gt_info.json  {im_id: [{bbox_obj, bbox_visib: [x, y, w, h], px_count_all,
                         px_count_valid, px_count_visib, visib_fract}, ...]}
    rgb/%06d.png (.jpg accepted on read), depth/%06d.png (uint16, depth_mm = value * depth_scale),
    mask/%06d_%06d.png and mask_visib/%06d_%06d.png (image id, annotation index; 255 = object)

Millimetres only here; everything returned is in metres. Stamps (not part of BOP) live in an
extra ``scene_stamps.json`` {im_id: {rgb_ns, depth_ns}}; without it frames are 33.3 ms apart.
A scene without scene_gt.json is read as a sequence without object annotations (e.g. from a
bag). Dataset-level ``models_info.json`` is read/written by :func:`read_models_info` and
:func:`write_models_info`. Note that the official BOP models are PLY files in millimetres.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from nol_ros.camera import Intrinsics
from nol_ros.datasets.sequence import FrameRecord, ObjectInfo, Sequence
from nol_ros.errors import FileFormatError, InputError
from nol_ros.io_utils import atomic_write_image, atomic_write_json

FRAME_PERIOD_NS = 33_333_333  # 30 Hz, when a scene has no scene_stamps.json
_MIN_PLAUSIBLE_MM = 5.0        # an object closer than 5 mm to the camera: the file is in metres


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileFormatError(f"missing file '{path}'")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"'{path}' is not valid JSON: {e}; rewrite the file") from e
    if not isinstance(d, dict):
        raise FileFormatError(f"'{path}' must hold a JSON object keyed by id, not "
                              f"{type(d).__name__}")
    return d


def _key(d, key: str, where: str):
    if not isinstance(d, dict) or key not in d:
        raise FileFormatError(f"{where} has no '{key}'; add it (see the BOP format)")
    return d[key]


def _numbers(v, n: int, where: str, key: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise FileFormatError(f"{where}: '{key}' must be {n} numbers, got {v!r}") from e
    if a.size != n:
        raise FileFormatError(f"{where}: '{key}' must be {n} numbers, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise FileFormatError(f"{where}: '{key}' contains NaN or infinity: {a.tolist()}")
    return a


def _rotation(v, where: str, key: str) -> np.ndarray:
    R = _numbers(v, 9, where, key).reshape(3, 3)
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
        raise FileFormatError(f"{where}: '{key}' is not a rotation matrix (row-major, "
                              "orthonormal, det +1)")
    return R


def pose_to_bop(T: np.ndarray) -> tuple[list[float], list[float]]:
    """(4, 4) T in metres -> (R row-major, 9 floats; t in millimetres, 3 floats)."""
    T = np.asarray(T, dtype=np.float64)
    return T[:3, :3].reshape(-1).tolist(), (T[:3, 3] * 1000.0).tolist()


def pose_from_bop(R, t, where: str = "", keys: tuple[str, str] = ("cam_R_m2c", "cam_t_m2c")
                  ) -> np.ndarray:
    """(R row-major 9 values, t 3 values in mm) -> (4, 4) float64 T in metres."""
    T = np.eye(4)
    T[:3, :3] = _rotation(R, where, keys[0])
    T[:3, 3] = _numbers(t, 3, where, keys[1]) / 1000.0
    return T


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]


class BopSceneWriter:
    """Write one BOP scene frame by frame; images at add_frame, JSON files (atomically) on
    close() (or on leaving a ``with`` block without an exception).

    intrinsics: the camera of all frames. depth_scale: millimetres per depth unit (BOP
    convention; 1.0 = depth PNG in mm, 0.1 = in 0.1 mm).
    """

    def __init__(self, scene_dir: str | Path, intrinsics: Intrinsics, depth_scale: float = 1.0,
                 rgb_ext: str = ".png"):
        if not (math.isfinite(depth_scale) and depth_scale > 0):
            raise InputError(f"depth_scale must be a positive number of mm per unit, got "
                             f"{depth_scale}")
        if rgb_ext not in (".png", ".jpg"):
            raise InputError(f"rgb_ext must be .png or .jpg, got '{rgb_ext}'")
        self.dir = Path(scene_dir)
        self.intr = intrinsics
        self.depth_scale = float(depth_scale)
        self.rgb_ext = rgb_ext
        self.gt: dict[str, list] = {}
        self.cam: dict[str, dict] = {}
        self.info: dict[str, list] = {}
        self.stamps: dict[str, dict] = {}
        self.dir.mkdir(parents=True, exist_ok=True)

    def add_frame(self, im_id: int, rgb: np.ndarray, depth_m: np.ndarray | None,
                  T_world_camera: np.ndarray | None = None, objects=(),
                  stamp_ns: int | None = None, depth_stamp_ns: int | None = None,
                  depth_saturated: np.ndarray | None = None) -> None:
        """Write one frame.

        rgb: (H, W, 3) uint8 RGB. depth_m: (H, W) float metres; 0, NaN, inf and negative values
        are written as 0 (invalid); None writes no depth image. T_world_camera: (4, 4) or None
        (then scene_camera.json gets no cam_R_w2c/cam_t_w2c). objects: iterable of (obj_id,
        T_camera_object (4, 4), mask (H, W) bool without occlusion, mask_visib (H, W) bool).
        stamp_ns / depth_stamp_ns: acquisition times (scene_stamps.json), optional.
        depth_saturated: (H, W) bool, invalid pixels to write as 65535 (what some drivers write
        for "no reading"; readers treat 0 and 65535 as invalid), optional.
        """
        H, W = self.intr.height, self.intr.width
        im_id = int(im_id)
        if im_id < 0:
            raise InputError(f"image id must be >= 0, got {im_id}")
        key = str(im_id)
        if key in self.cam:
            raise InputError(f"image {im_id} was already added to '{self.dir}'")
        rgb = np.asarray(rgb)
        if rgb.shape != (H, W, 3) or rgb.dtype != np.uint8:
            raise InputError(f"frame {im_id}: rgb must be ({H}, {W}, 3) uint8 (the "
                             f"intrinsics' size), got {rgb.shape} {rgb.dtype}")
        units = None
        if depth_m is not None:
            d = np.asarray(depth_m, dtype=np.float64)
            if d.shape != (H, W):
                raise InputError(f"frame {im_id}: depth is {d.shape}, expected {(H, W)} (the "
                                 "intrinsics' size)")
            d = np.where(np.isfinite(d) & (d > 0), d, 0.0)
            units = np.round(d * 1000.0 / self.depth_scale)
            if units.max(initial=0) > 65534:  # 65535 = invalid
                raise InputError(f"frame {im_id}: depth {d.max():.2f} m does not fit 16 bits "
                                 f"with depth_scale {self.depth_scale} mm; use a larger "
                                 "depth_scale")
        T_wc = None
        if T_world_camera is not None:
            T_wc = np.asarray(T_world_camera, dtype=np.float64)
            if T_wc.shape != (4, 4) or not np.all(np.isfinite(T_wc)):
                raise InputError(f"frame {im_id}: T_world_camera must be a finite (4, 4) matrix")
        objs = []
        for obj_id, T_co, mask_full, mask_visib in objects:
            T_co = np.asarray(T_co, dtype=np.float64)
            mf, mv = np.asarray(mask_full, bool), np.asarray(mask_visib, bool)
            if T_co.shape != (4, 4) or not np.all(np.isfinite(T_co)):
                raise InputError(f"frame {im_id}, object {obj_id}: T_camera_object must be a "
                                 "finite (4, 4) matrix")
            if mf.shape != (H, W) or mv.shape != (H, W):
                raise InputError(f"frame {im_id}, object {obj_id}: masks are {mf.shape} and "
                                 f"{mv.shape}, expected {(H, W)}")
            objs.append((int(obj_id), T_co, mf, mv))

        atomic_write_image(self.dir / "rgb" / f"{im_id:06d}{self.rgb_ext}", rgb)
        if units is not None:
            raw = units.astype(np.uint16)
            if depth_saturated is not None:
                raw[np.asarray(depth_saturated, bool) & (raw == 0)] = 65535
            atomic_write_image(self.dir / "depth" / f"{im_id:06d}.png", raw)
        cam = {"cam_K": self.intr.K.reshape(-1).tolist(), "depth_scale": self.depth_scale}
        if T_wc is not None:
            R, t = pose_to_bop(np.linalg.inv(T_wc))
            cam["cam_R_w2c"], cam["cam_t_w2c"] = R, t
        self.cam[key] = cam
        valid = units > 0 if units is not None else None
        gts, infos = [], []
        for k, (obj_id, T_co, mf, mv) in enumerate(objs):
            R, t = pose_to_bop(T_co)
            gts.append({"cam_R_m2c": R, "cam_t_m2c": t, "obj_id": obj_id})
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
        """Write scene_camera.json, scene_gt.json, scene_gt_info.json (+ scene_stamps.json)."""
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
    """Write a BOP models_info.json: {obj_id: {diameter (mm), min_x.., size_x.. (mm),
    symmetries_continuous / symmetries_discrete (optional), ...}}."""
    for k, v in info.items():
        if "diameter" not in v:
            raise InputError(f"models_info entry {k} has no 'diameter' (mm)")
    atomic_write_json(path, {str(int(k)): v for k, v in info.items()})


def read_models_info(path: str | Path) -> dict[int, dict]:
    """Read a BOP models_info.json -> {obj_id: entry} (values in mm, as in the file)."""
    path = Path(path)
    d = _load_json(path)
    out = {}
    for k, v in d.items():
        where = f"{path.name}: model {k}"
        try:
            oid = int(k)
        except ValueError as e:
            raise FileFormatError(f"{path}: key '{k}' is not an object id") from e
        dia = _numbers([_key(v, "diameter", where)], 1, where, "diameter")[0]
        if dia <= 0:
            raise FileFormatError(f"{where}: 'diameter' must be > 0 mm, got {dia}")
        for s in v.get("symmetries_continuous", []):
            _numbers(_key(s, "axis", f"{where} symmetries_continuous"), 3, where, "axis")
        for s in v.get("symmetries_discrete", []):
            _numbers(s, 16, where, "symmetries_discrete")
        out[oid] = v
    return out


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # PIL raises several types for broken files
        raise FileFormatError(f"cannot read image '{path}': {e}") from e


def read_bop_scene(scene_dir: str | Path, models_dir: str | Path | None = None,
                   frame_period_ns: int = FRAME_PERIOD_NS) -> Sequence:
    """Read a BOP scene folder into a :class:`Sequence` (poses in metres).

    Camera poses come from cam_R_w2c/cam_t_w2c when present (else None); an object's world
    pose from its first annotation in an image with a camera pose. models_dir (optional):
    the dataset's models folder with obj_%06d.ply and models_info.json (symmetry flags).
    """
    d = Path(scene_dir)
    if not d.is_dir():
        raise FileFormatError(f"BOP scene folder '{d}' does not exist")
    cam_path, gt_path = d / "scene_camera.json", d / "scene_gt.json"
    cams = _load_json(cam_path)
    gt = _load_json(gt_path) if gt_path.exists() else {}
    stamps = _load_json(d / "scene_stamps.json") if (d / "scene_stamps.json").exists() else {}
    if not cams:
        raise FileFormatError(f"'{cam_path}' lists no images")
    try:
        ids = sorted(int(k) for k in cams)
    except ValueError as e:
        raise FileFormatError(f"'{cam_path}': keys must be image ids: {e}") from e
    unknown = sorted(set(gt) - set(cams), key=str)
    if unknown:
        raise FileFormatError(f"'{gt_path}' annotates images {unknown[:5]} that "
                              f"'{cam_path.name}' does not list; add their cameras")
    K0 = _numbers(_key(cams[str(ids[0])], "cam_K", f"{cam_path.name}: image {ids[0]}"), 9,
                  f"{cam_path.name}: image {ids[0]}", "cam_K")
    w0, h0 = _image_size(_find_rgb(d, ids[0]))
    intr = Intrinsics.from_K(K0.reshape(3, 3), w0, h0)
    frames = []
    world_poses: dict[int, np.ndarray] = {}
    t_norms_mm = []
    for i in ids:
        c = cams[str(i)]
        where = f"{cam_path.name}: image {i}"
        K = _numbers(_key(c, "cam_K", where), 9, where, "cam_K")
        if not np.allclose(K, K0, rtol=1e-6, atol=1e-6):
            raise FileFormatError(f"{where}: 'cam_K' {K.tolist()} differs from image {ids[0]}'s; "
                                  "a Sequence has one camera, split the scene per camera")
        scale = _numbers([_key(c, "depth_scale", where)], 1, where, "depth_scale")[0]
        if scale <= 0:
            raise FileFormatError(f"{where}: 'depth_scale' must be > 0 (mm per unit), got {scale}")
        T_wc = None
        if ("cam_R_w2c" in c) != ("cam_t_w2c" in c):
            missing = "cam_t_w2c" if "cam_R_w2c" in c else "cam_R_w2c"
            raise FileFormatError(f"{where} has no '{missing}' (cam_R_w2c and cam_t_w2c come "
                                  "together)")
        if "cam_R_w2c" in c:
            T_wc = np.linalg.inv(pose_from_bop(c["cam_R_w2c"], c["cam_t_w2c"], where,
                                               ("cam_R_w2c", "cam_t_w2c")))
        T_co = {}
        anns = gt.get(str(i), [])
        if not isinstance(anns, list):
            raise FileFormatError(f"{gt_path.name}: image {i} must map to a list of annotations")
        for j, a in enumerate(anns):
            w = f"{gt_path.name}: image {i}, annotation {j}"
            T = pose_from_bop(_key(a, "cam_R_m2c", w), _key(a, "cam_t_m2c", w), w)
            oid = int(_key(a, "obj_id", w))
            t_norms_mm.append(np.linalg.norm(T[:3, 3]) * 1000.0)
            T_co.setdefault(oid, T)  # several instances of one object: the first one
            if T_wc is not None and oid not in world_poses:
                world_poses[oid] = T_wc @ T
        rgb_path = _find_rgb(d, i)
        depth_path = d / "depth" / f"{i:06d}.png"
        if not depth_path.exists():
            raise FileFormatError(f"missing depth image '{depth_path}'")
        for p in (rgb_path, depth_path):
            if _image_size(p) != (w0, h0):
                raise FileFormatError(f"'{p}' is {_image_size(p)[0]}x{_image_size(p)[1]} but "
                                      f"image {ids[0]} is {w0}x{h0}; all images of a scene "
                                      "must have one size")
        st = stamps.get(str(i), {})
        t_rgb = int(st.get("rgb_ns", i * frame_period_ns))
        frames.append(FrameRecord(index=i, stamp_ns=t_rgb,
                                  depth_stamp_ns=int(st.get("depth_ns", t_rgb)),
                                  rgb_path=str(rgb_path), depth_path=str(depth_path),
                                  T_world_camera=T_wc, depth_scale_m=float(scale) * 1e-3,
                                  T_camera_objects=T_co))
    if t_norms_mm and float(np.median(t_norms_mm)) < _MIN_PLAUSIBLE_MM:
        raise FileFormatError(f"{gt_path}: 'cam_t_m2c' values are {np.median(t_norms_mm):.3g} "
                              "from the camera on median; they look like metres, BOP stores "
                              "millimetres: multiply them by 1000")
    obj_ids = sorted({o for f in frames for o in f.T_camera_objects})
    sym = {}
    mdir = Path(models_dir) if models_dir else None
    if mdir is not None:
        if not mdir.is_dir():
            raise FileFormatError(f"models folder '{mdir}' does not exist")
        if (mdir / "models_info.json").exists():
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
    raise FileFormatError(f"missing colour image for image {i}: expected "
                          f"'{d / 'rgb' / f'{i:06d}.png'}' (or .jpg)")


def read_masks(scene_dir: str | Path, im_id: int, n: int, visib: bool = True) -> list[np.ndarray]:
    """The n masks ((H, W) bool) of image im_id, in annotation order (mask_visib/ by default,
    mask/ with visib=False)."""
    sub = "mask_visib" if visib else "mask"
    out = []
    for k in range(n):
        p = Path(scene_dir) / sub / f"{im_id:06d}_{k:06d}.png"
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise FileFormatError(f"missing mask '{p}'")
        out.append(m > 127)
    return out
