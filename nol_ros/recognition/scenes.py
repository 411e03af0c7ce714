"""Backgrounds from the robot's own camera: the frames of the sequence it learnt its objects
from, with those objects removed, as backgrounds of the detector training images.

Random textures teach the detector what the objects are not in general; the robot's room --
its tables, the other things standing on them -- is what it will look at. The learnt objects
are in those frames too, unlabelled, so each frame is used only where their masks (written by
self-annotation: ``WORKSPACE/objects/NAME/masks/%06d.png``, one per frame) are known: the
masked pixels (dilated) are inpainted, and a frame some learnt object has no mask for is left
out. Several objects learnt from one recording (the same ``scene_stamps.json``; without stamps,
only the very same folder) have their masks joined.

    bg = SceneBackgrounds.from_workspaces([ws / "mug", ws / "drill"], width=320)
    img = bg.background(rng, 240, 320)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from nol_ros.datasets.bop import read_bop_scene
from nol_ros.errors import FileFormatError, InputError
from nol_ros.recognition.augment import color_jitter
from nol_ros.workspace import AnnotationFiles


def _sequence_key(seq: Path) -> str:
    """Frames that are the same recording have the same key."""
    st = seq / "scene_stamps.json"
    if st.is_file():
        return hashlib.sha1(st.read_bytes()).hexdigest()
    names = sorted(p.name for p in (seq / "rgb").iterdir()) if (seq / "rgb").is_dir() else []
    return hashlib.sha1(json.dumps([seq.resolve().as_posix()] + names).encode()).hexdigest()


class SceneBackgrounds:
    """Object-free images (uint8 (H, W, 3)) and random views of them."""

    def __init__(self, images: list[np.ndarray], sources: list[str] | None = None):
        if not images:
            raise InputError("no scene backgrounds: every frame lacks a mask of some learnt "
                             "object (or the sequences are empty)")
        self.images = images
        self.sources = sources or []

    @classmethod
    def from_sequences(cls, groups: list[tuple[Path, list[Path]]], width: int = 320,
                       step: int = 4, max_images: int = 40, dilate_px: int = 6
                       ) -> SceneBackgrounds:
        """groups: (BOP scene folder of a sequence, mask folders of every learnt object in it).
        Every ``step``-th frame, at most ``max_images`` in all, resized to ``width`` px wide;
        the objects' masks, dilated by ``dilate_px`` (at that width), are inpainted."""
        if step < 1 or max_images < 1 or width < 16:
            raise InputError(f"scene backgrounds: step {step} and max_images {max_images} must "
                             f"be >= 1, width {width} >= 16")
        images, sources = [], []
        per_group = max(1, max_images // max(1, len(groups)))
        for seq_dir, mask_dirs in groups:
            seq = read_bop_scene(seq_dir)
            if not mask_dirs:
                raise InputError(f"sequence '{seq_dir}': no mask folders given (the learnt "
                                 "objects in it must be removed from its frames)")
            used = 0
            for f in seq.frames[::step]:
                if used >= per_group:
                    break
                paths = [Path(m) / f"{f.index:06d}.png" for m in mask_dirs]
                if not all(p.is_file() for p in paths):
                    continue
                rgb = f.load_rgb()
                H, W = rgb.shape[:2]
                hole = np.zeros((H, W), np.uint8)
                for p in paths:
                    m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
                    if m is None or m.shape != (H, W):
                        raise FileFormatError(f"mask '{p}' is unreadable or not {W}x{H}; learn "
                                              "the object again")
                    hole |= (m > 0).astype(np.uint8)
                h = max(8, int(round(H * width / W)))
                small = cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA)
                hs = cv2.resize(hole, (width, h), interpolation=cv2.INTER_NEAREST)
                if dilate_px > 0:
                    hs = cv2.dilate(hs, np.ones((2 * dilate_px + 1,) * 2, np.uint8))
                if hs.any():
                    small = cv2.inpaint(np.ascontiguousarray(small), hs, 5, cv2.INPAINT_TELEA)
                images.append(small)
                sources.append(f"{seq_dir}:{f.index}")
                used += 1
        return cls(images, sources)

    @classmethod
    def from_workspaces(cls, workspaces: list[Path], width: int = 320, step: int = 4,
                        max_images: int = 40, dilate_px: int = 6) -> SceneBackgrounds:
        """Learnt-object workspaces (``WS/sequence/``, ``WS/objects/NAME/masks/``), grouped by
        recording so that every learnt object seen in a frame is removed from it."""
        groups: dict[str, tuple[Path, list[Path]]] = {}
        for ws in workspaces:
            ws = Path(ws)
            run = AnnotationFiles(ws)
            seq = run.sequence
            masks = sorted(run.object(n).masks_dir for n in run.object_names()
                           if run.object(n).masks_dir.is_dir())
            if not seq.is_dir() or not masks:
                raise FileFormatError(f"'{ws}' has no sequence/ or objects/*/masks/: not a "
                                      "learnt-object workspace (learn the object first)")
            g = groups.setdefault(_sequence_key(seq), (seq, []))
            g[1].extend(masks)
        return cls.from_sequences(list(groups.values()), width, step, max_images, dilate_px)

    def background(self, rng: np.random.Generator, h: int, w: int,
                   zoom: tuple[float, float] = (1.0, 1.4)) -> np.ndarray:
        """(h, w, 3) uint8: a random window of a scene image, scaled ``zoom`` times what covers
        (h, w) (at width ``width`` a 1x window shows things at the camera's own scale when
        the detector images have that width; a pose crop wants a window of an object's size,
        i.e. 2.5-5x), flipped half the time."""
        src = self.images[int(rng.integers(len(self.images)))]
        Hs, Ws = src.shape[:2]
        s = max(h / Hs, w / Ws) * rng.uniform(*zoom)
        x0 = rng.uniform(0, max(0.0, Ws * s - w))
        y0 = rng.uniform(0, max(0.0, Hs * s - h))
        M = np.array([[s, 0, -x0], [0, s, -y0]], np.float64)
        out = cv2.warpAffine(src, M, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.5:
            out = np.ascontiguousarray(out[:, ::-1])
        return color_jitter(out, rng, 0.5)


class ScenePool:
    """A :class:`~nol_ros.recognition.augment.BackgroundPool` whose backgrounds are scene views
    with probability ``prob`` (zoomed by ``zoom``); patches and shapes still come from the pool.
    With ``scenes`` None it is the pool itself (same random draws)."""

    def __init__(self, pool, scenes: SceneBackgrounds | None, prob: float,
                 zoom: tuple[float, float] = (1.0, 1.4)):
        if not 0 <= prob <= 1:
            raise InputError(f"scene background probability {prob} must be in [0, 1]")
        self.pool, self.scenes, self.prob, self.zoom = pool, scenes, float(prob), zoom

    def background(self, rng: np.random.Generator, h: int, w: int, shapes: int = 6
                   ) -> np.ndarray:
        if self.scenes is not None and rng.random() < self.prob:
            return self.scenes.background(rng, h, w, self.zoom)
        return self.pool.background(rng, h, w, shapes)

    def __getattr__(self, name):
        return getattr(self.pool, name)
