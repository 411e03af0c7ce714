"""Evaluation of object renderers on held-out objects with known ground truth.

A case (:func:`make_case`) is one of the synthetic world's catalogue objects (shapes and
textures the NOL training generator never produces) seen like a robot sees it: ``n_sources``
source crops from a circle at 35-45 deg elevation, 0.9-1.2 m (as view selection picks them on a
SMOT-like sequence), rendered under a fixed lamp on a textured background at 2x and
area-averaged (a camera integrates over its pixels), degraded by the synthetic Xtion colour
model (exposure/white-balance drift, blur, noise), one or two of them partly occluded (the
occluder is cut from the mask); and ``n_targets`` target poses at 10-60 deg elevation,
0.6-0.9 m, whose ground truth is the clean render under the same lamp, in 256 px NOL
crops, rendered at 2x and area-averaged over the part of each pixel the object covers (a camera
integrates over its pixels; the silhouette's edge is not darkened by the empty background, see
:func:`object_truth`). Source poses are then perturbed by a fixed error (translation,
rotation) in a random direction, like self-annotation errors.

Scores: masked PSNR and SSIM on the target silhouette (pixels no source sees count as black).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from nol_ros.camera import SMOT_XTION, Intrinsics, crop_image, square_crop_box
from nol_ros.datasets.synthetic.sensor import SensorConfig, XtionSensor, specular_strength
from nol_ros.datasets.synthetic.world import build_world
from nol_ros.geometry import invert_T, look_at, make_T, perturb_T, so3_exp
from nol_ros.mesh import Mesh
from nol_ros.metrics import masked_psnr, masked_ssim
from nol_ros.nol.data import _occlude, _texture, crop_intrinsics, render_shaded
from nol_ros.nol.projection import SourceView
from nol_ros.rasterizer import Scene, shade

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
        # the camera integrates over its pixels: the object over its background at 2x, then
        # area-averaged (a point-sampled source aliases the fine textures)
        col, res = render_shaded(scene, mesh_textured, intr.scaled(2), T, light, ambient,
                                 1 - ambient)
        side = int(rng.integers(crop // 2, 512))
        x0, y0 = (int(rng.integers(0, 513 - side)) for _ in range(2))
        bg = cv2.resize(bg_tex[y0:y0 + side, x0:x0 + side], (2 * crop, 2 * crop))
        img = cv2.resize(np.where(res.mask[..., None], col, bg.astype(np.float32) / 255.0),
                         (crop, crop), interpolation=cv2.INTER_AREA)
        res = scene.render(intr, invert_T(T))
        img = sensor.rgb(img).astype(np.float32) / 255.0
        m = res.mask
        if k in occluded:
            img, m = _occlude(img, m, rng)
        sources.append(SourceView(img.astype(np.float32), m, intr.K, T))
    Ts, intrs, gts, gms = [], [], [], []
    for _ in range(n_targets):
        T = _view(rng.uniform(0, 2 * np.pi), rng.uniform(10, 60), rng.uniform(0.6, 0.9))
        intr = crop_intrinsics(mesh_textured, T, SMOT_XTION, crop, 128)
        # the truth integrates over each pixel, as a camera does (a point-sampled render of the
        # catalogue's fine textures is 21-25 dB from a 4x supersampled one)
        col, mask = object_truth(scene, [mesh_textured], intr, invert_T(T), light)
        Ts.append(T)
        intrs.append(intr)
        gts.append(col)
        gms.append(mask)
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
    return (float(masked_psnr(rgb, gt, mask)), float(masked_ssim(rgb, gt, mask)))


def evaluate_renderer(renderer, case: Case, refine=None) -> dict:
    """Render every target of ``case`` with ``renderer`` (a NolRenderer) and score the images
    ``render`` makes of them (uint8, holes inpainted, the restorer when it runs one; ``refine``
    overrides the renderer's per-target refinement). Returns {psnr, ssim (means), per_target
    [(psnr, ssim)], coverage, seconds_per_image, refine_loss (mean before/after), results
    [RenderResult], images [(H, W, 3) uint8]}."""
    per, cov, rl = [], [], []
    t0 = time.perf_counter()
    outs, images = [], []
    for T, intr, gt, gm in zip(case.T_targets, case.intr_targets, case.gt_rgb, case.gt_mask):
        res = renderer.render_detailed(T[None], intr, refine=refine, cues=renderer.wants_cues)
        img = renderer.finish(res)[0]
        per.append(score(img.astype(np.float32) / 255, gt, gm))
        cov.append(float(res.coverage[0]))
        rl.append(res.refine_loss[0])
        outs.append(res)
        images.append(img)
    dt = (time.perf_counter() - t0) / len(case.T_targets)
    p = np.array(per)
    return {"psnr": float(p[:, 0].mean()), "ssim": float(p[:, 1].mean()), "per_target": per,
            "coverage": float(np.mean(cov)), "seconds_per_image": dt,
            "refine_loss": np.nanmean(np.array(rl), 0).tolist() if np.isfinite(rl).any()
            else [float("nan")] * 2, "results": outs, "images": images}


def choose_default_method(results: dict, candidates: tuple[str, ...] = ("nol", "fit"),
                          baseline: str = "ibr_angle", refinement: str = "object") -> dict:
    """The rule that decides LearnObject's default renderer ("auto"), applied to a
    ``bench/bench_nol.py`` results dict: the candidate with the highest masked PSNR, averaged
    over every evaluated object and source-pose noise level with ``refinement`` (the setting
    LearnObject's render stage uses), wins if that beats ``baseline``'s; else the baseline (a
    tie keeps it). A candidate the results never evaluated is not in the running; one missing
    for some object or level is an error. Returns {default_method, rule, mean_psnr {method:
    dB}, per_level {level: {method: dB}}, objects}."""
    objs = results.get("objects") or {}
    if not objs:
        raise ValueError("results hold no evaluated objects: run bench/bench_nol.py first")
    levels = list(next(iter(objs.values())).keys())
    methods = [m for m in candidates if any(m in objs[o][lv] for o in objs for lv in objs[o])]
    methods.append(baseline)
    per_level: dict = {}
    for lv in levels:
        per_level[lv] = {}
        for m in methods:
            v = [objs[o][lv][m][refinement][0] for o in objs
                 if m in objs[o].get(lv, {}) and refinement in objs[o][lv][m]]
            if len(v) != len(objs):
                raise ValueError(f"method '{m}' has no '{refinement}' score for every object "
                                 f"at {lv}: evaluate it for every object (nol: with a "
                                 "checkpoint)")
            per_level[lv][m] = float(np.mean(v))
    mean = {m: float(np.mean([per_level[lv][m] for lv in levels])) for m in methods}
    best = max(methods[:-1], key=lambda m: mean[m], default=baseline)
    return {"default_method": best if mean[best] > mean[baseline] else baseline,
            "rule": f"the best of {', '.join(methods[:-1]) or 'none'} by mean masked PSNR "
                    f"({refinement} refinement, all objects and noise levels) if it beats "
                    f"{baseline}",
            "mean_psnr": mean, "per_level": per_level, "objects": sorted(objs)}


# --------------------------------------------------------------------------- real textures
@dataclass
class SceneCase:
    """A real textured object standing in one of the synthetic cluttered scenes, seen by a
    robot: frames (full Xtion images of the scene, ``n_sources`` of them, with the sensor's
    colour and depth artefacts), the true object poses in them, and target crops with the
    clean ground truth. mesh: untextured (what the renderer gets). rgb (N, H, W, 3) uint8,
    depth (N, H, W) float32 m (0 = no reading), T_co (N, 4, 4) true T_camera_object;
    gt_rgb (M, S, S, 3) float32 [0, 1], gt_mask (M, S, S) bool. sensor_gain (N, 3): each
    frame's colour gain in the sensor model (auto exposure x white balance; the truth is at
    1), which no renderer is told: the benchmark's diagnostic of what that drift costs."""

    name: str
    mesh: Mesh
    intr: Intrinsics
    rgb: np.ndarray
    depth: np.ndarray
    T_co: np.ndarray
    T_targets: np.ndarray
    intr_targets: list[Intrinsics]
    gt_rgb: np.ndarray
    gt_mask: np.ndarray
    sensor_gain: np.ndarray


