"""Training sets on disk and the object crops the recognisers learn from.

A *render set* is one BOP scene per object (``SET/OBJ_ID:06d/``), written by
:func:`write_render_set` from any :class:`~nol_ros.recognition.renderers.ObjectRenderer`::

    SET/render_set.json            source name, pose grid, objects, image counts, timing
    SET/000001/scene_camera.json   crop intrinsics (one per object), depth_scale 0.1 mm
    SET/000001/scene_gt.json       T_camera_object of every image (hemisphere x in-plane)
    SET/000001/scene_gt_info.json  boxes, pixel counts (mask = mask_visib: one object)
    SET/000001/rgb/ depth/ mask/ mask_visib/   (depth: the mesh's rasterised depth)

The *real* source needs no writing: the recognisers read crops straight out of the training
sequence's BOP scene (frames where the object is visible >= 50 %, as in the paper's SMOT
"Real" column). :func:`load_pose_samples` and :func:`load_paste_samples` read either kind.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.datasets.bop import BopSceneWriter, pose_from_bop
from nol_ros.errors import FileFormatError, InputError
from nol_ros.geometry import invert_T, so3_exp
from nol_ros.io_utils import atomic_write_json
from nol_ros.mesh import Mesh
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.rasterizer import Scene, interpolate_vertex_attribute
from nol_ros.recognition.poses import (
    PoseGridConfig,
    bbox_centre,
    bounding_radius,
    crop_intrinsics,
    hemisphere_poses,
    roll,
    warp_roll,
)
from nol_ros.recognition.renderers import ObjectRenderer
from nol_ros.workspace import RENDER_SET_FILE

RENDER_DEPTH_SCALE = 0.1  # mm per depth unit in render sets (0.1 mm steps, up to 6.5 m)


def _raster_depth_masks(mesh: Mesh, T: np.ndarray, intr: Intrinsics):
    sc = Scene([mesh], [np.eye(4)])
    out = [sc.render(intr, invert_T(Tb), near=0.01, far=20.0) for Tb in T]
    return out


def write_render_set(renderer: ObjectRenderer, mesh: Mesh, obj_id: int, out_dir: str | Path,
                     grid: PoseGridConfig = PoseGridConfig(), source: str = "",
                     name: str = "", batch: int = 16, progress: ProgressFn = noop_progress,
                     shard: tuple[int, int] = (0, 1)) -> dict:
    """Render one object on the pose grid and write it as the BOP scene ``out_dir/OBJ_ID``.

    renderer: draws the object (rgb + mask); mesh: the object's geometry (metres, the mesh the
    renderer uses), rasterised for the depth images. Returns the object's entry of
    render_set.json (also merged into ``out_dir/render_set.json``).
    shard (k, n): render only the batches b of ``batch`` views with b mod n == k (a part of the
    set for one of n workers, with the image ids of the whole set; the renderer sees the very
    batches it sees when it renders everything). nol_ros.recognition.render_shards merges the
    parts into the whole set.
    """
    if not isinstance(renderer, ObjectRenderer):
        raise InputError(f"renderer {type(renderer).__name__} has no render(T, intr) method")
    obj_id = int(obj_id)
    if obj_id <= 0:
        raise InputError(f"obj_id must be a positive BOP object id, got {obj_id}")
    out_dir = Path(out_dir)
    centre = bbox_centre(mesh.vertices)
    radius = bounding_radius(mesh.vertices)
    intr = crop_intrinsics(radius, grid.distance_m, grid.crop_size, margin=grid.margin)
    views = hemisphere_poses(centre, grid)
    angles = grid.inplane_deg
    k_shard, n_shards = (int(v) for v in shard)
    if not 0 <= k_shard < n_shards:
        raise InputError(f"shard {k_shard} of {n_shards}: need 0 <= shard < shard count")
    scene_dir = out_dir / f"{obj_id:06d}"
    t0 = time.perf_counter()
    n_written = n_empty = 0
    with BopSceneWriter(scene_dir, intr, depth_scale=RENDER_DEPTH_SCALE) as w:
        for b0 in range(0, len(views), batch):
            if (b0 // batch) % n_shards != k_shard:
                continue
            T = views[b0:b0 + batch]
            if hasattr(renderer, "render_raster"):
                rgb, mask, rasters = renderer.render_raster(T, intr)
            else:
                rgb, mask = renderer.render(T, intr)
                rasters = _raster_depth_masks(mesh, T, intr)
            rgb, mask = np.asarray(rgb), np.asarray(mask, bool)
            if rgb.shape != (len(T), intr.height, intr.width, 3) or rgb.dtype != np.uint8:
                raise InputError(f"renderer returned rgb {rgb.shape} {rgb.dtype}; expected "
                                 f"({len(T)}, {intr.height}, {intr.width}, 3) uint8")
            if mask.shape != rgb.shape[:3]:
                raise InputError(f"renderer returned mask {mask.shape}, expected {rgb.shape[:3]}")
            for j in range(len(T)):
                depth = rasters[j].depth.astype(np.float32)
                full = rasters[j].mask
                for k, a in enumerate(angles):
                    im_id = (b0 + j) * len(angles) + k
                    m_full = warp_roll(full.astype(np.uint8), intr, a, nearest=True) > 0
                    m_vis = warp_roll((mask[j] & full).astype(np.uint8), intr, a,
                                      nearest=True) > 0
                    if not m_vis.any():
                        n_empty += 1
                    w.add_frame(im_id, warp_roll(rgb[j], intr, a),
                                warp_roll(depth, intr, a, nearest=True),
                                objects=[(obj_id, roll(a) @ T[j], m_full, m_vis)])
                    n_written += 1
            progress("render", min(1.0, (b0 + len(T)) / len(views)),
                     f"object {obj_id}: {b0 + len(T)}/{len(views)} views")
    if n_empty == n_written and n_shards == 1:
        raise InputError(f"object {obj_id}: the renderer produced no object pixels in any of "
                         f"{n_written} images; check the renderer and the mesh")
    entry = {"obj_id": obj_id, "name": name or mesh.name, "images": n_written,
             "views": len(views), "inplane_deg": angles.tolist(), "empty_images": n_empty,
             "K": intr.K.tolist(), "size": [intr.width, intr.height],
             "seconds": time.perf_counter() - t0}
    if n_shards > 1:
        entry["shard"] = [k_shard, n_shards]
    meta_path = out_dir / RENDER_SET_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({"source": source, "grid": asdict(grid)})
    meta.setdefault("objects", {})[str(obj_id)] = entry
    atomic_write_json(meta_path, meta)
    return entry


def read_render_set(set_dir: str | Path) -> dict:
    """render_set.json of a set folder (FileFormatError when it is missing or lists nothing)."""
    p = Path(set_dir) / RENDER_SET_FILE
    if not p.is_file():
        raise FileFormatError(f"'{p}' does not exist: '{set_dir}' is not a render set (write one "
                              "with write_render_set)")
    meta = json.loads(p.read_text())
    if not meta.get("objects"):
        raise FileFormatError(f"'{p}' lists no objects: the set has no rendered images")
    return meta


# -- reading crops ---------------------------------------------------------------------------------
@dataclass
class Annotation:
    """One object instance in one image of a BOP scene."""

    scene_dir: Path
    im_id: int
    index: int                 # annotation index in scene_gt (mask file suffix)
    obj_id: int
    T_camera_object: np.ndarray
    K: np.ndarray
    bbox_visib: tuple[int, int, int, int]
    visib_fract: float
    px_count_visib: int

    def rgb_path(self) -> Path:
        for ext in (".png", ".jpg"):
            p = self.scene_dir / "rgb" / f"{self.im_id:06d}{ext}"
            if p.exists():
                return p
        raise FileFormatError(f"missing colour image {self.scene_dir}/rgb/{self.im_id:06d}.png")

    def mask_path(self, visib: bool = True) -> Path:
        sub = "mask_visib" if visib else "mask"
        return self.scene_dir / sub / f"{self.im_id:06d}_{self.index:06d}.png"


def scene_annotations(scene_dir: str | Path, obj_id: int, min_visib: float = 0.0,
                      min_px: int = 1) -> list[Annotation]:
    """Annotations of ``obj_id`` in a BOP scene with visib_fract >= min_visib and at least
    min_px visible pixels, in image order."""
    d = Path(scene_dir)
    files = {n: d / f"{n}.json" for n in ("scene_gt", "scene_camera", "scene_gt_info")}
    for n, p in files.items():
        if not p.is_file():
            raise FileFormatError(f"missing '{p}': '{d}' is not a complete BOP scene ({n} is "
                                  "needed for training crops)")
    gt = json.loads(files["scene_gt"].read_text())
    cam = json.loads(files["scene_camera"].read_text())
    info = json.loads(files["scene_gt_info"].read_text())
    out = []
    for key in sorted(gt, key=int):
        anns = gt[key]
        infos = info.get(key)
        if infos is None or len(infos) != len(anns):
            raise FileFormatError(f"{files['scene_gt_info']}: image {key} has "
                                  f"{0 if infos is None else len(infos)} entries for "
                                  f"{len(anns)} annotations in scene_gt.json")
        for k, (a, inf) in enumerate(zip(anns, infos)):
            if int(a["obj_id"]) != obj_id:
                continue
            if inf["visib_fract"] < min_visib or inf["px_count_visib"] < min_px:
                continue
            where = f"{files['scene_gt']}: image {key}, annotation {k}"
            out.append(Annotation(d, int(key), k, obj_id,
                                  pose_from_bop(a["cam_R_m2c"], a["cam_t_m2c"], where),
                                  np.asarray(cam[key]["cam_K"], float).reshape(3, 3),
                                  tuple(int(v) for v in inf["bbox_visib"]),
                                  float(inf["visib_fract"]), int(inf["px_count_visib"])))
    return out


def _read_rgb(p: Path) -> np.ndarray:
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise FileFormatError(f"cannot read image '{p}'")
    return np.ascontiguousarray(img[..., ::-1])


def _read_mask(p: Path) -> np.ndarray:
    m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FileFormatError(f"missing mask '{p}'")
    return m > 127


@dataclass
class PoseSamples:
    """Object crops for the pose network, all of one object, N samples of R x R pixels.

    rgb (N, R, R, 3) uint8; visib (N, R, R) bool (visible object pixels); amodal (N, R, R) bool
    (the whole silhouette, occluded parts included); xyz (N, R, R, 3) float16 object-frame
    coordinates (m) of the surface seen at each pixel of the amodal mask (0 elsewhere);
    T (N, 4, 4) T_camera_object; K (N, 3, 3) intrinsics of the crops. The object's visible box
    spans ~R / wide pixels around the crop centre.
    """

    obj_id: int
    rgb: np.ndarray
    visib: np.ndarray
    amodal: np.ndarray
    xyz: np.ndarray
    T: np.ndarray
    K: np.ndarray
    keep_background: bool = False

    def __len__(self) -> int:
        return len(self.rgb)


def square_box(bbox_xywh, scale: float) -> tuple[float, float, float]:
    """Square (x0, y0, side) centred on an (x, y, w, h) box, side = scale * max(w, h)."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    side = max(scale * max(w, h), 2.0)
    return x + w / 2 - side / 2, y + h / 2 - side / 2, side


