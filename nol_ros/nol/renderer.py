"""Rendering a learnt object in any pose: NOL (paper Sec. 3.1, 3.3) and the IBR baselines.

    mesh, sources, _ = load_sources("ws/mug/objects/mug")
    r, info = prepare_renderer(mesh, sources, net)          # what LearnObject runs (see below)
    rgb, mask = r.render(T_camera_objects, intr)            # the ObjectRenderer protocol
    res = r.render_detailed(T_camera_objects, intr)         # + weights, coverage, refined poses

:func:`prepare_renderer` with an :class:`ObjectRendererConfig` is the ONE path from a learnt
object's sources to its renderer that LearnObject's render stage, RenderViews and the
benchmarks (bench/bench_nol_real.py, bench/bench_nol.py) run: build the renderer, refine the
source poses once per object (50 iterations, patience 8; the masks are re-derived at the refined
poses), fine-tune the network on the object's own views (method "nol"), and render without
per-target refinement (measured: after the per-object refinement it did not pay).

Per object, once: every source crop is resized to the network's crop size, its vertex
visibility / viewing angles and angle map are computed at its (self-annotated) pose, and it is
encoded (F_k, 17 channels for the paper) -- the cache. Per target pose: the mesh is rasterised
in the target; ``n_sources`` sources are chosen greedily for the vertices visible in the target
(views.selection.select_for_target); their cached maps are projected (P_k); the network blends
them (X_S, X_D = its colour channels) or, for the baselines, a fixed blend does: ``ibr_angle``
(visibility- and angle-weighted average, classic image-based rendering), ``ibr_mean`` (plain
average: the paper's w/o-LSTM ablation), ``ibr_best`` (per pixel the most frontal source),
``texture`` (texture mapping, the paper's other baseline: every face coloured from the one
source that sees it most frontally). The network runs only on the bounding box of the pixels
some source sees plus NET_CONTEXT_PX of context (the full-image weights within 1e-6).

Pose refinement of the sources (Sec. 3.3): X_S(t0) of the first prediction is the target; each
source pose T_k is moved to minimise E_k = mean over the shared mask |X_S(t0) - P_k(T_k)| (colour
and feature channels, angle excluded) by gradient descent through the projection only (the
cached F_k do not change, so no network runs inside the loop); the best pose of each source is
kept, iterations stop when no source improved for ``patience`` steps or after ``max_iters``
(<= 50); then the network predicts again with the refined poses. Two parameterisations:
``se3`` (T_k exp(xi), xi in se(3) in the object frame, Adam with separate step sizes for
rotation and translation; the default, see BENCHMARKS.md) and ``euler`` (the reference code's
heuristic: Euler-angle and translation deltas in the camera frame, plain gradient steps of
size ``euler_step`` with the translation step clipped to +-5 mm, the step x0.99 after an accepted
step, x0.9 and the step reverted when the loss rises).

Pixels of the target silhouette that no source sees (``mask`` False, ``coverage`` < 1) are
filled by inpainting in :meth:`render` so recognisers never learn black holes; render_detailed
reports them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as tf

from nol_ros.camera import Intrinsics
from nol_ros.enums import (
    ColourSource,
    RefineMethod,
    RefineTarget,
    RenderMethod,
    RenderStageMethod,
    parse_field,
)
from nol_ros.errors import ConfigError, FileFormatError, InputError
from nol_ros.geometry import invert_T
from nol_ros.mesh import Mesh, load_mesh
from nol_ros.nol.network import (
    EDGE_REACH_PX,
    RESTORE_CUES,
    NolNet,
    Restorer,
    default_device,
    load_checkpoint,
)
from nol_ros.nol.projection import (
    Projection,
    SourceView,
    _object_scene,
    blend_ibr,
    face_texture_weights,
    geometry_from,
    mask_at_pose,
    mask_edge_map,
    project_features,
    se3_exp_torch,
    source_geometry,
)
from nol_ros.nol.surface_fit import FittedSurface, SurfaceFitConfig, fit_surface
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.recognition.pnp import IcpConfig, refine_icp
from nol_ros.views.selection import select_for_target
from nol_ros.workspace import ObjectFiles

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "nol_cpu.pt"


@dataclass(frozen=True)
class RefineConfig:
    """Source-pose refinement. Steps: rotation in radians, translation in metres."""

    method: RefineMethod = RefineMethod.SE3
    max_iters: int = 25
    patience: int = 4
    lr_rot: float = 3e-3
    lr_trans: float = 1.5e-3
    euler_step: float = 1e-3
    euler_max_trans_step_m: float = 0.005
    blur_sigmas: tuple[float, ...] = (0.0,)   # coarse-to-fine: Gaussian sigma (px) per stage
    rounds: int = 1                           # refine -> predict again, repeated
    target: RefineTarget = RefineTarget.MOVING  # moving (consensus) | fixed (the paper's
    #                                           X_S(t0))
    maps: ColourSource = ColourSource.SOURCE  # refine a NOL renderer on the full-resolution
    #                                           "source" colour crops or the "network" maps

    def __post_init__(self):
        parse_field(self, "maps", ColourSource, "refine maps")
        parse_field(self, "target", RefineTarget)
        parse_field(self, "method", RefineMethod)
        if not 0 <= self.max_iters <= 50:
            raise ConfigError(f"refine max_iters {self.max_iters}: use 0..50 (paper: 25-50)")


@dataclass(frozen=True)
class RenderConfig:
    """method: nol | ibr_angle | ibr_mean | ibr_best. n_sources: sources per target (paper: 6
    at inference). batch: targets per network call. target_scale: render the target at
    intr.scaled(target_scale) and resize to intr (ignored when colours come from the
    full-resolution sources). colour_from: "source" (network weights applied to the
    full-resolution source colours) or "network" (X_D at the network's resolution).
    restore: method "nol" with a network that has a restorer (NolConfig.restore_filters):
    :meth:`NolRenderer.render` runs it on each image (off by default). refine: see
    RefineConfig. surface_fit: method "fit" (nol_ros.nol.surface_fit)."""

    method: RenderMethod = RenderMethod.NOL
    n_sources: int = 6
    batch: int = 4
    target_scale: float = 1.0
    colour_from: ColourSource = ColourSource.SOURCE
    angle_power: float = 4.0
    # off: the shipped restorer learnt to darken the silhouette's edge (its training truth was
    # rendered over an empty background); against the object's own colour it cost 0.35 dB on
    # real scans at exact poses and gained nothing at 1-2 cm (BENCHMARKS.md "A learnt restorer")
    restore: bool = False
    refine: RefineConfig = dataclasses.field(default_factory=RefineConfig)
    surface_fit: SurfaceFitConfig = dataclasses.field(default_factory=SurfaceFitConfig)

    def __post_init__(self):
        parse_field(self, "method", RenderMethod)
        parse_field(self, "colour_from", ColourSource, "colour_from")
        if self.n_sources < 1 or self.batch < 1 or not 0 < self.target_scale <= 1:
            raise ConfigError("RenderConfig: n_sources and batch must be >= 1 and "
                              "0 < target_scale <= 1")


@dataclass(frozen=True)
class FinetuneConfig:
    """Per-object self-supervised fine-tuning at learn time (:meth:`NolRenderer.finetune`):
    Adam steps on the leave-one-out prediction of the object's own source views."""

    steps: int = 80
    lr: float = 1e-3
    n_sources: int = 6
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.lr <= 0 or self.n_sources < 1:
            raise ConfigError("finetune: steps >= 0, lr > 0 and n_sources >= 1")


@dataclass(frozen=True)
class ObjectRendererConfig:
    """Everything done with a learnt object's sources before and while rendering it -- ONE
    configuration for LearnObject's render stage, RenderViews and the benchmarks that measure
    them (:func:`prepare_renderer`). render: the renderer (method, per-target refinement);
    refine_object: the per-object refinement of the source poses (once); finetune: the
    per-object fine-tuning of the network (method "nol" only, after the refinement)."""

    # per-target refinement off: after the per-object refinement it cost 0.14 dB (IBR) and
    # 0.36 dB (NOL) on a real scanned can at 1 cm / 3 deg for 4-15x the render time
    # (BENCHMARKS.md "NOL on real textures")
    render: RenderConfig = dataclasses.field(
        default_factory=lambda: RenderConfig(refine=RefineConfig(method="none")))
    refine_object: RefineConfig = dataclasses.field(
        default_factory=lambda: RefineConfig(max_iters=50, patience=8))
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    # method "fit": a second refinement, coarse to fine, whose poses compete with the given and
    # the refined ones by the fitted surface's residual (better_fitted); on 7 real scans at
    # 2 cm / 5 deg it rescued the scissors (19.3 -> 25.7 dB): +1.0 dB on average, no loss at
    # the other levels (BENCHMARKS.md "NOL on real textures"); None: off
    refine_alternative: RefineConfig | None = dataclasses.field(
        default_factory=lambda: RefineConfig(max_iters=50, patience=8,
                                             blur_sigmas=(2.0, 1.0, 0.0)))
    # method "fit": two more candidates with each view aligned to its own measured depth
    # (:func:`depth_aligned`): the refined poses so aligned, and poses aligned, refined from
    # there and aligned again. The photometric refinement pulls the views to a consistent
    # place but not to the true one (the tuna can's views end 5-9 mm off at every noise level);
    # the depth fixes where each view is, the refinement what the depth cannot see (a can's
    # turn about its axis). On 7 real scans the fit went 28.31 / 25.67 / 23.57 -> 29.31 /
    # 27.77 / 27.11 dB at 5 mm / 1 cm / 2 cm, the colour gains (SurfaceFitConfig.gain_rounds)
    # included (BENCHMARKS.md "NOL on real textures"). Only the mesh surface inside a view's
    # mask is matched (IcpConfig.model_in_mask); None: off
    depth_align: IcpConfig | None = dataclasses.field(
        default_factory=lambda: IcpConfig(model_in_mask=True))
    depth_align_min_fitness: float = 0.5   # a view's ICP fitness below this: it keeps its pose
    # method "fit": the candidates are ranked by a shorter fit (this many conjugate-gradient
    # iterations per solve; :func:`best_fitted`) and only the winner is fitted in full. The
    # colour gains stay in: without them the ranking lost 1.8 dB on a banana.
    # On 7 real scans (2 scene sets, 46 object-levels) it chose as the full fits did every time;
    # it saves ~6 s of 35 per object. None: every candidate fitted in full
    select_iterations: int | None = 50

    def __post_init__(self):
        if self.select_iterations is not None and self.select_iterations < 1:
            raise ConfigError("select_iterations: at least 1 conjugate-gradient iteration, or "
                              "None to fit every candidate in full")


class _Adam:
    """Adam (Kingma & Ba) written out for a few tensors: torch.optim's first use imports
    torch._dynamo, which costs seconds in a process that renders one object."""

    def __init__(self, params, lr: float, b1: float = 0.9, b2: float = 0.999):
        self.params, self.lr, self.b1, self.b2, self.t = list(params), lr, b1, b2, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if g is None:   # not in this step's graph (torch.optim skips it the same way)
                continue
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.sub_(self.lr * (m / c1) / ((v / c2).sqrt() + 1e-8))


@dataclass
class RenderResult:
    """B targets. rgb (B, H, W, 3) float32 [0, 1] (0 where no source sees the surface);
    mask (B, H, W) bool pixels with >= 1 valid projection; object_mask (B, H, W) bool target
    silhouette; coverage (B,) mask / object_mask pixels; weights (B, K, H, W) float32 per-pixel
    source weights (sum 1 on mask; K = 0 for method "fit", which blends no sources);
    source_ids (B, K) indices into the renderer's sources;
    T_sources (B, K, 4, 4) source poses used for the final prediction (refined or initial);
    refine_loss (B, 2) mean E_k before/after refinement (NaN without refinement);
    seconds: timing per stage (whole batch); cues (B, 2, H, W) float32 the blend's per-pixel
    cues (:data:`~nol_ros.nol.network.RESTORE_CUES`, :func:`blend_cues`) when asked for, else
    None."""

    rgb: np.ndarray
    mask: np.ndarray
    object_mask: np.ndarray
    coverage: np.ndarray
    weights: np.ndarray
    source_ids: np.ndarray
    T_sources: np.ndarray
    refine_loss: np.ndarray
    seconds: dict
    cues: np.ndarray | None = None


# Context the network sees around the pixels some source sees. Its receptive field is wider
# (one 3x3 neighbourhood per source step and ConvLSTM layer, plus the weight block: 26 px for
# the cpu preset at K=6), but pixels no source sees (P = 0) barely reach the weights: with 8 px
# the shipped model's weights equal those of a full-field run within 1e-6 (3 scanned objects x 8
# views; with 0 px they differ by ~1e-3), for 3-4x fewer network pixels in a 640 x 480 view
# (BENCHMARKS.md "NOL cost"). Fine-tuning sees the same context as rendering.
NET_CONTEXT_PX = 8


def net_box(fg: torch.Tensor, context_px: int = NET_CONTEXT_PX) -> tuple[slice, slice]:
    """fg (H, W) bool with at least one True pixel -> (rows, cols) slices of its bounding box
    grown by ``context_px`` on every side, clipped to the image."""
    H, W = fg.shape
    ys = torch.nonzero(fg.any(1)).flatten()
    xs = torch.nonzero(fg.any(0)).flatten()
    return (slice(max(int(ys[0]) - context_px, 0), min(int(ys[-1]) + context_px + 1, H)),
            slice(max(int(xs[0]) - context_px, 0), min(int(xs[-1]) + context_px + 1, W)))


def restore_image(restorer: Restorer, rgb: np.ndarray, mask: np.ndarray,
                  cues: np.ndarray | None = None) -> np.ndarray:
    """One rendered image through the restorer: rgb (H, W, 3) uint8, mask (H, W) bool, cues
    (2, H, W) float (:attr:`RenderResult.cues`; for a restorer built with cues) -> (H, W, 3)
    uint8, computed on the mask's box plus the restorer's receptive field (equal to the whole
    image's: off the mask the render and the cues are 0, as the convolutions' zero
    padding)."""
    if not mask.any():
        return rgb
    dev = next(restorer.parameters()).device
    ys, xs = net_box(torch.as_tensor(mask), restorer.reach)
    x = torch.as_tensor(rgb[ys, xs], device=dev).permute(2, 0, 1)[None].float() / 255
    m = torch.as_tensor(mask[ys, xs], device=dev)[None, None].float()
    c = None if cues is None else torch.as_tensor(
        np.ascontiguousarray(cues[:, ys, xs]), dtype=torch.float32, device=dev)[None]
    with torch.no_grad():
        y = restorer(x, m, c)[0].permute(1, 2, 0).cpu().numpy()
    out = rgb.copy()
    out[ys, xs] = np.where(mask[ys, xs, None], np.round(y * 255).astype(np.uint8), rgb[ys, xs])
    return out


def composite(res: RenderResult) -> np.ndarray:
    """A render's images as ``render`` returns them before the restorer -> (B, H, W, 3) uint8:
    the colours rounded, silhouette pixels no source sees inpainted from their surroundings,
    0 off the silhouette."""
    out = np.clip(np.round(res.rgb * 255), 0, 255).astype(np.uint8)
    for b in range(len(out)):
        holes = res.object_mask[b] & ~res.mask[b]
        if holes.any() and res.mask[b].any():
            out[b] = cv2.inpaint(out[b], holes.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        out[b][~res.object_mask[b]] = 0
    return out


def blend_cues(colour: torch.Tensor, edge: torch.Tensor, w: torch.Tensor,
               blended: torch.Tensor) -> torch.Tensor:
    """The blend's per-pixel cues (:data:`~nol_ros.nol.network.RESTORE_CUES`): colour (K, 3, H,
    W) the sources' projected colours, edge (K, 1, H, W) their projected
    :func:`~nol_ros.nol.projection.mask_edge_map`, w (K, 1, H, W) the blend weights (sum 1
    where a source sees the pixel, else 0), blended (3, H, W) = sum_k w_k colour_k ->
    (2, H, W): the weighted RMS colour distance from the blend, and the weighted edge
    distance."""
    var = (w * ((colour - blended[None]) ** 2).mean(1, keepdim=True)).sum(0)
    return torch.cat([var.clamp(min=0).sqrt(), (w * edge).sum(0)], 0)


def _resize_source(src: SourceView, S: int) -> SourceView:
    """The source crop resized to S x S (area for colour, majority for the mask), K kept
    consistent."""
    s0 = src.size
    if s0 == S:
        return src
    rgb = cv2.resize(src.rgb, (S, S), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(src.mask.astype(np.float32), (S, S), interpolation=cv2.INTER_AREA) > 0.5
    K = Intrinsics.from_K(src.K, s0, s0).crop_resize(0, 0, s0, s0, S, S).K
    depth = None if src.depth is None else cv2.resize(
        np.asarray(src.depth, np.float32), (S, S), interpolation=cv2.INTER_NEAREST)
    return SourceView(rgb.astype(np.float32), mask, K, src.T_camera_object, depth)


class NolRenderer:
    """Renders one learnt object. mesh: untextured (metres); sources: the selected source views
    (any crop size); net: a NolNet (eval) for method "nol", None for the baselines.

    The network sees the sources resized to its crop size (128 px for the ``cpu`` preset) and
    predicts the blend weights at that resolution; with ``colour_from="source"`` (default)
    the output colours are the same weights (upsampled) applied to projections of the
    full-resolution source crops -- X_D = sum_k W_k P_k with P_k's colour channels sampled
    from the source image, as in the paper, only at the source's own resolution. The baselines
    always use the full-resolution sources."""

    def __init__(self, mesh: Mesh, sources: list[SourceView], net: NolNet | None = None,
                 config: RenderConfig = RenderConfig(), device: str | None = None):
        if not sources:
            raise InputError("no source views: learn the object first (LearnObject) so its "
                             "workspace holds selected views")
        if config.method == "nol" and net is None:
            raise InputError("method 'nol' needs a network (a checkpoint); or use an IBR "
                             "method")
        sizes = {s.size for s in sources}
        if len(sizes) != 1:
            raise InputError(f"source crops have different sizes {sorted(sizes)}; give crops "
                             "of one size (the workspace's views.json crop_size)")
        for i, s in enumerate(sources):
            if s.rgb.shape != (s.size, s.size, 3) or s.mask.shape != (s.size, s.size):
                raise InputError(f"source {i}: rgb {s.rgb.shape} / mask {s.mask.shape} are "
                                 "not square S x S (x 3) crops")
            if not np.all(np.isfinite(s.T_camera_object)):
                raise InputError(f"source {i} has a pose with NaN/inf; fix the self-annotation")
            if not s.mask.any():
                raise InputError(f"source {i} has an empty mask: the object is not visible in "
                                 "it; drop that view")
        self.mesh, self.cfg = mesh, config
        self.device = default_device(device) if net is None else net.device
        self.net = net.eval() if net is not None else None
        S = net.config.crop_size if net is not None else sources[0].size
        self.full = list(sources)
        self.sources = [_resize_source(s, S) for s in sources]
        self.hybrid = (net is not None and config.colour_from == "source"
                       and sources[0].size != S)
        self._scene = _object_scene(mesh)
        self._surface: FittedSurface | None = None   # method "fit", fitted at the first use
        self._surface_lock = threading.Lock()          # renders may come from several threads
        t0 = time.perf_counter()
        self._encode()
        self.encode_s = time.perf_counter() - t0

    def _encode(self) -> None:
        """(Re)compute visibility, angles and the cached maps of the sources at their poses."""
        def maps(srcs):
            geo = [source_geometry(self.mesh, s, scene=self._scene) for s in srcs]
            rgb = torch.as_tensor(np.stack([s.rgb for s in srcs]), dtype=torch.float32,
                                  device=self.device).permute(0, 3, 1, 2).contiguous()
            ang = torch.as_tensor(np.stack([g[2] for g in geo]), device=self.device)[:, None]
            return np.stack([g[0] for g in geo]), np.stack([g[1] for g in geo]), rgb, ang

        self.vis, self.cos, rgb, ang = maps(self.sources)
        with torch.no_grad():
            self.F = self.net.encode_sources(rgb, ang) if self.net is not None else \
                torch.cat([rgb, ang], 1)
        # the colour sources' edge maps (for the cues): the full-resolution crops in hybrid
        # mode, else the sources themselves (then the same size)
        edge = np.stack([mask_edge_map(s.mask, EDGE_REACH_PX)
                         for s in (self.full if self.hybrid else self.sources)])
        self.E_col = torch.as_tensor(edge, device=self.device)[:, None]
        if self.hybrid:
            self.vis_full, self.cos_full, rgb, ang = maps(self.full)
            self.CE_full = torch.cat([rgb, ang, self.E_col], 1)
            self.C_full = self.CE_full[:, :4]   # colour and angle, a view

    def _set_poses(self, T: np.ndarray) -> None:
        """Move the sources to the poses T (N, 4, 4): their masks follow (re-derived at the new
        pose by :func:`~nol_ros.nol.projection.mask_at_pose`, as the self-annotation derived
        them at the old one), then visibility and the cached maps are recomputed."""
        S = self.sources[0].size
        self.full = [dataclasses.replace(
            s, T_camera_object=T[i], mask=mask_at_pose(self.mesh, s, T[i], scene=self._scene))
            for i, s in enumerate(self.full)]
        self.sources = [_resize_source(s, S) for s in self.full]
        self._surface = None
        self._encode()

    def refine_sources(self, cfg: RefineConfig | None = None) -> dict:
        """Per-object refinement: every source view is an anchor (target) and all source poses
        are refined jointly for consistency in all of them -- a photometric bundle adjustment
        of the sources, done once per object so that any number of renders afterwards costs no
        refinement. The sources' poses, visibility and cached maps are updated in place.
        Returns {before, after (mean errors), seconds, iterations}."""
        cfg = cfg or self.cfg.refine
        if cfg.method == "none" or cfg.max_iters == 0 or len(self.sources) < 2:
            return {"before": float("nan"), "after": float("nan"), "seconds": 0.0}
        t0 = time.perf_counter()
        full = self.hybrid and cfg.maps == "source"
        srcs, F = (self.full, self.C_full) if full else (self.sources, self.F)
        S = srcs[0].size
        anchors = []
        for s in srcs:
            geoms, sel, _ = self._targets(s.T_camera_object[None], Intrinsics.from_K(s.K, S, S),
                                          full)
            with torch.no_grad():
                proj = project_features(geoms[0], F[sel[0]], append_angle=False)
                if full:
                    x_s, w = blend_ibr(proj, "angle", self.cfg.angle_power, return_weights=True)
                    x_s, w = torch.cat([x_s, (w * proj.P[:, 3:]).sum(0)], 0)[None], w[None]
                else:
                    x_s, w = self._blend([proj], geoms)
            anchors.append(Anchor(geoms[0], sel[0], w[0], x_s[0]))
        T0 = torch.as_tensor(np.stack([s.T_camera_object for s in self.sources]),
                             dtype=torch.float32, device=self.device)
        T, e0, e1 = refine_poses(anchors, F, T0, cfg)
        self._set_poses(T.cpu().numpy().astype(np.float64))
        return {"before": e0, "after": e1, "seconds": time.perf_counter() - t0}

    def finetune(self, cfg: FinetuneConfig) -> dict:
        """Per-object self-supervised fine-tuning of the network (method "nol" only): each
        source view in turn is the target, predicted from (up to ``n_sources`` of) the others
        at its own pose -- the leave-one-out prediction the refinement's consistency already
        rests on -- and the blending part of the network (ConvLSTM + weight block; the encoder
        stays frozen, so the cached maps stay valid) takes ``cfg.steps`` Adam steps on the L1
        error of X_D inside the target's mask. The network is a copy (a shared or shipped
        model is never changed); the tuned copy is kept only if its mean leave-one-out error
        is lower than before. Returns {steps, before, after, kept, seconds}."""
        out = {"steps": 0, "before": float("nan"), "after": float("nan"), "kept": False,
               "seconds": 0.0}
        if self.net is None or cfg.steps <= 0 or len(self.sources) < 2:
            return out
        t0 = time.perf_counter()
        S, N = self.sources[0].size, len(self.sources)
        samples = []
        with torch.no_grad():
            for j, s in enumerate(self.sources):
                others = np.array([i for i in range(N) if i != j])
                r = self._scene.render(Intrinsics.from_K(s.K, S, S),
                                       invert_T(s.T_camera_object))
                vt = np.zeros(len(self.mesh.vertices), bool)
                vt[self.mesh.faces[r.face_id[r.face_id >= 0]].reshape(-1)] = True
                if not vt.any():
                    continue
                ids = others[select_for_target(self.vis[others], vt,
                                               min(cfg.n_sources, len(others)))]
                g = geometry_from(self.mesh, [self.sources[i] for i in ids], r, self.vis[ids],
                                  self.cos[ids], self.device)
                proj = project_features(g, self.F[ids], append_angle=False)
                m = torch.as_tensor(s.mask & r.mask, device=self.device) & proj.valid.any(0)[0]
                if int(m.sum()) < 32:
                    continue
                tgt = torch.as_tensor(s.rgb, device=self.device).permute(2, 0, 1)
                ys, xs = net_box(m)
                samples.append((proj.P[None, :, :, ys, xs], proj.valid[None, :, :, ys, xs],
                                tgt[:, ys, xs], m[ys, xs]))
        if not samples:
            return out
        net = copy.deepcopy(self.net).eval()   # BatchNorm (encoder only) keeps its statistics
        tuned = list(net.lstm.parameters()) + list(net.weight_block.parameters())
        for p in net.parameters():
            p.requires_grad_(False)
        for p in tuned:
            p.requires_grad_(True)

        def loss_of(model, smp):
            P, valid, tgt, m = smp
            x = model(P, valid, decode=False)["x_s"][0, :3]
            return (x - tgt).abs().mean(0)[m].mean()

        with torch.no_grad():
            before = float(np.mean([float(loss_of(net, x)) for x in samples]))
        opt = _Adam(tuned, cfg.lr)
        order = np.random.default_rng(cfg.seed).permutation(
            np.resize(np.arange(len(samples)), cfg.steps))
        for k in order:
            loss = loss_of(net, samples[int(k)])
            # allow_unused: from ONE other view the ConvLSTM's recurrent weights see no
            # hidden state, and get no gradient
            grads = torch.autograd.grad(loss, tuned, allow_unused=True)
            opt.step(grads)
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            after = float(np.mean([float(loss_of(net, x)) for x in samples]))
        kept = after < before
        if kept:
            self.net = net
        out.update(steps=int(cfg.steps), before=before, after=after, kept=kept,
                   samples=len(samples), seconds=time.perf_counter() - t0)
        return out

    def fit_surface(self) -> dict:
        """Method "fit": fit the object's surface colour to the full-resolution sources at
        their current poses (``config.surface_fit``; done once, again after the poses move).
        Returns {levels, vertices, residual (RMS against the sources), observed, seconds (of
        the fit, whenever it ran), gains (each source's colour gain [r, g, b] relative to
        their geometric mean -- the camera's exposure and white balance drift -- None for a
        source not used; None without gain rounds)}."""
        f = self._fitted()
        gains = None if f.gains is None else [
            None if np.isnan(g).any() else [round(float(x), 4) for x in g] for g in f.gains]
        return {"levels": f.levels, "vertices": len(f.vertices), "residual": f.residual,
                "observed": float(f.observed.mean()), "seconds": f.seconds, "gains": gains}

    def _fitted(self) -> FittedSurface:
        with self._surface_lock:
            if self._surface is None:
                self._surface = fit_surface(self.mesh, self.full, self.cfg.surface_fit)
            return self._surface

    def _render_fitted(self, Ts: np.ndarray, intr: Intrinsics) -> RenderResult:
        """Method "fit": the fitted surface at the targets (no sources blended, no per-target
        refinement)."""
        t0 = time.perf_counter()
        surface = self._fitted()
        out = [surface.render(T, intr) for T in Ts]
        rgb, om = np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
        B, H, W = om.shape
        return RenderResult(rgb, om.copy(), om, np.ones(B, np.float32),
                            np.zeros((B, 0, H, W), np.float32), np.zeros((B, 0), np.int64),
                            np.zeros((B, 0, 4, 4)), np.full((B, 2), np.nan),
                            {"geometry": 0.0, "predict": time.perf_counter() - t0,
                             "refine": 0.0, "total": time.perf_counter() - t0})

    # -- the ObjectRenderer protocol --------------------------------------------------------------
    def render(self, T_camera_objects: np.ndarray, intr: Intrinsics
               ) -> tuple[np.ndarray, np.ndarray]:
        """T_camera_objects (B, 4, 4) -> (rgb (B, H, W, 3) uint8, silhouette (B, H, W) bool).
        Unseen silhouette pixels are inpainted from their surroundings; then the network's
        restorer, if it has one, corrects the colours (method "nol", ``config.restore``)."""
        res = self.render_detailed(T_camera_objects, intr, cues=self.wants_cues)
        return self.finish(res), res.object_mask

    @property
    def restorer(self) -> Restorer | None:
        """The restorer ``render`` runs: the network's, for method "nol" with
        ``config.restore``; else None."""
        return self.net.restorer if (self.net is not None and self.cfg.restore
                                     and self.cfg.method == "nol") else None

    @property
    def wants_cues(self) -> bool:
        """Whether :meth:`finish` needs the render's cues (``render_detailed(cues=True)``)."""
        return self.restorer is not None and self.restorer.cues > 0

    def finish(self, res: RenderResult) -> np.ndarray:
        """A :meth:`render_detailed` result as :meth:`render` returns it -> (B, H, W, 3) uint8:
        :func:`composite`, then the restorer (:attr:`restorer`; it needs ``res.cues`` when
        :attr:`wants_cues`)."""
        out, restorer = composite(res), self.restorer
        if restorer is not None:
            for b in range(len(out)):
                out[b] = restore_image(restorer, out[b], res.object_mask[b],
                                       None if res.cues is None else res.cues[b])
        return out

    # -- rendering --------------------------------------------------------------------------------
    def render_detailed(self, T_camera_objects: np.ndarray, intr: Intrinsics,
                        refine: RefineConfig | None = None, cues: bool = False
                        ) -> RenderResult:
        """Render B target poses (see the module docstring); refine overrides the config's;
        cues: also the blend's per-pixel cues (RenderResult.cues)."""
        Ts = np.asarray(T_camera_objects, dtype=np.float64).reshape(-1, 4, 4)
        if not isinstance(intr, Intrinsics):
            raise InputError(f"intr must be nol_ros.camera.Intrinsics, got {type(intr).__name__}")
        if not np.all(np.isfinite(Ts)):
            raise InputError("a target pose contains NaN/inf")
        rcfg = self.cfg.refine if refine is None else refine
        parts = [self._render_batch(Ts[i:i + self.cfg.batch], intr, rcfg, cues)
                 for i in range(0, len(Ts), self.cfg.batch)]
        cat = {f.name: np.concatenate([getattr(p, f.name) for p in parts])
               for f in dataclasses.fields(RenderResult)
               if f.name != "seconds" and getattr(parts[0], f.name) is not None}
        secs = {k: sum(p.seconds.get(k, 0.0) for p in parts) for k in parts[0].seconds}
        return RenderResult(**cat, seconds=secs)

    def _targets(self, Ts: np.ndarray, intr: Intrinsics, full: bool = False):
        """Rasterise the targets and choose their sources; full: geometry of the
        full-resolution sources (hybrid mode) instead of the network-size ones."""
        srcs = self.full if full else self.sources
        vis, cos = (self.vis_full, self.cos_full) if full else (self.vis, self.cos)
        K = min(self.cfg.n_sources, len(srcs))
        geoms, sel, rasters = [], [], []
        for T in Ts:
            r = self._scene.render(intr, invert_T(T))
            vt = np.zeros(len(self.mesh.vertices), bool)
            fid = r.face_id[r.face_id >= 0]
            vt[self.mesh.faces[fid].reshape(-1)] = True
            ids = select_for_target(vis, vt, K) if vt.any() else list(range(K))
            geoms.append(geometry_from(self.mesh, [srcs[i] for i in ids], r, vis[ids],
                                       cos[ids], self.device))
            sel.append(ids)
            rasters.append(r)
        return geoms, np.array(sel), rasters

    def _blend(self, projs, geoms=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (x_s (B, C, H, W), weights (B, K, 1, H, W)). geoms: the projections'
        geometries (needed by "texture")."""
        if self.cfg.method == "nol":
            outs = [self._net_blend(p) for p in projs]
            return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])
        xs, ws = [], []
        for b, p in enumerate(projs):
            if self.cfg.method == "texture":
                if geoms is None:
                    raise InputError("texture blending needs the projection geometry")
                w = face_texture_weights(geoms[b], p)
            else:
                # method "fit" refines its sources with the angle-weighted blend
                mode = "angle" if self.cfg.method == "fit" else self.cfg.method.split("_", 1)[1]
                _, w = blend_ibr(p, mode, self.cfg.angle_power, return_weights=True)
            xs.append((p.P * w).sum(0))
            ws.append(w)
        return torch.stack(xs), torch.stack(ws)

    def _net_blend(self, p) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on one projection (K, C, H, W), run only on the box of the pixels some
        source sees plus NET_CONTEXT_PX: the object fills a small part of a 640 x 480 view.
        -> (x_s (C, H, W), weights (K, 1, H, W), 0 outside the box)."""
        K, C, H, W = p.P.shape
        x_s, w = p.P.new_zeros(C, H, W), p.P.new_zeros(K, 1, H, W)
        fg = p.valid.any(0)[0]
        if not bool(fg.any()):
            return x_s, w
        ys, xs = net_box(fg)
        out = self.net(p.P[None, :, :, ys, xs], p.valid[None, :, :, ys, xs], decode=False)
        x_s[:, ys, xs] = out["x_s"][0]
        w[:, :, ys, xs] = out["weights"][0]
        return x_s, w

    def _render_batch(self, Ts: np.ndarray, intr: Intrinsics, rcfg: RefineConfig,
                      cues: bool = False) -> RenderResult:
        if self.cfg.method == "fit":
            return self._render_fitted(Ts, intr)
        t0 = time.perf_counter()
        if self.hybrid:  # network at the source-pixel footprint of its own crops
            scale = self.sources[0].size / self.full[0].size
        else:
            scale = self.cfg.target_scale
        rintr = intr if scale == 1 else intr.scaled(scale)
        geoms, sel, rasters = self._targets(Ts, rintr)
        t1 = time.perf_counter()
        B = len(Ts)
        with torch.no_grad():
            projs = [project_features(g, self.F[ids], append_angle=False)
                     for g, ids in zip(geoms, sel)]
            x_s, w = self._blend(projs, geoms)
        t2 = time.perf_counter()
        loss = np.full((B, 2), np.nan)
        T_used = np.stack([g.T_camera_object.cpu().numpy() for g in geoms]).astype(np.float64)
        if rcfg.method != "none" and rcfg.max_iters > 0:
            for r in range(max(1, rcfg.rounds)):
                for b in range(B):
                    T_new, l0, l1 = self._refine_target(geoms[b], sel[b], Ts[b], intr,
                                                        x_s[b], w[b], rcfg)
                    loss[b] = (l0 if r == 0 else loss[b, 0], l1)
                    geoms[b] = dataclasses.replace(geoms[b], T_camera_object=T_new)
                    T_used[b] = T_new.cpu().numpy()
                with torch.no_grad():
                    projs = [project_features(g, self.F[ids], append_angle=False)
                             for g, ids in zip(geoms, sel)]
                    x_s, w = self._blend(projs, geoms)
        t3 = time.perf_counter()
        # the cues at the prediction's resolution (the hybrid path makes its own)
        cue = None
        if cues and not self.hybrid:
            with torch.no_grad():
                cue = torch.stack([blend_cues(
                    p.P[:, :3], project_features(g, self.E_col[ids], append_angle=False).P,
                    w[b], x_s[b, :3]) for b, (p, g, ids) in enumerate(zip(projs, geoms, sel))])
        if rintr == intr:
            rgb = x_s[:, :3].clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            m = torch.stack([p.valid.any(0)[0] for p in projs]).cpu().numpy()
            om = np.stack([r.mask for r in rasters])
            wt = w[:, :, 0].cpu().numpy()
        else:
            rgb, m, om, wt, cue = self._upsample(Ts, intr, sel, T_used, x_s, w, cue, cues)
        rgb = rgb * m[..., None]
        if cue is not None:
            cue = (cue.cpu().numpy() * m[:, None]).astype(np.float32)
        cov = m.reshape(B, -1).sum(1) / np.maximum(om.reshape(B, -1).sum(1), 1)
        return RenderResult(rgb.astype(np.float32), m, om, cov.astype(np.float32),
                            wt.astype(np.float32), sel, T_used, loss,
                            {"geometry": t1 - t0, "predict": (t2 - t1) + (time.perf_counter()
                                                                          - t3),
                             "refine": t3 - t2, "total": time.perf_counter() - t0}, cue)

    def _refine_target(self, geom, ids, T_target, intr, x_s, w, rcfg: RefineConfig):
        """Per-target refinement (paper Sec. 3.3) of the sources ``ids`` of one target. In
        hybrid mode with maps "source" it runs on the full-resolution colour projections at
        ``intr``, with the network's first-prediction weights (upsampled) defining X_S(t0)."""
        if not (self.hybrid and rcfg.maps == "source"):
            a = Anchor(geom, np.arange(len(ids)), w.detach(), x_s.detach())
            return refine_poses([a], self.F[ids], geom.T_camera_object, rcfg)
        r = self._scene.render(intr, invert_T(T_target))
        srcs = [dataclasses.replace(self.full[i], T_camera_object=geom.T_camera_object[k]
                                    .cpu().numpy().astype(np.float64))
                for k, i in enumerate(ids)]
        g = geometry_from(self.mesh, srcs, r, self.vis_full[ids], self.cos_full[ids],
                          self.device)
        with torch.no_grad():
            p = project_features(g, self.C_full[ids], append_angle=False)
            wb = tf.interpolate(w.detach(), size=(intr.height, intr.width), mode="bilinear",
                                align_corners=False) * p.valid
            wb = wb / wb.sum(0, keepdim=True).clamp(min=1e-8)
            x0 = (wb * p.P).sum(0)
        return refine_poses([Anchor(g, np.arange(len(ids)), wb, x0)], self.C_full[ids],
                            geom.T_camera_object, rcfg)

    def _hybrid_colour(self, p, wb: torch.Tensor, cues: bool = False):
        """Full-resolution colours of the projection p (K, C, H, W) blended with the network's
        upsampled weights wb (K, 1, H, W), renormalised over the sources valid at full
        resolution; pixels only full resolution sees take the angle weights. The work is done
        on the box of the pixels some source sees. cues: p's last channel is the sources'
        edge map (CE_full). -> (colour (3, H, W), weights (K, 1, H, W), mask (H, W), cues
        (2, H, W) or None)."""
        m = p.valid.any(0)[0]
        col, out = p.P.new_zeros(3, *m.shape), torch.zeros_like(wb)
        cue = p.P.new_zeros(len(RESTORE_CUES), *m.shape) if cues else None
        if not bool(m.any()):
            return col, out, m, cue
        ys, xs = net_box(m, 0)
        P, valid = p.P[:, :, ys, xs], p.valid[:, :, ys, xs]
        w = wb[:, :, ys, xs] * valid
        den = w.sum(0, keepdim=True)
        w = w / den.clamp(min=1e-8)
        unseen = (den <= 1e-6) & valid.any(0, keepdim=True)
        if bool(unseen.any()):
            _, wa = blend_ibr(Projection(P, valid, m[ys, xs]), "angle", self.cfg.angle_power,
                              return_weights=True)
            w = torch.where(unseen, wa, w)
        col[:, ys, xs] = (w * P[:, :3]).sum(0)
        out[:, :, ys, xs] = w
        if cues:
            cue[:, ys, xs] = blend_cues(P[:, :3], P[:, -1:], w, col[:, ys, xs])
        return col, out, m, cue

    def _upsample(self, Ts, intr, sel, T_used, x_s, w, cue=None, cues: bool = False):
        """Output at ``intr`` from a prediction at a lower resolution: the weights are
        upsampled; colours come from the full-resolution sources (hybrid) or are upsampled,
        as are the cues ``cue`` (B, 2, h, w) of a non-hybrid prediction. cues: make the
        cues (hybrid: from the full-resolution projections). -> (rgb, mask, object mask,
        weights, cues (B, 2, H, W) tensor or None)."""
        H, W = intr.height, intr.width
        rgbs, ms, oms, wts, cus = [], [], [], [], []
        for b, T in enumerate(Ts):
            r = self._scene.render(intr, invert_T(T))
            wb = tf.interpolate(w[b], size=(H, W), mode="bilinear", align_corners=False)
            if self.hybrid:
                ids = sel[b]
                srcs = [dataclasses.replace(self.full[i], T_camera_object=T_used[b][k])
                        for k, i in enumerate(ids)]
                g = geometry_from(self.mesh, srcs, r, self.vis_full[ids], self.cos_full[ids],
                                  self.device)
                with torch.no_grad():
                    p = project_features(g, (self.CE_full if cues else self.C_full)[ids],
                                         append_angle=False)
                col, wb, m, c = self._hybrid_colour(p, wb, cues)
            else:
                col = tf.interpolate(x_s[b:b + 1, :3], size=(H, W), mode="bilinear",
                                     align_corners=False)[0]
                c = None if cue is None else tf.interpolate(
                    cue[b:b + 1], size=(H, W), mode="bilinear", align_corners=False)[0]
                m = torch.as_tensor(r.mask)
                wb = wb / wb.sum(0, keepdim=True).clamp(min=1e-8)
            rgbs.append(col.clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ms.append(m.cpu().numpy() & r.mask)
            oms.append(r.mask)
            wts.append(wb[:, 0].cpu().numpy())
            cus.append(c)
        return (np.stack(rgbs), np.stack(ms), np.stack(oms), np.stack(wts),
                torch.stack(cus) if cues else None)


# --------------------------------------------------------------------------- refinement
@dataclass
class Anchor:
    """One target view the source poses are refined in: geom (its ProjectionGeometry, poses of
    its sources), ids (K,) indices of its sources among all sources, w0 (K, 1, H, W) the
    blend weights of the first prediction, x0 (C, H, W) the first prediction X_S(t0)."""

    geom: object
    ids: np.ndarray
    w0: torch.Tensor
    x0: torch.Tensor
    valid0: torch.Tensor | None = None   # (K, H, W) pixels of each source at t0 (set by
    #                                      refine_poses)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) maps with sigma in pixels (identity for sigma <= 0)."""
    if sigma <= 0:
        return x
    r = int(np.ceil(2.5 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    C = x.shape[1]
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate"),
                                   k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate"),
                                      k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def _anchor_errors(a: Anchor, F: torch.Tensor, T: torch.Tensor, target: str, n_ch: int
                   ) -> torch.Tensor:
    """E_k (K,) of one anchor at source poses T (K, 4, 4): mean over the pixels valid in
    source k and seen at t0 of |X - P_k| over the first n_ch channels. X is the first
    prediction (target "fixed", the paper) or the blend of the current projections with the
    first prediction's weights, detached (target "moving")."""
    proj = project_features(dataclasses.replace(a.geom, T_camera_object=T), F,
                            append_angle=False)
    valid = proj.valid
    m0 = a.w0.sum(0)[0] > 0
    if target == "fixed":
        X = a.x0[None, :n_ch]
    else:
        w = a.w0 * valid
        w = w / w.sum(0, keepdim=True).clamp(min=1e-8)
        X = (w * proj.P).sum(0, keepdim=True)[:, :n_ch].detach()
    m = (valid[:, 0] & m0[None]).to(F.dtype)
    d = (proj.P[:, :n_ch] - X).abs().mean(1)
    # normalised by the pixels each source covered at t0, and every one of them it no longer
    # covers costs LOST_PIXEL_COST: moving a source out of view must not look like agreement
    m_ref = (a.valid0 & m0[None]) if a.valid0 is not None else m.bool()
    n_ref = m_ref.sum((1, 2)).to(F.dtype).clamp(min=1.0)
    lost = (m_ref & ~valid[:, 0]).sum((1, 2)).to(F.dtype)
    return ((d * m).sum((1, 2)) + LOST_PIXEL_COST * lost) / n_ref


LOST_PIXEL_COST = 0.25  # colour units (the error of a pixel that is badly wrong)


def _source_losses(anchors: list[Anchor], F: torch.Tensor, T_all: torch.Tensor, target: str,
                   n_ch: int) -> torch.Tensor:
    """Per source (N,): the sum of its E_k over the anchors that use it."""
    out = T_all.new_zeros(len(T_all), dtype=F.dtype)
    for a in anchors:
        ids = torch.as_tensor(a.ids, device=F.device)
        out = out.index_add(0, ids, _anchor_errors(a, F[ids], T_all[ids].to(F.dtype), target,
                                                   n_ch))
    return out


def refine_poses(anchors: list[Anchor], F: torch.Tensor, T0: torch.Tensor, cfg: RefineConfig
                 ) -> tuple[torch.Tensor, float, float]:
    """Refine the N source poses T0 (N, 4, 4) jointly in all anchors (see the module
    docstring); F (N, C, S, S) the cached source maps. Returns (T (N, 4, 4) float32, mean
    error of the used sources before and after, in the objective of ``cfg.target``)."""
    n_ch = F.shape[1] - 1  # colour + features; the angle channel is excluded
    T0 = T0.detach().to(torch.float64)
    used = np.unique(np.concatenate([a.ids for a in anchors]))
    with torch.no_grad():
        anchors = [dataclasses.replace(a, valid0=project_features(
            dataclasses.replace(a.geom, T_camera_object=T0[torch.as_tensor(a.ids)].to(F.dtype)),
            F[torch.as_tensor(a.ids)], append_angle=False).valid[:, 0]) for a in anchors]
    with torch.no_grad():
        e_start = _source_losses(anchors, F, T0, cfg.target, n_ch)[used].mean()
    T = T0
    for sigma, iters in _stages(cfg):
        Fb = _blur(F, sigma)
        anc = [dataclasses.replace(a, x0=_blur(a.x0[None], sigma)[0]) for a in anchors] \
            if sigma > 0 else anchors
        T = _refine_stage(anc, Fb, T, cfg, iters, n_ch)
    with torch.no_grad():
        e_end = _source_losses(anchors, F, T, cfg.target, n_ch)[used].mean()
    if e_end > e_start:  # never return poses that the objective finds worse
        return T0.float(), float(e_start), float(e_start)
    return T.float(), float(e_start), float(e_end)


def _stages(cfg: RefineConfig) -> list[tuple[float, int]]:
    sig = cfg.blur_sigmas or (0.0,)
    n = len(sig)
    return [(s, cfg.max_iters // n + (1 if i < cfg.max_iters % n else 0))
            for i, s in enumerate(sig)]


def _refine_stage(anchors: list[Anchor], F: torch.Tensor, T0: torch.Tensor, cfg: RefineConfig,
                  iters: int, n_ch: int) -> torch.Tensor:
    N = len(T0)
    if cfg.method == "se3":
        # Adam (Kingma & Ba) on xi = [v, w], written out: six numbers per source do not need
        # torch.optim, whose first use imports torch._dynamo (seconds)
        xi = torch.zeros(N, 6, dtype=torch.float64, requires_grad=True)
        lr = torch.tensor([cfg.lr_trans] * 3 + [cfg.lr_rot] * 3, dtype=torch.float64)
        m1 = torch.zeros(N, 6, dtype=torch.float64)
        m2 = torch.zeros(N, 6, dtype=torch.float64)
        b1, b2 = 0.9, 0.999
        best, stall = float("inf"), 0
        for it in range(1, iters + 1):
            e = _source_losses(anchors, F, T0 @ se3_exp_torch(xi), cfg.target, n_ch).sum()
            if float(e.detach()) < best * (1 - 1e-3):
                best, stall = float(e.detach()), 0
            else:
                stall += 1
                if stall >= cfg.patience:
                    break
            (g,) = torch.autograd.grad(e, xi)
            with torch.no_grad():
                m1.mul_(b1).add_((1 - b1) * g)
                m2.mul_(b2).add_((1 - b2) * g * g)
                step = lr * (m1 / (1 - b1 ** it)) / ((m2 / (1 - b2 ** it)).sqrt() + 1e-8)
                xi -= step
        return (T0 @ se3_exp_torch(xi)).detach()
    # "euler": the reference code's heuristic, per source (camera-frame deltas)
    ang = torch.zeros(N, 3, dtype=torch.float64)
    dt = torch.zeros(N, 3, dtype=torch.float64)
    step = torch.full((N,), cfg.euler_step, dtype=torch.float64)

    def pose(a, t):
        Td = torch.eye(4, dtype=torch.float64).repeat(N, 1, 1)
        Td[:, :3, :3] = _euler_R(a)
        Td[:, :3, 3] = t
        return Td @ T0

    with torch.no_grad():
        cur = _source_losses(anchors, F, T0, cfg.target, n_ch).to(torch.float64)
    for _ in range(iters):
        a = ang.clone().requires_grad_(True)
        t = dt.clone().requires_grad_(True)
        _source_losses(anchors, F, pose(a, t), cfg.target, n_ch).sum().backward()
        with torch.no_grad():
            na = ang - step[:, None] * a.grad
            nt = dt - (step[:, None] * t.grad).clamp(-cfg.euler_max_trans_step_m,
                                                     cfg.euler_max_trans_step_m)
            en = _source_losses(anchors, F, pose(na, nt), cfg.target, n_ch).to(torch.float64)
            ok = en < cur
            ang = torch.where(ok[:, None], na, ang)
            dt = torch.where(ok[:, None], nt, dt)
            cur = torch.where(ok, en, cur)
            step = torch.where(ok, step * 0.99, step * 0.9)
    return pose(ang, dt).detach()


def _euler_R(e: torch.Tensor) -> torch.Tensor:
    """(K, 3) xyz Euler angles -> (K, 3, 3) = Rz Ry Rx."""
    c, s = torch.cos(e), torch.sin(e)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def m(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    Rx = m([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    Ry = m([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    Rz = m([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return Rz @ Ry @ Rx


# --------------------------------------------------------------------------- loading
def load_sources(object_dir: str | os.PathLike) -> tuple[Mesh, list[SourceView], dict]:
    """A learnt object's folder (WORKSPACE/NAME/objects/NAME: mesh.ply, views.json, views/)
    -> (mesh, source views, views.json content)."""
    d = Path(object_dir)
    files = ObjectFiles(d)
    vj = files.views_json
    if not vj.is_file():
        raise FileFormatError(f"'{d}' holds no views.json: it is not a learnt object's folder "
                              "(WORKSPACE/NAME/objects/NAME), or learning it failed before "
                              "view selection")
    try:
        meta = json.loads(vj.read_text())
        views = meta["views"]
    except (json.JSONDecodeError, KeyError) as e:
        raise FileFormatError(f"{vj} is unreadable or has no 'views' ({e}); re-run "
                              "LearnObject") from e
    if not views:
        raise InputError(f"{vj} lists no source views: no frame saw the object")
    mesh = load_mesh(files.mesh)
    sources = []
    for v in views:
        f = int(v["frame"])
        rgb = cv2.imread(str(files.view(f, "rgb")), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(files.view(f, "mask")), cv2.IMREAD_GRAYSCALE)
        if rgb is None or mask is None:
            raise FileFormatError(f"source view {f} of '{d}': views/{f:06d}_rgb.png or "
                                  f"_mask.png is missing or unreadable")
        dp = files.view(f, "depth")
        depth = cv2.imread(str(dp), cv2.IMREAD_UNCHANGED) if dp.is_file() else None
        if depth is not None and depth.shape != mask.shape:
            raise FileFormatError(f"source view {f} of '{d}': views/{f:06d}_depth.png is "
                                  f"{depth.shape}, its mask {mask.shape}; re-run LearnObject")
        sources.append(SourceView(rgb[..., ::-1].astype(np.float32) / 255.0, mask > 127,
                                  np.asarray(v["K_crop"], dtype=np.float64),
                                  np.asarray(v["T_camera_object"], dtype=np.float64),
                                  None if depth is None else depth.astype(np.float32) / 1000.0))
    return mesh, sources, meta


def default_method() -> RenderMethod:
    """What "auto" renders with: the decision the model card (models/nol_cpu.json, written by
    bench/bench_nol.py with :func:`~nol_ros.nol.evaluate.choose_default_method`) records --
    "nol" (only when the shipped model is installed), "fit", or "ibr_angle" when there is no
    decision or it names neither: the project never silently prefers a renderer that
    measured worse."""
    meta = SHIPPED_MODEL.with_suffix(".json")
    if not meta.is_file():
        return RenderMethod.IBR_ANGLE
    try:
        chosen = json.loads(meta.read_text()).get("default_method")
    except (json.JSONDecodeError, OSError):
        return RenderMethod.IBR_ANGLE
    if chosen == "fit" or (chosen == "nol" and SHIPPED_MODEL.is_file()):
        return RenderMethod(chosen)
    return RenderMethod.IBR_ANGLE


def resolve_method(method: str, checkpoint: bool = False) -> RenderMethod:
    """The renderer method a learn request's method names (:class:`RenderStageMethod`):
    ``auto`` -> "nol" with an explicit ``checkpoint``, else :func:`default_method`; ``ibr`` ->
    ``ibr_angle``; a :class:`RenderMethod` name (also ``texture``) as it is."""
    if method in RenderMethod.names():
        return RenderMethod(method)
    m = RenderStageMethod.parse(method, "render method")
    if m == RenderStageMethod.AUTO:
        return RenderMethod.NOL if checkpoint else default_method()
    return RenderMethod.IBR_ANGLE  # RenderStageMethod.IBR: the one left


def load_object_renderer(object_dir: str | os.PathLike, method: str = RenderStageMethod.AUTO,
                         checkpoint: str | os.PathLike | None = None,
                         device: str | None = None, config: RenderConfig | None = None
                         ) -> NolRenderer:
    """The ObjectRenderer of a learnt object (folder WORKSPACE/NAME/objects/NAME). method:
    "auto" (:func:`default_method`), "nol" (``checkpoint``, default the shipped cpu model),
    "ibr" (= "ibr_angle"), "ibr_mean", "ibr_best". config overrides the defaults."""
    method = resolve_method(method, checkpoint is not None)
    cfg = dataclasses.replace(config or ObjectRendererConfig().render, method=method)
    mesh, sources, _ = load_sources(object_dir)
    net = None
    if method == "nol":
        net, _ = load_checkpoint(checkpoint or SHIPPED_MODEL, device)
    return NolRenderer(mesh, sources, net, cfg, device)


def best_fitted(renderers: dict[str, NolRenderer], select_iterations: int | None = None
                ) -> tuple[NolRenderer, dict, str]:
    """Of several "fit" renderers of one object's sources at different poses (refined, given,
    ...), the one whose fitted surface reproduces its sources best (the lowest
    ``FittedSurface.residual``; the first on a tie). With ``select_iterations`` the candidates
    are ranked by a shorter fit (that many conjugate-gradient iterations per solve) and only
    the winner is fitted in full. Returns (renderer, its fit_surface() info, its name)."""
    if select_iterations is not None and len(renderers) > 1:
        res = {k: fit_surface(r.mesh, r.full, dataclasses.replace(
                   r.cfg.surface_fit, iterations=select_iterations)).residual
               for k, r in renderers.items()}
        name = min(res, key=res.get)
        return renderers[name], renderers[name].fit_surface(), name
    fits = {k: r.fit_surface() for k, r in renderers.items()}
    name = min(fits, key=lambda k: fits[k]["residual"])
    return renderers[name], fits[name], name


def depth_aligned(mesh: Mesh, sources: list[SourceView],
                  cfg: ObjectRendererConfig = ObjectRendererConfig()) -> list[SourceView] | None:
    """The sources with each pose aligned to the view's own measured depth (ICP of the mesh,
    :func:`~nol_ros.recognition.pnp.refine_icp` with ``cfg.depth_align``, inside the view's
    mask) and the mask re-derived at the new pose (:func:`~nol_ros.nol.projection.mask_at_pose`).
    A view without depth, whose ICP fails, fits less than ``cfg.depth_align_min_fitness`` of its
    points or worse than its pose did keeps its pose and mask. ``IcpConfig.model_in_mask``: only
    the mesh surface inside the view's mask is matched (the mask leaves out what occludes the
    object). None if no view moved (or ``cfg.depth_align`` is None)."""
    if cfg.depth_align is None:
        return None
    out, moved = [], False
    scene = _object_scene(mesh)
    for s in sources:
        if s.depth is not None:
            S = s.size
            r = refine_icp(s.T_camera_object, mesh, np.asarray(s.depth, np.float32),
                           Intrinsics.from_K(s.K, S, S), s.mask, cfg.depth_align)
            if r.refined and r.fitness >= max(cfg.depth_align_min_fitness, r.start_fitness):
                T = r.T_camera_object
                s = dataclasses.replace(s, T_camera_object=T,
                                        mask=mask_at_pose(mesh, s, T, scene=scene))
                moved = True
        out.append(s)
    return out if moved else None


def prepare_renderer(mesh: Mesh, sources: list[SourceView], net: NolNet | None,
                     cfg: ObjectRendererConfig = ObjectRendererConfig(),
                     device: str | None = None,
                     progress: ProgressFn = noop_progress) -> tuple[NolRenderer, dict]:
    """The one path from a learnt object's sources to its renderer, as LearnObject's render
    stage, RenderViews and the benchmarks run it: build the renderer (``cfg.render``; ``net``
    is used for method "nol" only), refine the source poses once (``cfg.refine_object``; the
    masks follow), then fine-tune the network on the object (``cfg.finetune``, "nol" only) or
    fit the surface colour to the sources (method "fit").
    progress(stage, fraction, message) with stages "refine", "finetune" and "fit".
    For "fit", the surface is also fitted at the given poses, at those of a second,
    coarse-to-fine refinement (``cfg.refine_alternative``) and at poses aligned to the views'
    own depth (``cfg.depth_align``: the refined ones aligned; aligned, refined and aligned
    again), and the renderer whose surface explains its sources best is returned
    (:func:`best_fitted`; info "poses").
    Returns (renderer, {refine, finetune | fit, poses, seconds})."""
    t0 = time.perf_counter()
    r = NolRenderer(mesh, sources, net if cfg.render.method == "nol" else None, cfg.render,
                    device)
    info: dict = {"method": cfg.render.method, "sources": len(sources)}
    progress("refine", 0.0, f"refining {len(sources)} source poses")
    info["refine"] = r.refine_sources(cfg.refine_object)
    progress("refine", 1.0, f"source error {info['refine']['before']:.4f} -> "
                            f"{info['refine']['after']:.4f}")
    if cfg.render.method == "nol":
        progress("finetune", 0.0, f"fine-tuning the network on {len(sources)} views")
        info["finetune"] = r.finetune(cfg.finetune)
        progress("finetune", 1.0, f"leave-one-out error {info['finetune']['before']:.4f} -> "
                                  f"{info['finetune']['after']:.4f}")
    if cfg.render.method == "fit":
        progress("fit", 0.0, f"fitting the surface colour to {len(sources)} views")
        # the refinement's optimum (the consistency of blurred, drifting sources) can lie off
        # poses that were right, or short of the truth: keep the poses under which one surface
        # explains the views best (on 7 real scans the given poses won exactly where they were
        # exact, 29.11 -> 29.98 dB; BENCHMARKS.md "NOL on real textures")
        cands = {"refined": r}
        if any(not np.allclose(a.T_camera_object, b.T_camera_object)
               for a, b in zip(r.full, sources)):
            cands["given"] = NolRenderer(mesh, sources, None, cfg.render, device)
        if cfg.refine_alternative is not None:
            alt = NolRenderer(mesh, sources, None, cfg.render, device)
            info["refine_alternative"] = alt.refine_sources(cfg.refine_alternative)
            cands["coarse_to_fine"] = alt
        # the refined poses, each view then put where its own depth says
        if (a := depth_aligned(mesh, r.full, cfg)) is not None:
            cands["refined+depth"] = NolRenderer(mesh, a, None, cfg.render, device)
        # aligned to the depth first, refined from there, aligned again
        if (a := depth_aligned(mesh, sources, cfg)) is not None:
            dep = NolRenderer(mesh, a, None, cfg.render, device)
            info["refine_depth"] = dep.refine_sources(cfg.refine_object)
            cands["depth+refined+depth"] = NolRenderer(
                mesh, depth_aligned(mesh, dep.full, cfg) or dep.full, None, cfg.render, device)
        r, info["fit"], info["poses"] = best_fitted(cands, cfg.select_iterations)
        progress("fit", 1.0, f"{info['fit']['vertices']} vertices, "
                             f"{100 * info['fit']['observed']:.0f} % seen, "
                             f"residual {info['fit']['residual']:.4f}")
    info["seconds"] = time.perf_counter() - t0
    return r, info