def _supersampled(scene, meshes, intr: Intrinsics, T_world_camera: np.ndarray, light_world,
                  ss: int = 2) -> np.ndarray:
    """Shaded colour (H, W, 3) float32 rendered at ss x the resolution and area-averaged (a
    camera integrates over its pixels)."""
    hi = intr.scaled(ss)
    res = scene.render(hi, T_world_camera, near=0.05, far=12.0)
    l_cam = np.asarray(T_world_camera)[:3, :3].T @ light_world
    col = shade(res, meshes, light_dir_cam=tuple(l_cam), ambient=0.55, diffuse=0.45)
    return cv2.resize(col, (intr.width, intr.height), interpolation=cv2.INTER_AREA)


def object_truth(scene, meshes, intr: Intrinsics, T_world_camera: np.ndarray, light_world,
                 ss: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The truth a renderer is scored against, of an object alone in ``scene``: (rgb (H, W, 3)
    float32, silhouette (H, W) bool). Each silhouette pixel is the shaded colour averaged over
    the part of the pixel the object covers (rendered at ``ss`` x; a camera integrates over
    its pixels), NOT darkened by the empty background at the silhouette's edge: renderers
    return the object's colour and a silhouette, and whoever composites the render onto a
    background brings the alpha (recognition.augment.soft_alpha). 0 off the silhouette."""
    hi = intr.scaled(ss)
    res_hi = scene.render(hi, T_world_camera, near=0.05, far=12.0)
    l_cam = np.asarray(T_world_camera)[:3, :3].T @ light_world
    size = (intr.width, intr.height)
    col = cv2.resize(shade(res_hi, meshes, light_dir_cam=tuple(l_cam), ambient=0.55,
                           diffuse=0.45), size, interpolation=cv2.INTER_AREA)
    cov = cv2.resize(res_hi.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    res = scene.render(intr, T_world_camera, near=0.05, far=12.0)
    point = shade(res, meshes, light_dir_cam=tuple(l_cam), ambient=0.55, diffuse=0.45)
    rgb = np.where(cov[..., None] > 1e-6, col / np.maximum(cov, 1e-6)[..., None], point)
    return np.where(res.mask[..., None], rgb, 0.0).astype(np.float32), res.mask


def make_scene_case(mesh_textured: Mesh, seed: int = 0, n_sources: int = 6,
                    n_targets: int = 6, crop: int = 256, name: str = "") -> SceneCase:
    """The object on the table of synthetic world ``seed`` (nol_ros.datasets.synthetic: room,
    table, clutter, two catalogue objects as neighbours that occlude it), ``n_sources`` robot
    views of the scene (a circle around the object at 25-50 deg elevation, 0.8-1.2 m, the
    Xtion model), and ``n_targets`` target crops (10-60 deg, 0.6-0.9 m) of the object alone
    under the scene's light, clean (deterministic by seed)."""
    rng = np.random.default_rng([seed, 41])
    neighbours = [int(x) for x in rng.choice([1, 2, 3, 4, 5, 9], 2, replace=False)]
    world = build_world(seed, neighbours, n_clutter=4)
    meshes, Ts = world.meshes_and_poses()
    on_table = [(o.T_world_object[:3, 3], 0.5 * float(np.linalg.norm(o.mesh.extent[:2])))
                for o in world.objects]
    on_table += [(T[:3, 3], 0.5 * float(np.linalg.norm(m.extent[:2])))
                 for m, T in world.static if m.name == "distractor"]
    foot = 0.5 * float(np.linalg.norm(mesh_textured.extent[:2]))
    p = np.zeros(2)
    for _ in range(500):  # a free spot near the table centre
        p = rng.uniform(-0.12, 0.12, 2)
        if all(np.linalg.norm(p - q[:2]) > foot + f + 0.01 for q, f in on_table):
            break
    zmin = float(mesh_textured.vertices[:, 2].min())
    T_wo = make_T(so3_exp([0, 0, rng.uniform(0, 2 * np.pi)]),
                  [p[0], p[1], world.table_top_z - zmin + 1e-4])
    meshes = [mesh_textured] + meshes
    Ts = [T_wo] + Ts
    scene = Scene(meshes, Ts)
    centre = T_wo[:3, 3]
    light = world.light_dir_world
    sensor = XtionSensor(SensorConfig(), np.random.default_rng([seed, 43]))
    intr = SMOT_XTION
    rays = intr.ray_directions()
    az0 = rng.uniform(0, 2 * np.pi)
    rgbs, depths, Tcs, gains = [], [], [], []
    k = 0
    while len(rgbs) < n_sources and k < 10 * n_sources:
        az = az0 + 2 * np.pi * len(rgbs) / n_sources + rng.normal(0, 0.15)
        el, d = np.radians(rng.uniform(25, 50)), rng.uniform(0.8, 1.2)
        eye = centre + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                     np.sin(el)])
        T_wc = look_at(eye, centre + rng.normal(0, 0.02, 3))
        k += 1
        res = scene.render(intr, T_wc, near=0.05, far=12.0)
        vis = res.mesh_id == 0
        if vis.sum() < 400:   # hidden behind a neighbour: the robot would not pick this view
            continue
        col = _supersampled(scene, meshes, intr, T_wc, light)
        l_cam = T_wc[:3, :3].T @ light
        glossy = (res.mesh_id >= 0) & (res.mesh_id <= len(world.objects))
        spec = np.where(glossy, specular_strength(res.normal_cam, rays, l_cam), 0.0)
        rgbs.append(sensor.rgb(col))
        gains.append(sensor.gain)
        depths.append(sensor.depth(res.depth.astype(np.float64), col.mean(2), spec))
        Tcs.append(invert_T(T_wc) @ T_wo)
    obj_scene = Scene([mesh_textured], [np.eye(4)])
    T_t, intrs, gts, gms = [], [], [], []
    for _ in range(n_targets):
        T = _view(rng.uniform(0, 2 * np.pi), rng.uniform(10, 60), rng.uniform(0.6, 0.9))
        ci = crop_intrinsics(mesh_textured, T, SMOT_XTION, crop, 128)
        # the object alone in its own frame, lit by the scene's light (in that frame)
        col, mask = object_truth(obj_scene, [mesh_textured], ci, invert_T(T),
                                 T_wo[:3, :3].T @ light)
        T_t.append(T)
        intrs.append(ci)
        gts.append(col)
        gms.append(mask)
    return SceneCase(name or mesh_textured.name, mesh_textured.untextured(), intr,
                     np.stack(rgbs), np.stack(depths), np.stack(Tcs), np.stack(T_t), intrs,
                     np.stack(gts).astype(np.float32), np.stack(gms), np.stack(gains))


