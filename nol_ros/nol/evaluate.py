"""Evaluation of object renderers on held-out objects with known ground truth.

A case (:func:`make_case`) is one of the synthetic world's catalogue objects (shapes and
textures the NOL training generator never produces) seen like a robot sees it: ``n_sources``
source crops from a circle at 35-45 deg elevation, 0.9-1.2 m (as view selection picks them on a
SMOT-like sequence), rendered under a fixed lamp on a textured background, degraded by the
synthetic Xtion colour model (exposure/white-balance drift, blur, noise), one or two of them
partly occluded (the occluder is cut from the mask); and ``n_targets`` target poses at 10-60 deg
elevation, 0.6-0.9 m, whose ground truth is the clean render under the same lamp, in 256 px NOL
crops. Source poses are then perturbed by a fixed error (translation, rotation) in a random
direction, like self-annotation errors.

Scores: masked PSNR and SSIM on the target silhouette (pixels no source sees count as black).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.geometry import invert_T, look_at, perturb_T
from nol_ros.mesh import Mesh
from nol_ros.nol.data import _occlude, _texture, crop_intrinsics, render_shaded
from nol_ros.nol.projection import SourceView

NOISE_LEVELS = ((0.0, 0.0), (0.005, 1.0), (0.01, 3.0), (0.02, 5.0))  # (m, deg)


@dataclass
class Case:
    """mesh: untextured; sources: SourceView at the TRUE poses (perturb with
    :func:`noisy_sources`); T_targets (M, 4, 4); intr_targets: one Intrinsics per target;
    gt_rgb (M, S, S, 3) float32 [0, 1]; gt_mask (M, S, S) bool."""

    name: str
    mesh: Mesh
    sources: list[SourceView]
    T_targets: np.ndarray
    intr_targets: list[Intrinsics]
    gt_rgb: np.ndarray
    gt_mask: np.ndarray


def _view(az: float, el_deg: float, d: float) -> np.ndarray:
    el = np.radians(el_deg)
    eye = d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return invert_T(look_at(eye, np.zeros(3)))


def make_case(mesh_textured: Mesh, seed: int = 0, n_sources: int = 6, n_targets: int = 6,
              crop: int = 256, name: str = "") -> Case:
    """One evaluation case (deterministic by seed); see the module docstring."""
    import cv2

    from nol_ros.datasets.synthetic.sensor import SensorConfig, XtionSensor
    from nol_ros.rasterizer import Scene

    rng = np.random.default_rng([seed, 23])
    scene = Scene([mesh_textured], [np.eye(4)])
    light = np.array([rng.normal(0, 0.5), rng.normal(0, 0.5), 1.0])
    light /= np.linalg.norm(light)
    ambient = 0.55
    sensor = XtionSensor(SensorConfig(), np.random.default_rng([seed, 29]))
    bg_tex = _texture(rng, 512)
    az0 = rng.uniform(0, 2 * np.pi)
    occluded = set(rng.choice(n_sources, 2, replace=False).tolist())
    sources = []
    for k in range(n_sources):
        T = _view(az0 + 2 * np.pi * k / n_sources + rng.normal(0, 0.1),
                  rng.uniform(35, 45), rng.uniform(0.9, 1.2))
        intr = crop_intrinsics(mesh_textured, T, SMOT_XTION, crop, 128)
        col, res = render_shaded(scene, mesh_textured, intr, T, light, ambient, 1 - ambient)
        side = int(rng.integers(crop // 2, 512))
        x0, y0 = (int(rng.integers(0, 513 - side)) for _ in range(2))
        bg = cv2.resize(bg_tex[y0:y0 + side, x0:x0 + side], (crop, crop)).astype(np.float32)
        img = np.where(res.mask[..., None], col, bg / 255.0)
        img = sensor.rgb(img).astype(np.float32) / 255.0
        m = res.mask
        if k in occluded:
            img, m = _occlude(img, m, rng)
        sources.append(SourceView(img.astype(np.float32), m, intr.K, T))
    Ts, intrs, gts, gms = [], [], [], []
    for _ in range(n_targets):
        T = _view(rng.uniform(0, 2 * np.pi), rng.uniform(10, 60), rng.uniform(0.6, 0.9))
        intr = crop_intrinsics(mesh_textured, T, SMOT_XTION, crop, 128)
        col, res = render_shaded(scene, mesh_textured, intr, T, light, ambient, 1 - ambient)
        Ts.append(T)
        intrs.append(intr)
        gts.append(col)
        gms.append(res.mask)
    return Case(name or mesh_textured.name, mesh_textured.untextured(), sources, np.stack(Ts),
                intrs, np.stack(gts).astype(np.float32), np.stack(gms))


def noisy_sources(sources: list[SourceView], trans_m: float, rot_deg: float, seed: int
                  ) -> list[SourceView]:
    """Copies of the sources with each pose moved by exactly (trans_m, rot_deg) in a random
    direction (object frame)."""
    rng = np.random.default_rng([seed, 31])
    return [SourceView(s.rgb, s.mask, s.K,
                       perturb_T(s.T_camera_object, trans_m, np.radians(rot_deg), rng, "fixed")
                       if trans_m or rot_deg else s.T_camera_object)
            for s in sources]


def score(rgb: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(masked PSNR dB, masked SSIM) of one image (H, W, 3) float [0, 1] on mask (H, W)."""
    from nol_ros.metrics import masked_psnr, masked_ssim

    return (float(masked_psnr(rgb, gt, mask)), float(masked_ssim(rgb, gt, mask)))


