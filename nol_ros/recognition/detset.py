"""Detector training images: masked object cut-outs pasted onto random backgrounds (paper:
150,000 images of NOL renders on MS-COCO; here procedural backgrounds, size configurable).

Every image gets ``objects`` cut-outs of the learnt objects at apparent distances drawn from
``distance_m`` (the cut-out is scaled by (f_target / f_source) * (z_source / d), so a 0.7 m
render appears as the object would at d in the target camera), random positions (partly outside
the image allowed), blurred seams and colour jitter; then textured distractor shapes and
occluders; visible boxes from the final instance map. Written as JPEG + COCO JSON::

    OUT/images/%06d.jpg
    OUT/annotations.json   {images: [{id, file_name, width, height}], categories: [{id =
                            obj_id, name}], annotations: [{id, image_id, category_id, bbox
                            [x, y, w, h] px (visible part), area, iscrowd 0, visib_fract}]}
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from nol_ros.camera import SMOT_XTION
from nol_ros.errors import ConfigError, FileFormatError, InputError
from nol_ros.io_utils import atomic_write_json, atomic_write_with
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.recognition.augment import BackgroundPool, color_jitter, draw_shape, paste, soft_alpha
from nol_ros.recognition.scenes import SceneBackgrounds, ScenePool
from nol_ros.recognition.trainset import PasteSample

# upper bounds of a detection set (options_yaml cannot exceed them; the paper preset: 150000
# images of 640x480)
MAX_IMAGES, MAX_SIDE = 1_000_000, 4096


@dataclass(frozen=True)
class DetectionSetConfig:
    """n_images of width x height (the target camera: focal_px); objects per image (lo, hi)
    (drawn without replacement while there are classes left); apparent distance range (m);
    distractors (textured boxes) and occluders per image (lo, hi); an instance whose visible
    part is below min_visib of its pasted pixels is not annotated (and rarely happens: a
    placement that would hide more than half of an earlier object is redrawn)."""

    n_images: int = 2000
    width: int = 640
    height: int = 480
    focal_px: float = float(SMOT_XTION.fx)
    objects: tuple[int, int] = (1, 6)
    distance_m: tuple[float, float] = (0.65, 1.6)
    distractors: tuple[int, int] = (0, 4)
    occluders: tuple[int, int] = (0, 2)
    min_visib: float = 0.25
    n_backgrounds: int = 40
    jpeg_quality: int = 92
    seed: int = 0
    scene_bg_prob: float = 0.5   # with scene backgrounds given: the share of images (and of
    #                              the pose net's replaced crop backgrounds) on them

    def __post_init__(self):
        if not (1 <= self.n_images <= MAX_IMAGES and 16 <= self.width <= MAX_SIDE
                and 16 <= self.height <= MAX_SIDE):
            raise ConfigError(f"detection set: n_images {self.n_images} must be in [1, "
                              f"{MAX_IMAGES}] and the size {self.width}x{self.height} in [16, "
                              f"{MAX_SIDE}] px per side")
        if not (1 <= self.objects[0] <= self.objects[1]):
            raise ConfigError(f"objects per image {self.objects}: need 1 <= lo <= hi")
        if not (0 < self.distance_m[0] <= self.distance_m[1]):
            raise ConfigError(f"distance_m {self.distance_m}: need 0 < lo <= hi")
        if not 0 <= self.scene_bg_prob <= 1:
            raise ConfigError(f"scene_bg_prob {self.scene_bg_prob} must be in [0, 1]")


def _scaled_cutout(s: PasteSample, scale: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = s.mask.shape
    nw, nh = max(2, int(round(w * scale))), max(2, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(s.rgb, (nw, nh), interpolation=interp)
    m = cv2.resize(s.mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR) > 0.5
    return rgb, m


def compose_image(samples: dict[int, list[PasteSample]], pool: BackgroundPool,
                  cfg: DetectionSetConfig, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[dict]]:
    """One training image (H, W, 3) uint8 and its annotations [{obj_id, bbox [x, y, w, h],
    area, visib_fract}]. pool: a BackgroundPool, or a ScenePool that puts part of the images
    on views of the robot's own frames."""
    H, W = cfg.height, cfg.width
    img = pool.background(rng, H, W)
    inst = np.full((H, W), -1, np.int32)    # instance id per pixel (last paste on top)
    own = []                                  # pasted pixel count per instance
    classes = sorted(samples)
    n = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    order = list(rng.permutation(classes))
    while len(order) < n:
        order.append(classes[int(rng.integers(len(classes)))])
    obj_of = []
    # distractors first (behind the objects or in front, random order with them)
    n_dis = int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))
    items = [("obj", int(o)) for o in order[:n]] + [("dis", 0)] * n_dis
    rng.shuffle(items)
    for kind, oid in items:
        if kind == "dis":
            d = rng.uniform(*cfg.distance_m)
            sz = cfg.focal_px * rng.uniform(0.04, 0.15, 2) / d
            h, w = max(4, int(sz[0])), max(4, int(sz[1]))
            x, y = int(rng.integers(-w // 3, W - w // 3)), int(rng.integers(-h // 3, H - h // 3))
            patch = pool.patch(rng, h, w)
            cv2.rectangle(patch, (0, 0), (w - 1, h - 1),
                          tuple(int(c) for c in rng.integers(0, 255, 3)), max(1, min(h, w) // 12))
            sel = np.ones((h, w), bool)
            paste(img, patch, soft_alpha(sel, rng), x, y)
            xa, ya, xb, yb = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
            inst[ya:yb, xa:xb] = -1
            continue
        lst = samples[oid]
        s = lst[int(rng.integers(len(lst)))]
        d = rng.uniform(*cfg.distance_m)
        scale = cfg.focal_px / s.focal_px * s.z_m / d * rng.uniform(0.95, 1.05)
        rgb, m = _scaled_cutout(s, scale)
        if not m.any():
            continue
        rgb = color_jitter(rgb, rng, 0.6)
        h, w = m.shape
        for _attempt in range(10):
            x = int(rng.integers(-w // 4, max(1, W - 3 * w // 4)))
            y = int(rng.integers(-h // 4, max(1, H - 3 * h // 4)))
            xa, ya, xb, yb = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
            if xb <= xa or yb <= ya:
                continue
            under = inst[ya:yb, xa:xb][m[ya - y:yb - y, xa - x:xb - x]]
            ok = True
            for j, cnt in zip(*np.unique(under[under >= 0], return_counts=True)):
                if cnt > 0.5 * max(1, int((inst == j).sum())):
                    ok = False
            if ok:
                break
        else:
            continue
        paste(img, rgb, soft_alpha(m, rng), x, y)
        sub = m[ya - y:yb - y, xa - x:xb - x]
        k = len(own)
        inst[ya:yb, xa:xb][sub] = k
        own.append(int(m.sum()))
        obj_of.append(oid)
    # occluders over random objects
    n_occ = int(rng.integers(cfg.occluders[0], cfg.occluders[1] + 1)) if own else 0
    for _ in range(n_occ):
        k = int(rng.integers(len(own)))
        ys, xs = np.nonzero(inst == k)
        if len(xs) == 0:
            continue
        sel = draw_shape(img, rng, pool, (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                          int(ys.max()) + 1))
        inst[sel] = -1
    img = color_jitter(img, rng, 0.5)
    anns = []
    for k, oid in enumerate(obj_of):
        ys, xs = np.nonzero(inst == k)
        if len(xs) == 0 or len(xs) < cfg.min_visib * own[k]:
            continue
        x0, y0 = int(xs.min()), int(ys.min())
        anns.append({"obj_id": int(oid), "bbox": [x0, y0, int(xs.max()) - x0 + 1,
                                                  int(ys.max()) - y0 + 1],
                     "area": int(len(xs)), "visib_fract": float(len(xs) / own[k])})
    return img, anns


def write_detection_set(samples: dict[int, list[PasteSample]], out_dir: str | Path,
                        cfg: DetectionSetConfig = DetectionSetConfig(),
                        names: dict[int, str] | None = None,
                        progress: ProgressFn = noop_progress,
                        scenes: SceneBackgrounds | None = None) -> dict:
    """Write ``cfg.n_images`` pasted images + annotations.json (COCO) into ``out_dir``.

    samples: obj_id -> cut-outs (:func:`nol_ros.recognition.trainset.load_paste_samples`).
    names: obj_id -> class name (COCO category names; default obj_XXXXXX). scenes: backgrounds
    from the robot's frames (:mod:`nol_ros.recognition.scenes`), for ``cfg.scene_bg_prob`` of
    the images. Returns a summary (images, annotations per class, scene backgrounds, seconds).
    Image i depends only on (cfg.seed, i) and the scenes.
    """
    if not samples or not any(samples.values()):
        raise InputError("no object cut-outs to paste: the object set is empty or has no "
                         "rendered images; render the objects first")
    empty = [o for o, v in samples.items() if not v]
    if empty:
        raise InputError(f"objects {empty} have no rendered images to paste")
    names = names or {}
    out = Path(out_dir)
    pool = ScenePool(BackgroundPool(cfg.n_backgrounds, cfg.seed), scenes, cfg.scene_bg_prob)
    images, anns = [], []
    t0 = time.perf_counter()
    per_class = {int(o): 0 for o in samples}
    for i in range(cfg.n_images):
        rng = np.random.default_rng([cfg.seed, 5, i])
        img, a = compose_image(samples, pool, cfg, rng)
        fn = f"images/{i:06d}.jpg"
        q = cfg.jpeg_quality

        def write(tmp, img=img, q=q):
            if not cv2.imwrite(tmp, np.ascontiguousarray(img[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, q]):
                raise OSError(f"cv2.imwrite failed for {tmp}")

        atomic_write_with(out / fn, write)
        images.append({"id": i, "file_name": fn, "width": cfg.width, "height": cfg.height})
        for x in a:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": x["obj_id"],
                         "bbox": x["bbox"], "area": x["area"], "iscrowd": 0,
                         "visib_fract": x["visib_fract"]})
            per_class[x["obj_id"]] += 1
        if i % 50 == 0 or i == cfg.n_images - 1:
            progress("detection set", (i + 1) / cfg.n_images, f"image {i + 1}/{cfg.n_images}")
    coco = {"info": {"description": "nol_ros detector training set (pasted renders)",
                     "config": asdict(cfg),
                     "scene_backgrounds": len(scenes.images) if scenes is not None else 0},
            "images": images,
            "categories": [{"id": int(o), "name": names.get(int(o), f"obj_{int(o):06d}")}
                           for o in sorted(samples)],
            "annotations": anns}
    atomic_write_json(out / "annotations.json", coco, indent=None)
    return {"images": len(images), "annotations": per_class,
            "scene_backgrounds": len(scenes.images) if scenes is not None else 0,
            "seconds": time.perf_counter() - t0}


@dataclass
class CocoImage:
    path: Path
    width: int
    height: int
    boxes_xyxy: np.ndarray   # (N, 4) float32 px
    labels: np.ndarray       # (N,) int64 obj_id


def read_coco(path: str | Path) -> tuple[list[CocoImage], list[dict]]:
    """Read a COCO detection JSON (bbox annotations) -> (images with their boxes, categories).
    Image paths are relative to the JSON's folder."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"missing COCO file '{p}'")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FileFormatError(f"'{p}' is not valid JSON: {e}") from e
    for key in ("images", "annotations", "categories"):
        if key not in d:
            raise FileFormatError(f"'{p}' has no '{key}'; it is not a COCO detection file")
    if not d["images"]:
        raise FileFormatError(f"'{p}' lists no images")
    cats = {int(c["id"]) for c in d["categories"]}
    by_img: dict[int, list] = {int(im["id"]): [] for im in d["images"]}
    for a in d["annotations"]:
        if int(a["category_id"]) not in cats:
            raise FileFormatError(f"'{p}': annotation {a.get('id')} has category "
                                  f"{a['category_id']} not in categories {sorted(cats)}")
        x, y, w, h = (float(v) for v in a["bbox"])
        if w <= 0 or h <= 0:
            raise FileFormatError(f"'{p}': annotation {a.get('id')} has an empty box {a['bbox']}")
        by_img.setdefault(int(a["image_id"]), []).append((x, y, x + w, y + h,
                                                          int(a["category_id"])))
    out = []
    for im in d["images"]:
        b = by_img.get(int(im["id"]), [])
        arr = np.asarray(b, np.float32).reshape(-1, 5)
        out.append(CocoImage(p.parent / im["file_name"], int(im["width"]), int(im["height"]),
                             arr[:, :4].copy(), arr[:, 4].astype(np.int64)))
    return out, d["categories"]
