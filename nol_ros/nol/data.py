"""Training data for the NOL network (paper Sec. 3.2 and Table B.1), generated procedurally.

The paper trains on YCB-Video meshes with random MS-COCO textures. Neither can be downloaded
here, so a *set* is a random procedural mesh (boxes, cylinders, lathe shapes, compositions of
them) with a random procedural texture (printed-label, poster, wood, floor, wall, noise and
stripe images, mixed) rendered in ``renders_per_set`` poses around it on random backgrounds
(the paper: 10 renders per set, 1000 sets). The synthetic world's catalogue objects
(nol_ros.datasets.synthetic.objects.CATALOGUE, with their seed-0 textures) are never used: they
are the held-out evaluation objects, so evaluation shapes and textures are unseen in training.

Each render is a source/target crop exactly like the pipeline's: the object is projected with
the SMOT Xtion intrinsics (640x480) at 0.45-1.3 m, and the crop is the NOL crop rule (square
around the silhouette's bounding box, half side max(h/2, w/2, 128 px)) resized to the network's
crop size. The lighting is fixed in the object frame per set (a lamp in the room), so shading
changes with the view as it does for a robot circling a table.

A training *sample* (:func:`make_sample`): one render of a set is the target (no
augmentation), ``n_sources`` of the others are the sources, each with the paper's colour
augmentation (add U(-15, 15) per channel, linear contrast U(0.8, 1.3), multiply U(0.8, 1.2)
per channel, Gaussian blur sigma U(0, 0.5), additive Gaussian noise with sigma U(0, 10), all in
8-bit units) and pose perturbation (translation U(+-0.01 m), rotation U(+-0.05 rad) per axis);
projection and visibility use the perturbed poses, as inference uses self-annotated ones.
Everything is deterministic by seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.datasets.synthetic import textures as tx
from nol_ros.datasets.synthetic.objects import assemble, box_parts, lathe, rot, transform_part
from nol_ros.errors import InputError
from nol_ros.geometry import invert_T, look_at, perturb_T
from nol_ros.mesh import Mesh
from nol_ros.nol.projection import ProjectionGeometry, SourceView, geometry_from, source_geometry
from nol_ros.rasterizer import Scene, shade


@dataclass(frozen=True)
class DataConfig:
    """What the generator draws. Distances in metres, angles in degrees (elevation above the
    object's horizontal plane), augmentation magnitudes in 8-bit units."""

    crop_size: int = 128
    renders_per_set: int = 10
    n_sources: int = 8
    distance_m: tuple[float, float] = (0.45, 1.3)
    elevation_deg: tuple[float, float] = (-15.0, 85.0)
    min_crop_half: int = 128
    full_intrinsics: Intrinsics = SMOT_XTION
    # Table B.1 (sources only)
    add: float = 15.0
    contrast: tuple[float, float] = (0.8, 1.3)
    multiply: tuple[float, float] = (0.8, 1.2)
    blur_sigma: tuple[float, float] = (0.0, 0.5)
    noise_sigma: tuple[float, float] = (0.0, 10.0)
    trans_noise_m: float = 0.01
    rot_noise_rad: float = 0.05
    occluder_prob: float = 0.3          # a random textured blob hides part of a source
    texture_px: int = 768               # side of the object's texture atlas
    background_px: int = 512            # side of the set's background texture


# --------------------------------------------------------------------------- objects
def _texture(rng: np.random.Generator, px: int) -> np.ndarray:
    """A random procedural texture (px, px, 3) uint8: one of the synthetic world's generators
    or a noise/stripe image, sometimes two of them mixed."""
    def one() -> np.ndarray:
        k = int(rng.integers(7))
        if k == 0:
            return tx.label_texture(rng, px, px)
        if k == 1:
            return tx.poster_texture(rng, px, px)
        if k == 2:
            return tx.wood_texture(rng, px, px)
        if k == 3:
            return tx.floor_texture(rng, px, px)
        if k == 4:
            return tx.wall_texture(rng, px, px)
        if k == 5:  # multi-scale colour noise (photo-like clutter)
            img = np.zeros((px, px, 3), np.float32)
            for scale in (2, 8, 32, 96):
                small = rng.normal(0, 1, (max(2, px // scale), max(2, px // scale), 3))
                img += cv2.resize(small, (px, px), interpolation=cv2.INTER_CUBIC) * \
                    rng.uniform(10, 50)
            return np.clip(img + rng.uniform(60, 200, 3), 0, 255).astype(np.uint8)
        # stripes / checks of random period and angle with text strokes
        yy, xx = np.mgrid[0:px, 0:px].astype(np.float32)
        a = rng.uniform(0, np.pi)
        period = rng.uniform(4, 40)
        ph = (np.cos(a) * xx + np.sin(a) * yy) / period
        c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        sel = ((np.floor(ph) + (np.floor(yy / rng.uniform(8, 64)) if rng.random() < 0.5
                                else 0)) % 2)[..., None]
        img = np.where(sel > 0, c1, c2).astype(np.uint8)
        for _ in range(int(rng.integers(0, 8))):
            cv2.putText(img, tx.WORDS[int(rng.integers(len(tx.WORDS)))],
                        (int(rng.integers(0, px // 2)), int(rng.integers(10, px))),
                        cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.3, 2.0)) * px / 512,
                        tuple(int(c) for c in rng.integers(0, 255, 3)), 2, cv2.LINE_AA)
        return img

    img = one()
    if rng.random() < 0.3:
        img = cv2.addWeighted(img, 0.5, one(), 0.5, 0)
    return img


def random_object(rng: np.random.Generator, name: str = "train_object",
                  texture_px: int = 768, texture_fn=None) -> Mesh:
    """A random textured procedural mesh, 6-30 cm, in its bounding-box-centred frame, with a
    texture atlas of about texture_px x texture_px; texture_fn(rng, px) -> (px, px, 3) uint8
    makes each part's texture (default: the procedural generator of this module)."""
    kind = int(rng.integers(4))
    if kind == 0:  # box
        s = rng.uniform([0.04, 0.03, 0.05], [0.22, 0.16, 0.28])
        parts = box_parts(*s, int(rng.integers(3, 9)))
    elif kind == 1:  # cylinder with rims
        r, h = rng.uniform(0.025, 0.08), rng.uniform(0.05, 0.25)
        side = np.c_[np.full(10, r), np.linspace(0.004, h - 0.004, 10)]
        prof = np.vstack([[0, 0], [r - 0.004, 0], side, [r - 0.004, h], [0, h]])
        parts = [lathe(prof, int(rng.integers(24, 56)))]
    elif kind == 2:  # random lathe (bottle, vase, bowl-like)
        h = rng.uniform(0.06, 0.28)
        z = np.linspace(0, 1, int(rng.integers(8, 24)))
        r0 = rng.uniform(0.025, 0.08)
        wav = sum(rng.uniform(-0.3, 0.3) * np.sin(np.pi * z * f + rng.uniform(0, 6))
                  for f in (1, 2, 3))
        radius = np.clip(r0 * (1 + 0.6 * wav), 0.006, 0.12)
        prof = np.vstack([[0, 0], np.c_[radius, z * h], [0, h]])
        parts = [lathe(prof, int(rng.integers(24, 56)))]
    else:  # composition: a box or cylinder with 1-3 attached parts (non-convex)
        s = rng.uniform([0.04, 0.04, 0.05], [0.16, 0.12, 0.2])
        parts = box_parts(*s, 4)
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.5:
                ps = rng.uniform([0.02, 0.02, 0.02], [0.1, 0.08, 0.12])
                sub = box_parts(*ps, 3)
            else:
                r, h = rng.uniform(0.01, 0.04), rng.uniform(0.03, 0.15)
                sub = [lathe(np.array([[0, 0], [r, 0], [r, h], [0, h]]), 20)]
            R = rot("x", rng.uniform(0, np.pi)) @ rot("z", rng.uniform(0, 2 * np.pi))
            t = rng.uniform(-1, 1, 3) * s / 2
            parts += [transform_part(p, R, t) for p in sub]
    cells = len(parts)
    g = int(np.ceil(np.sqrt(cells)))
    cell_px = max(32, texture_px // g)
    tex = np.zeros((g * cell_px, g * cell_px, 3), np.uint8)
    for k in range(cells):
        cu, cv = k % g, k // g
        r0 = (g - 1 - cv) * cell_px
        tex[r0:r0 + cell_px, cu * cell_px:(cu + 1) * cell_px] = (texture_fn or _texture)(
            rng, cell_px)
    return assemble(parts, cells, name, tex)


# --------------------------------------------------------------------------- views
def crop_intrinsics(mesh: Mesh, T_camera_object: np.ndarray, full: Intrinsics = SMOT_XTION,
                    out_size: int = 128, min_half: int = 128) -> Intrinsics:
    """Intrinsics of the NOL crop of the object in a ``full`` camera: a square around the
    projected vertices' bounding box, half side max(h/2, w/2, min_half) px, resized to
    out_size (the crop may extend past the image border: rendering does not care)."""
    T = np.asarray(T_camera_object, dtype=np.float64)
    P = mesh.vertices @ T[:3, :3].T + T[:3, 3]
    if np.any(P[:, 2] <= 0.01):
        raise InputError("the object is behind or too close to the camera (z <= 1 cm) in "
                         "this pose; give T_camera_object with the object in front")
    uv, _ = full.project(P)
    lo, hi = uv.min(0), uv.max(0) + 1
    half = max((hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2, float(min_half))
    c = (lo + hi) / 2
    side = 2 * half
    return full.crop_resize(c[0] - half, c[1] - half, side, side, out_size, out_size)


def random_view(rng: np.random.Generator, mesh: Mesh, cfg: DataConfig) -> np.ndarray:
    """T_camera_object of a camera on a sphere around the object (elevation, distance from
    ``cfg``), looking at a point near its centre, with a little roll."""
    az = rng.uniform(0, 2 * np.pi)
    el = np.radians(rng.uniform(*cfg.elevation_deg))
    d = rng.uniform(*cfg.distance_m)
    eye = d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    target = rng.normal(0, 0.01, 3)
    T_oc = look_at(eye, target)
    roll = rng.uniform(-0.2, 0.2)
    c, s = np.cos(roll), np.sin(roll)
    T_oc[:3, :3] = T_oc[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return invert_T(T_oc)


def render_shaded(scene, mesh: Mesh, intr: Intrinsics, T_camera_object: np.ndarray,
                  light_obj: np.ndarray, ambient: float, diffuse: float):
    """(rgb (H, W, 3) float32 [0, 1] with black background, raster) of the textured mesh; the
    light direction is given in the object frame."""
    res = scene.render(intr, invert_T(T_camera_object))
    l_cam = np.asarray(T_camera_object)[:3, :3] @ light_obj
    return shade(res, [mesh], light_dir_cam=tuple(l_cam), ambient=ambient,
                 diffuse=diffuse), res


@dataclass
class RenderSet:
    """One training set: the mesh geometry (untextured: the network never sees the texture)
    and its renders. rgb (N, S, S, 3) uint8 (object on its background), mask (N, S, S) bool
    (object pixels), K (N, 3, 3) crop intrinsics, T (N, 4, 4) true T_camera_object."""

    mesh: Mesh
    rgb: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    T: np.ndarray


def make_set(seed: int, index: int, cfg: DataConfig = DataConfig(),
             mesh: Mesh | None = None) -> RenderSet:
    """Set ``index`` of the generator with ``seed`` (deterministic). ``mesh``: render this
    textured mesh instead of a random one (evaluation on held-out objects)."""
    rng = np.random.default_rng([seed, 11, index])
    if mesh is None:
        mesh = random_object(rng, f"train_{index:05d}", cfg.texture_px)
    scene = Scene([mesh], [np.eye(4)])
    light = rng.normal(0, 1, 3)
    light[2] = abs(light[2]) + 0.5  # a lamp above
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.4, 0.7)
    S, N = cfg.crop_size, cfg.renders_per_set
    B = cfg.background_px
    bg_tex = _texture(rng, B)
    rgbs, masks, Ks, Ts = [], [], [], []
    while len(rgbs) < N:
        T = random_view(rng, mesh, cfg)
        intr = crop_intrinsics(mesh, T, cfg.full_intrinsics, S, cfg.min_crop_half)
        col, res = render_shaded(scene, mesh, intr, T, light, ambient, 1.0 - ambient)
        m = res.mask
        if m.sum() < 0.02 * S * S:
            continue
        # a random background crop of the set's background texture, scaled and blurred
        side = int(rng.integers(min(S // 2, B // 2), B))
        x0, y0 = (int(rng.integers(0, B + 1 - side)) for _ in range(2))
        bg = cv2.resize(bg_tex[y0:y0 + side, x0:x0 + side], (S, S)).astype(np.float32) / 255
        img = np.where(m[..., None], col, bg)
        rgbs.append(np.clip(np.round(img * 255), 0, 255).astype(np.uint8))
        masks.append(m)
        Ks.append(intr.K)
        Ts.append(T)
    return RenderSet(mesh.untextured() if mesh.is_textured else mesh, np.stack(rgbs),
                     np.stack(masks), np.stack(Ks), np.stack(Ts))


# --------------------------------------------------------------------------- augmentation
def augment_colour(rgb: np.ndarray, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """Table B.1 colour augmentation of one uint8 image (H, W, 3) -> float32 [0, 1]."""
    x = rgb.astype(np.float32)
    x = x + rng.uniform(-cfg.add, cfg.add, 3)
    x = (x - 128.0) * rng.uniform(*cfg.contrast) + 128.0
    x = x * rng.uniform(*cfg.multiply, 3)
    sig = rng.uniform(*cfg.blur_sigma)
    if sig > 0.05:
        x = cv2.GaussianBlur(x, (0, 0), sig)
    x = x + rng.normal(0, rng.uniform(*cfg.noise_sigma), x.shape)
    return np.clip(x, 0, 255).astype(np.float32) / 255.0


def _occlude(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    """Paint a random blob (an occluder in front of the object) and remove it from the mask."""
    S = rgb.shape[0]
    blob = np.zeros((S, S), np.uint8)
    c = rng.integers(0, S, 2)
    axes = rng.integers(S // 10, S // 3, 2)
    cv2.ellipse(blob, (int(c[0]), int(c[1])), (int(axes[0]), int(axes[1])),
                float(rng.uniform(0, 180)), 0, 360, 1, -1)
    occ = blob > 0
    out = rgb.copy()
    out[occ] = rng.uniform(0, 1, 3).astype(np.float32) * rng.uniform(0.5, 1.0, (occ.sum(), 1))
    return out, mask & ~occ


@dataclass
class Sample:
    """One training sample. src_rgb (K, 3, S, S) float32 [0, 1] augmented sources, src_angle
    (K, 1, S, S) angle maps (from the perturbed poses), geom: ProjectionGeometry into the
    target (perturbed source poses), target (3, S, S) float32 [0, 1], target_mask (1, S, S)
    bool (object pixels in the target)."""

    src_rgb: torch.Tensor
    src_angle: torch.Tensor
    geom: ProjectionGeometry
    target: torch.Tensor
    target_mask: torch.Tensor


def make_sample(rs: RenderSet, rng: np.random.Generator, cfg: DataConfig = DataConfig(),
                target_index: int | None = None, augment: bool = True) -> Sample:
    """Draw a target and ``cfg.n_sources`` sources from a set (see module docstring)."""
    N = len(rs.rgb)
    if N < 2:
        raise InputError(f"a render set needs >= 2 renders (target + source), it has {N}")
    t = int(rng.integers(N)) if target_index is None else int(target_index)
    others = [i for i in range(N) if i != t]
    k = min(cfg.n_sources, len(others))
    src_idx = rng.choice(others, k, replace=False)
    S = rs.rgb.shape[1]
    scene = Scene([rs.mesh], [np.eye(4)])
    sources, rgbs, angles, vis, cos = [], [], [], [], []
    for i in src_idx:
        img = rs.rgb[i]
        m = rs.mask[i]
        T = rs.T[i]
        if augment:
            x = augment_colour(img, rng, cfg)
            if rng.random() < cfg.occluder_prob:
                x, m = _occlude(x, m, rng)
            T = perturb_T(T, cfg.trans_noise_m, cfg.rot_noise_rad, rng, "uniform")
        else:
            x = img.astype(np.float32) / 255.0
        if not m.any():
            m = rs.mask[i]
        src = SourceView(x, m, rs.K[i], T)
        v, c, a = source_geometry(rs.mesh, src, scene=scene)
        sources.append(src)
        rgbs.append(x)
        angles.append(a)
        vis.append(v)
        cos.append(c)
    intr_t = Intrinsics.from_K(rs.K[t], S, S)
    raster = scene.render(intr_t, invert_T(rs.T[t]))
    geom = geometry_from(rs.mesh, sources, raster, np.stack(vis), np.stack(cos))
    target = torch.from_numpy(rs.rgb[t].astype(np.float32) / 255.0).permute(2, 0, 1)
    return Sample(torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous(),
                  torch.from_numpy(np.stack(angles))[:, None], geom, target,
                  torch.from_numpy(raster.mask)[None])
