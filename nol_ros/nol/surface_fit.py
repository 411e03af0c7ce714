"""The object's surface colour fitted to all its source views at once (render method "fit").

A blend (IBR, NOL) resamples every source image at the target pixel and mixes the samples, so
each source's blur, its coarser pixels (sources farther away than the targets) and the
resampling all stay in the result. Here the surface colour is solved for instead: one colour
per vertex of the mesh subdivided finer than the sources' pixels, such that the surface
rendered into each source view -- each pixel the mean of ``supersample`` x ``supersample``
point samples over its area, then a Gaussian blur of ``blur_sigma_px``, the sensor's -- gives
that view's pixels inside its mask. The views see the surface at different distances and
sub-pixel offsets, so together they pin down detail no single view holds (multi-view
super-resolution with known geometry). A membrane term (``smoothness`` x the squared colour
difference along every mesh edge) fills what no view sees and keeps the system well posed. It
is made edge-preserving after the first solve (``edge_scale``): each edge is weighted by
1 / sqrt(1 + (d / edge_scale)^2) for the colour difference d the first solve gave it (the
Charbonnier penalty, one reweighted least-squares step), so the noise in flat regions is still
smoothed while a print's edges are not smeared across.
A pixel on the object's silhouette mixes the surface and the background; such pixels are fitted
too (with a lower weight, ``silhouette_weight``), their background taken from the view's own
pixels just outside the object: the foot of an object standing on a table is at the silhouette
in every view the robot takes from above, and would otherwise never be seen.
The normal equations are solved by conjugate gradients, a few seconds per object on 2 cores
(BENCHMARKS.md "NOL on real textures"). A camera's auto exposure and white balance drift
between views: each view's colour gain (3,) is then estimated by least squares against the
fitted surface, relative to the views' geometric mean, and the surface fitted again to the
views divided by it (``gain_rounds``). The colour is view-independent (Lambertian), as the
blends assume.

Shapes: vertices (V, 3) metres, faces (F, 3), colours (V, 3) float [0, 1]; images (H, W, 3)
float32 [0, 1], masks (H, W) bool.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp

from nol_ros.camera import Intrinsics
from nol_ros.errors import ConfigError, InputError
from nol_ros.geometry import invert_T
from nol_ros.mesh import Mesh
from nol_ros.nol.projection import SourceView
from nol_ros.rasterizer import Scene


@dataclass(frozen=True)
class SurfaceFitConfig:
    """How the surface colour is fitted (:func:`fit_surface`)."""

    blur_sigma_px: float = 0.5   # the sources' blur, Gaussian sigma in source pixels (the
    #                              Xtion-like colour camera: 0.3-0.8)
    supersample: int = 3         # point samples per source pixel side in the image model
    smoothness: float = 0.03     # membrane weight per mesh edge against the data term
    edge_scale: float = 0.02     # colour difference (of [0, 1]) at which an edge's membrane
    #                              weight starts to fall (edge-preserving); 0: the plain
    #                              quadratic membrane. With smoothness 0.03 against 0.02
    #                              quadratic: +0.17 / +0.05 / +0.20 / +0.03 dB at 0 / 5 mm /
    #                              1 / 2 cm on 7 real scans in 4 scene sets (BENCHMARKS.md
    #                              "NOL on real textures")
    iterations: int = 150        # conjugate-gradient iterations
    spacing: float = 0.5         # wanted vertex spacing, in the finest source pixel footprint
    max_faces: int = 1_000_000   # subdivision budget (memory ~ 0.3 KB per face)
    silhouette_weight: float = 0.3   # weight of the pixels on and next to the silhouette
    #                              (each the surface over the part the object covers plus the
    #                              background, seen just outside; 0: left out). A can's foot,
    #                              at the silhouette in every view, is otherwise never seen. On 7
    #                              real scans in 4 scene sets: +1.52 / +0.79 / +1.04 / +0.73 dB
    #                              at 0 / 5 mm / 1 / 2 cm (BENCHMARKS.md "NOL on real
    #                              textures", with the weights tried)
    silhouette_scale: float = 0.08   # after the first solve each silhouette pixel's weight is
    #                              divided by 1 + (r / silhouette_scale)^2, r its residual (a
    #                              silhouette off its pose, a wrong background); 0: kept
    gain_rounds: int = 1         # rounds of estimating each view's colour gain (auto exposure
    #                              and white balance drift between views), each a refit: on 7
    #                              real scans +0.11 / +0.06 / 0 / +0.01 dB at 0 / 5 mm / 1 / 2
    #                              cm for ~2 s more per fit (BENCHMARKS.md "NOL on real
    #                              textures")

    def __post_init__(self):
        if (self.blur_sigma_px < 0 or self.supersample < 1 or self.smoothness <= 0
                or self.iterations < 1 or self.spacing <= 0 or self.max_faces < 1
                or self.gain_rounds < 0 or self.edge_scale < 0
                or not 0 <= self.silhouette_weight <= 1 or self.silhouette_scale < 0):
            raise ConfigError("surface fit: blur_sigma_px >= 0, supersample >= 1, smoothness "
                              "> 0, edge_scale >= 0, iterations >= 1, spacing > 0, max_faces "
                              ">= 1, gain_rounds >= 0, 0 <= silhouette_weight <= 1 and "
                              "silhouette_scale >= 0")


def mesh_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3) -> (the E distinct edges (E, 2), lowest index first; for each face side -- all
    sides 0-1, then 1-2, then 2-0 -- the index of its edge (3 F,))."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges, inv = np.unique(np.sort(e, 1), axis=0, return_inverse=True)
    return edges, inv.reshape(-1)


def subdivide(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint subdivision: every triangle into four, the surface unchanged.
    (V, 3), (F, 3) -> (V + E, 3), (4 F, 3) with E the number of distinct edges."""
    edges, inv = mesh_edges(faces)
    m01, m12, m20 = (len(vertices) + inv).reshape(3, -1)
    a, b, c = faces.T
    out = np.concatenate([np.stack(t, 1) for t in
                          ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
    mid = 0.5 * (vertices[edges[:, 0]] + vertices[edges[:, 1]])
    return np.concatenate([vertices, mid]), out


def edge_laplacian(edges: np.ndarray, n: int, weights: np.ndarray | None = None
                   ) -> sp.csr_matrix:
    """(n, n) weighted graph Laplacian of edges (E, 2): c^T L c = sum over edges
    w_e (c_i - c_j)^2, weights (E,) (None: all 1)."""
    w = np.ones(len(edges)) if weights is None else np.asarray(weights, np.float64)
    adj = sp.coo_matrix((w, (edges[:, 0], edges[:, 1])), shape=(n, n))
    adj = (adj + adj.T).tocsr()
    return (sp.diags(np.asarray(adj.sum(1)).ravel()) - adj).tocsr()


def charbonnier_weights(colours: np.ndarray, edges: np.ndarray, scale: float) -> np.ndarray:
    """(E,) each edge's membrane weight 1 / sqrt(1 + (d / scale)^2), d the colour distance
    (norm over the channels) between its ends: the reweighted least-squares weight of the
    Charbonnier penalty. colours (V, C), edges (E, 2)."""
    d = np.linalg.norm(colours[edges[:, 0]] - colours[edges[:, 1]], axis=1)
    return 1.0 / np.sqrt(1.0 + (d / scale) ** 2)


def silhouette_pixels(rgb: np.ndarray, mask: np.ndarray, cover: np.ndarray,
                      interior: np.ndarray, reach: int, blur) -> tuple[np.ndarray, np.ndarray]:
    """A view's pixels on and next to the object's silhouette, as data for the fit.

    Such a pixel is the blurred mix of the surface over the part of it the object covers and
    the background over the rest. The background is not known behind the object; it is taken
    from the view's own pixels at least ``reach`` // 2 + 1 px off the object, filled inward
    (normalised Gaussian, sigma 1.5 px), and its share taken off the image, so that what is
    left is the blurred surface alone (the fit's image model). Left out: pixels near silhouette
    the mask excludes (an occluder in front, depth that disagrees).
    rgb (H, W, 3) float32 [0, 1]; mask (H, W) bool (the view's object mask); cover (H, W)
    float: the part of each pixel the object covers at the view's pose; interior (H, W) bool:
    the pixels already used; blur: the sensor's blur (H, W, C) -> (H, W, C).
    Returns (ring (H, W) bool: the silhouette pixels to use, rgb with the background's share
    taken off (H, W, 3) float32)."""
    k = np.ones((reach, reach), np.uint8)
    hidden = ((cover >= 0.5) & ~mask).astype(np.uint8)
    ring = (cover > 0) & (cv2.dilate(hidden, k) == 0) & ~interior
    far = (cv2.dilate((cover > 0).astype(np.uint8), k) == 0).astype(np.float32)
    num = cv2.GaussianBlur(rgb * far[..., None], (0, 0), 1.5)
    den = cv2.GaussianBlur(far, (0, 0), 1.5)[..., None]
    bg = np.where(far[..., None] > 0, rgb, num / np.maximum(den, 1e-6))
    back = blur(((1 - cover)[..., None] * bg).astype(np.float32))
    return ring, (rgb - back).astype(np.float32)


def subdivision_levels(mesh: Mesh, sources: list[SourceView], cfg: SurfaceFitConfig) -> int:
    """How many times to subdivide: until the mean edge is at most ``cfg.spacing`` x the finest
    source pixel footprint (metres per pixel at the object's centre), within ``max_faces``."""
    e = mesh.vertices[mesh.faces[:, [1, 2, 0]]] - mesh.vertices[mesh.faces]
    mean_edge = float(np.linalg.norm(e, axis=2).mean())
    centre = mesh.vertices.mean(0)
    foot = min(float((s.T_camera_object[:3, :3] @ centre + s.T_camera_object[:3, 3])[2])
               / float(s.K[0, 0]) for s in sources)
    want = cfg.spacing * max(foot, 1e-6)
    levels = max(0, math.ceil(math.log2(max(mean_edge / want, 1.0))))
    while levels > 0 and len(mesh.faces) * 4 ** levels > cfg.max_faces:
        levels -= 1
    return levels


def _sampling(scene: Scene, faces: np.ndarray, n: int, intr: Intrinsics,
              T_camera_object: np.ndarray, ss: int):
    """The image model's first half for one view: (H W, n) sparse, pixel = mean over its
    ss x ss point samples of the barycentric colour; and each pixel's covered fraction
    (H, W)."""
    r = scene.render(intr.scaled(ss), invert_T(T_camera_object), normals=False)
    H, W = intr.height, intr.width
    ys, xs = np.nonzero(r.face_id >= 0)
    pix = (ys // ss) * W + (xs // ss)
    M = sp.csr_matrix(((r.bary[ys, xs] / ss ** 2).ravel(),
                       (np.repeat(pix, 3), faces[r.face_id[ys, xs]].ravel())), shape=(H * W, n))
    return M, np.bincount(pix, minlength=H * W).reshape(H, W) / ss ** 2


@dataclass
class FittedSurface:
    """A mesh with a fitted colour per vertex. observed (V,) bool: some view's data touches
    the vertex (the others are filled by the membrane). levels: subdivisions of the input.
    residual: RMS colour error of the fitted surface against the source pixels it was fitted
    to, weighted as in the fit (how well one surface explains all the views at their poses)."""

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray
    observed: np.ndarray
    levels: int
    scene: Scene
    residual: float = float("nan")
    seconds: float = 0.0      # the fit's own time
    gains: np.ndarray | None = None   # (N, 3) each source's estimated colour gain, relative
    #                                   to their geometric mean (NaN: a source not used;
    #                                   None: gain_rounds 0)

    def _colour(self, intr: Intrinsics, T_camera_object: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Point-sampled: (the surface's colour at each pixel centre (H, W, 3) float32, 0 off
        it; the pixels it covers (H, W) bool)."""
        r = self.scene.render(intr, invert_T(T_camera_object), normals=False)
        hit = r.face_id >= 0
        rgb = np.zeros((intr.height, intr.width, 3), np.float32)
        rgb[hit] = (r.bary[hit][..., None] * self.colours[self.faces[r.face_id[hit]]]).sum(1)
        return rgb, hit

    def render(self, T_camera_object: np.ndarray, intr: Intrinsics, supersample: int = 2
               ) -> tuple[np.ndarray, np.ndarray]:
        """-> (rgb (H, W, 3) float32, silhouette (H, W) bool): each silhouette pixel the
        surface's mean colour over the part of the pixel the object covers (rendered at
        ``supersample`` x on the silhouette's box); 0 off the silhouette. The colour is not
        darkened at the silhouette's edge: an alpha is the compositor's business."""
        rgb, hit = self._colour(intr, T_camera_object)
        if not hit.any():
            return rgb, hit
        ys, xs = np.nonzero(hit)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        s = int(supersample)
        if s > 1:
            box = intr.crop_resize(x0, y0, x1 - x0, y1 - y0, s * (x1 - x0), s * (y1 - y0))
            col, hb = self._colour(box, T_camera_object)
            size = (int(x1 - x0), int(y1 - y0))
            col = cv2.resize(col, size, interpolation=cv2.INTER_AREA)
            cov = cv2.resize(hb.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            sub = hit[y0:y1, x0:x1] & (cov > 1e-6)
            view = rgb[y0:y1, x0:x1]
            view[sub] = col[sub] / cov[sub][:, None]
        return np.clip(rgb, 0, 1), hit


def fit_surface(mesh: Mesh, sources: list[SourceView],
                cfg: SurfaceFitConfig = SurfaceFitConfig()) -> FittedSurface:
    """Fit the surface colour of ``mesh`` (object frame, metres) to ``sources`` at their poses
    (see the module docstring). Source pixels used: inside the mask eroded by 1 px, wholly
    covered by the object, and far enough from its silhouette that the blur does not reach the
    background; and, with weight ``silhouette_weight``, those on and next to the silhouette
    (:func:`silhouette_pixels`)."""
    if not sources:
        raise InputError("no source views to fit the surface colour to; learn the object first")
    t0 = time.perf_counter()
    levels = subdivision_levels(mesh, sources, cfg)
    V, F = mesh.vertices, mesh.faces
    for _ in range(levels):
        V, F = subdivide(V, F)
    n, ss, sigma = len(V), cfg.supersample, cfg.blur_sigma_px
    scene = Scene([Mesh(V, F, name=mesh.name)], [np.eye(4)])
    reach = 2 * math.ceil(2 * sigma) + 1

    def blur(img: np.ndarray) -> np.ndarray:   # symmetric (zero border): its own transpose
        if sigma <= 0:
            return img
        return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)

    views, used, rings = [], [], []
    for i, s in enumerate(sources):
        S = s.size
        M, cover = _sampling(scene, F, n, Intrinsics.from_K(s.K, S, S), s.T_camera_object, ss)
        full = (cover >= 1 - 1e-6).astype(np.uint8)
        use = ((cv2.erode(s.mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & (
            cv2.erode(full, np.ones((reach, reach), np.uint8)) > 0)).astype(np.float32)
        rgb = s.rgb
        ring = np.zeros_like(use, dtype=bool)
        if cfg.silhouette_weight > 0:
            ring, rgb = silhouette_pixels(rgb, s.mask, cover, use > 0, reach, blur)
            use[ring] = cfg.silhouette_weight
        if not (use > 0).any():
            continue
        ys, xs = np.nonzero(cover > 0)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        rows = (np.arange(y0, y1)[:, None] * S + np.arange(x0, x1)[None]).ravel()
        Mb = M[rows].tocsr()
        views.append((Mb, Mb.T.tocsr(), (y1 - y0, x1 - x0), use[y0:y1, x0:x1],
                      rgb[y0:y1, x0:x1]))
        rings.append(ring[y0:y1, x0:x1])
        used.append(i)
    if not views:
        raise InputError("no source pixel sees the object's surface clearly (masks empty or "
                         "all edge); check the source masks and poses")

    def model(c: np.ndarray, Mb, hw) -> np.ndarray:   # the surface seen by one view
        return blur((Mb @ c).reshape(*hw, 3).astype(np.float32))

    def normal_op(c: np.ndarray) -> np.ndarray:      # A^T W A c + smoothness L c
        out = cfg.smoothness * (lap @ c) + 1e-6 * c
        for Mb, MbT, hw, use, _ in views:
            out += MbT @ blur(model(c, Mb, hw) * use[..., None]).reshape(-1, 3).astype(np.float64)
        return out

    def solve(rgbs: list[np.ndarray], x: np.ndarray | None) -> np.ndarray:
        rhs = np.zeros((n, 3))
        for (_, MbT, _, use, _), rgb in zip(views, rgbs):
            rhs += MbT @ blur((rgb * use[..., None]).astype(np.float32)).reshape(-1, 3)
        if x is None:   # start from each vertex's mean observation (the rest: the mean colour)
            x = np.where(observed[:, None], rhs / np.maximum(weight, 1e-6)[:, None],
                         rhs.sum(0) / max(weight.sum(), 1e-6))
        r = rhs - normal_op(x)   # conjugate gradients, per channel
        p, rr = r.copy(), (r * r).sum(0)
        for _ in range(cfg.iterations):
            q = normal_op(p)
            a = rr / np.maximum((p * q).sum(0), 1e-30)
            x = x + a * p
            r -= a * q
            rr_new = (r * r).sum(0)
            p = r + (rr_new / np.maximum(rr, 1e-30)) * p
            rr = rr_new
        return x

    edges = mesh_edges(F)[0]
    lap = edge_laplacian(edges, n)
    weight = sum(MbT @ blur(use.astype(np.float32)).reshape(-1) for _, MbT, _, use, _ in views)
    observed = weight > 1e-6
    rgbs = [v[4] for v in views]
    x = solve(rgbs, None)
    # from here on (the gain round refits with them): the membrane edge-preserving, and each
    # silhouette pixel's weight falling with its residual (Cauchy: a view whose silhouette
    # is not where its pose puts it, a background the fill got wrong, a blur off the model's)
    refit = False
    if cfg.edge_scale > 0:
        lap = edge_laplacian(edges, n, charbonnier_weights(x, edges, cfg.edge_scale))
        refit = True
    if cfg.silhouette_weight > 0 and cfg.silhouette_scale > 0:
        for (Mb, _, hw, use, rgb), ring in zip(views, rings):
            res = np.abs(model(x, Mb, hw) - rgb).mean(2)
            use[ring] = (cfg.silhouette_weight / (1 + (res / cfg.silhouette_scale) ** 2))[ring]
        refit = True
    if refit and cfg.gain_rounds == 0:
        x = solve(rgbs, x)
    gains = None
    for _ in range(cfg.gain_rounds):
        # each view's colour gain (exposure x white balance), least squares over its pixels,
        # relative to the views' geometric mean; the sources divided by it, then refitted
        g = np.stack([(m * rgb * use[..., None]).reshape(-1, 3).sum(0)
                      / np.maximum((m * m * use[..., None]).reshape(-1, 3).sum(0), 1e-9)
                      for (Mb, _, hw, use, rgb) in views
                      for m in [model(x, Mb, hw)]])
        g = np.clip(g, 0.5, 2.0)
        g /= np.exp(np.log(g).mean(0))
        rgbs = [v[4] / gi.astype(np.float32) for v, gi in zip(views, g)]
        x = solve(rgbs, x)
        gains = np.full((len(sources), 3), np.nan)
        gains[used] = g
    x = np.clip(x, 0, 1)
    err = sum(float((((model(x, Mb, hw) - rgb) ** 2).mean(2) * use).sum())
              for (Mb, _, hw, use, _), rgb in zip(views, rgbs))
    wsum = sum(float(v[3].sum()) for v in views)
    return FittedSurface(V, F, x.astype(np.float32), observed, levels, scene,
                         float(np.sqrt(err / wsum)), time.perf_counter() - t0, gains)