def annotated_sources(case: SceneCase, trans_m: float, rot_deg: float, seed: int,
                      crop: int = 256, depth_tolerance_m: float = 0.05) -> list[SourceView]:
    """The case's frames as the self-annotation turns them into NOL sources: each pose moved
    by exactly (trans_m, rot_deg) in a random direction (object frame; an annotation error),
    the mask derived at that pose by the self-annotation's rule (the object's silhouette where
    the rendered depth agrees with the measured depth within ``depth_tolerance_m`` or there is
    no reading), and the NOL crop around it (rgb, mask, depth) at ``crop`` px."""
    rng = np.random.default_rng([seed, 47])
    scene = Scene([case.mesh], [np.eye(4)])
    out = []
    for rgb, depth, T in zip(case.rgb, case.depth, case.T_co):
        Ta = perturb_T(T, trans_m, np.radians(rot_deg), rng, "fixed") if trans_m or rot_deg \
            else T
        r = scene.render(case.intr, invert_T(Ta))
        mask = r.mask & ((depth <= 0) | (np.abs(r.depth - depth) <= depth_tolerance_m))
        if not mask.any():
            mask = r.mask
        box = square_crop_box(mask, min_half=128)
        K = case.intr.crop_resize(box[0], box[1], box[2], box[2], crop, crop).K
        out.append(SourceView(crop_image(rgb, box, crop, "linear").astype(np.float32) / 255.0,
                              crop_image(mask.astype(np.uint8), box, crop, "nearest") > 0, K,
                              Ta, crop_image(depth, box, crop, "nearest")))
    return out