def evaluate_renderer(renderer, case: Case, refine=None) -> dict:
    """Render every target of ``case`` with ``renderer`` (a NolRenderer) and score it.
    Returns {psnr, ssim (means), per_target [(psnr, ssim)], coverage, seconds_per_image,
    refine_loss (mean before/after)}."""
    import time

    per, cov, rl = [], [], []
    t0 = time.perf_counter()
    outs = []
    for T, intr, gt, gm in zip(case.T_targets, case.intr_targets, case.gt_rgb, case.gt_mask):
        res = renderer.render_detailed(T[None], intr, refine=refine)
        per.append(score(res.rgb[0], gt, gm))
        cov.append(float(res.coverage[0]))
        rl.append(res.refine_loss[0])
        outs.append(res)
    dt = (time.perf_counter() - t0) / len(case.T_targets)
    p = np.array(per)
    return {"psnr": float(p[:, 0].mean()), "ssim": float(p[:, 1].mean()), "per_target": per,
            "coverage": float(np.mean(cov)), "seconds_per_image": dt,
            "refine_loss": np.nanmean(np.array(rl), 0).tolist() if np.isfinite(rl).any()
            else [float("nan")] * 2, "results": outs}


def choose_default_method(results: dict, candidate: str = "nol", baseline: str = "ibr_angle",
                          refinement: str = "object") -> dict:
    """The rule that decides whether the shipped model becomes the default renderer, applied to
    a ``bench/bench_nol.py`` results dict: ``candidate`` wins only if its masked PSNR, averaged
    over every evaluated object and source-pose noise level with ``refinement`` (the setting
    LearnObject's render stage uses), is higher than ``baseline``'s. Returns {default_method,
    rule, mean_psnr {method: dB}, per_level {level: {method: dB}}, objects}."""
    objs = results.get("objects") or {}
    if not objs:
        raise ValueError("results hold no evaluated objects: run bench/bench_nol.py first")
    levels = list(next(iter(objs.values())).keys())
    per_level: dict = {}
    for lv in levels:
        per_level[lv] = {}
        for m in (candidate, baseline):
            v = [objs[o][lv][m][refinement][0] for o in objs
                 if m in objs[o].get(lv, {}) and refinement in objs[o][lv][m]]
            if len(v) != len(objs):
                raise ValueError(f"method '{m}' has no '{refinement}' score for every object "
                                 f"at {lv}: evaluate it with a checkpoint")
            per_level[lv][m] = float(np.mean(v))
    mean = {m: float(np.mean([per_level[lv][m] for lv in levels])) for m in (candidate,
                                                                              baseline)}
    return {"default_method": candidate if mean[candidate] > mean[baseline] else baseline,
            "rule": f"{candidate} if its mean masked PSNR ({refinement} refinement, all objects "
                    f"and noise levels) beats {baseline}",
            "mean_psnr": mean, "per_level": per_level, "objects": sorted(objs)}