def _crop(img, box, size, interp):
    x0, y0, side = box
    s = size / side
    M = np.array([[s, 0, s * (0.5 - x0) - 0.5], [0, s, s * (0.5 - y0) - 0.5]])
    flags = cv2.INTER_NEAREST if interp == "nearest" else cv2.INTER_AREA if s < 0.7 else \
        cv2.INTER_LINEAR
    a = np.asarray(img)
    if interp != "nearest" and s < 0.7:
        k = int(np.ceil(1 / s)) | 1
        a = cv2.blur(a, (k, k))
        flags = cv2.INTER_LINEAR
    return cv2.warpAffine(a, M, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def crop_with_intrinsics(intr: Intrinsics, box: tuple[float, float, float], size: int
                         ) -> Intrinsics:
    x0, y0, side = box
    return intr.crop_resize(x0, y0, side, side, size, size)


def object_coordinates(mesh: Mesh, T_camera_object: np.ndarray, intr: Intrinsics,
                       scene=None) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise ``mesh`` at the pose: (xyz (H, W, 3) float32 object-frame metres, 0 off the
    object; mask (H, W) bool). scene: a prebuilt ``Scene([mesh], [eye(4)])`` to reuse."""
    sc = scene if scene is not None else Scene([mesh], [np.eye(4)])
    res = sc.render(intr, invert_T(T_camera_object), near=0.01, far=20.0)
    xyz = interpolate_vertex_attribute(res, [mesh], [mesh.vertices.astype(np.float32)])
    return xyz, res.mask


def canonical_symmetric_coords(xyz: np.ndarray, mask: np.ndarray, T_camera_object: np.ndarray,
                               axis: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Object coordinates of an object with a continuous symmetry (axis through offset, object
    frame) turned about the axis so the camera always sits at the same azimuth around it: the
    network then sees one target per appearance. PnP on such coordinates gives T @ S for a
    symmetry S, which ADI scores like T."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    o = np.asarray(offset, float)
    R, t = T_camera_object[:3, :3], T_camera_object[:3, 3]
    cam = -R.T @ t - o                      # camera centre in the object frame, from the axis
    ref = np.array([1.0, 0, 0]) if abs(a[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = ref - a * (ref @ a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    phi = float(np.arctan2(cam @ e2, cam @ e1))
    Rc = so3_exp(-a * phi)                  # turns the camera azimuth to 0
    out = xyz.copy()
    out[mask] = (xyz[mask] - o) @ Rc.T + o
    return out


def load_pose_samples(scene_dir: str | Path, obj_id: int, mesh: Mesh, size: int,
                      wide: float = 1.6, min_visib: float = 0.0, min_px: int = 30,
                      max_samples: int | None = None, keep_background: bool = False,
                      seed: int = 0, symmetry_axis: tuple | None = None,
                      progress: ProgressFn = noop_progress) -> PoseSamples:
    """Crops of every annotation of ``obj_id`` in a BOP scene (a render set's object scene or a
    real sequence): a square of ``wide`` times the visible box, resized to ``size`` px, with the
    object coordinates rasterised from ``mesh`` at the annotated pose (exact for every source).
    max_samples: a random subset (seeded) when there are more. keep_background: the crops'
    backgrounds are real (a real sequence) and may be kept by the augmentation.
    symmetry_axis: (axis (3,), offset (3,) m) of a continuous symmetry: the coordinates are
    canonicalised about it (:func:`canonical_symmetric_coords`)."""
    anns = scene_annotations(scene_dir, obj_id, min_visib, min_px)
    if not anns:
        raise InputError(f"no images of object {obj_id} in '{scene_dir}' (visib >= {min_visib}, "
                         f">= {min_px} px): nothing to train on; render the object first")
    if max_samples is not None and len(anns) > max_samples:
        rng = np.random.default_rng(seed)
        anns = [anns[i] for i in np.sort(rng.choice(len(anns), max_samples, replace=False))]
    N = len(anns)
    rgb = np.zeros((N, size, size, 3), np.uint8)
    vis = np.zeros((N, size, size), bool)
    amo = np.zeros((N, size, size), bool)
    xyz = np.zeros((N, size, size, 3), np.float16)
    Ts = np.zeros((N, 4, 4))
    Ks = np.zeros((N, 3, 3))
    scene = Scene([mesh], [np.eye(4)])
    cache: dict[Path, tuple] = {}
    for i, a in enumerate(anns):
        p = a.rgb_path()
        if p not in cache:
            cache = {p: (_read_rgb(p),)}
        img = cache[p][0]
        H, W = img.shape[:2]
        box = square_box(a.bbox_visib, wide)
        intr = crop_with_intrinsics(Intrinsics.from_K(a.K, W, H), box, size)
        rgb[i] = _crop(img, box, size, "linear")
        vis[i] = _crop(_read_mask(a.mask_path(True)).astype(np.uint8), box, size,
                       "nearest") > 0
        xyz[i], amo[i] = object_coordinates(mesh, a.T_camera_object, intr, scene)
        if symmetry_axis is not None:
            xyz[i] = canonical_symmetric_coords(xyz[i], amo[i], a.T_camera_object,
                                                *symmetry_axis)
        Ts[i], Ks[i] = a.T_camera_object, intr.K
        if i % 200 == 0 or i == N - 1:
            progress("load crops", (i + 1) / N, f"object {obj_id}: {i + 1}/{N}")
    return PoseSamples(obj_id, rgb, vis, amo, xyz, Ts, Ks, keep_background)


@dataclass
class PasteSample:
    """An object cut-out for pasting: rgb (h, w, 3) uint8, mask (h, w) bool (visible pixels),
    focal_px: focal length of the image it came from, z_m: its distance (camera z)."""

    obj_id: int
    rgb: np.ndarray
    mask: np.ndarray
    focal_px: float
    z_m: float


def load_paste_samples(scene_dir: str | Path, obj_id: int, max_samples: int | None = None,
                       min_visib: float = 0.0, min_px: int = 30, seed: int = 0
                       ) -> list[PasteSample]:
    """Cut-outs (visible box + 2 px) of ``obj_id`` from a BOP scene for the detector set."""
    anns = scene_annotations(scene_dir, obj_id, min_visib, min_px)
    if not anns:
        raise InputError(f"no images of object {obj_id} in '{scene_dir}' (visib >= {min_visib}):"
                         " nothing to paste; render the object first")
    if max_samples is not None and len(anns) > max_samples:
        rng = np.random.default_rng(seed)
        anns = [anns[i] for i in np.sort(rng.choice(len(anns), max_samples, replace=False))]
    out = []
    for a in anns:
        img = _read_rgb(a.rgb_path())
        m = _read_mask(a.mask_path(True))
        x, y, w, h = a.bbox_visib
        H, W = m.shape
        x0, y0 = max(0, x - 2), max(0, y - 2)
        x1, y1 = min(W, x + w + 2), min(H, y + h + 2)
        out.append(PasteSample(obj_id, np.ascontiguousarray(img[y0:y1, x0:x1]),
                               np.ascontiguousarray(m[y0:y1, x0:x1]),
                               float(0.5 * (a.K[0, 0] + a.K[1, 1])),
                               float(a.T_camera_object[2, 3])))
    return out


def crop_image_box(img: np.ndarray, box: tuple[float, float, float], size: int,
                   interp: str = "linear") -> np.ndarray:
    """Square (x0, y0, side) crop (float box) resized to ``size`` (outside the image = 0)."""
    return _crop(img, box, size, interp)

