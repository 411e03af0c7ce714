"""Poses the geometry cannot tell apart, told apart by the object's learnt appearance.

A can turned about its axis, a bottle or a box turned half a turn: the depth image and ICP fit
all of them equally well; only the print differs. Three pure functions:

- :func:`bake_vertex_colors`: the object's appearance as vertex colours of its (subdivided)
  mesh, averaged over images with known poses -- the learnt training renders (NOL or a blend)
  or real frames;
- :func:`pose_hypotheses`: the turns about the model axes (through the bounding-box centre)
  under which the untextured surface nearly lies on itself, detected from the mesh;
- :func:`choose_by_appearance`: each turn of a pose rendered with those colours and compared
  with the image (normalised cross-correlation, so exposure and white balance do not matter);
  the best one and its score.

An object that looks the same turned (shape and print) scores every turn alike and keeps its
pose: a turn is taken only when it beats the pose given by ``margin``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import invert_T, make_T, so3_exp
from nol_ros.mesh import Mesh, sample_surface, sample_texture
from nol_ros.rasterizer import interpolate_vertex_attribute, mesh_scene, render_object
from nol_ros.recognition.poses import bbox_centre
from nol_ros.recognition.trainset import _read_mask, _read_rgb, scene_annotations


@dataclass
class AppearanceView:
    """One image of the object: rgb (H, W, 3) uint8; visible (H, W) bool, the object's visible
    pixels; K (3, 3); T_camera_object (4, 4) metres."""

    rgb: np.ndarray
    visible: np.ndarray
    K: np.ndarray
    T_camera_object: np.ndarray


def scene_views(scene_dir, obj_id: int, max_views: int = 60, min_visib: float = 0.6,
                min_px: int = 400) -> list[AppearanceView]:
    """Up to ``max_views`` images of ``obj_id`` in a BOP scene (a render set, or a real sequence
    with its annotated poses), spread evenly over the scene's annotations that show at least
    ``min_visib`` of the object and ``min_px`` pixels."""
    anns = scene_annotations(scene_dir, obj_id, min_visib, min_px)
    if not anns:
        raise InputError(f"no image of object {obj_id} in '{scene_dir}' shows {min_visib:.0%} of "
                         "it: nothing to learn its appearance from; render the object first")
    pick = np.unique(np.linspace(0, len(anns) - 1, min(max_views, len(anns))).round().astype(int))
    return [AppearanceView(_read_rgb(a.rgb_path()), _read_mask(a.mask_path(True)), a.K,
                           a.T_camera_object) for a in (anns[i] for i in pick)]


def subdivide(mesh: Mesh, min_vertices: int = 8000, max_rounds: int = 3) -> Mesh:
    """Midpoint subdivision (each round splits every triangle in 4) until the mesh has at least
    ``min_vertices``: vertex colours of a coarse catalogue mesh (~800 vertices) are too coarse
    for a label's print. Untextured copy; the surface is unchanged."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices),
                                  o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))
    rounds = 0
    while len(m.vertices) < min_vertices and rounds < max_rounds:
        m = m.subdivide_midpoint(number_of_iterations=1)
        rounds += 1
    return Mesh(np.asarray(m.vertices), np.asarray(m.triangles), name=mesh.name)


def bake_vertex_colors(mesh: Mesh, views: Iterable[AppearanceView], min_vertices: int = 8000,
                       min_cos: float = 0.3, sharpness: float = 8.0) -> tuple[Mesh, float]:
    """(the mesh subdivided to ``min_vertices`` with vertex colours in [0, 1], the fraction of
    its vertices seen). A vertex takes the mean colour of the views where it is visible (its
    depth agrees with the rasterised depth, it lies in the view's visible mask, and its normal
    faces the camera by at least ``min_cos``), weighted by that cosine to the power
    ``sharpness`` (the most frontal views dominate: averaging many slightly misaligned views
    blurred a label's print away); a vertex never seen takes the mean of the seen ones."""
    sub = subdivide(mesh, min_vertices)
    V, N = sub.vertices, sub.vertex_normals
    tol = max(0.002, 0.01 * mesh.diameter)
    acc = np.zeros((len(V), 3))
    wsum = np.zeros(len(V))
    for view in views:
        H, W = view.rgb.shape[:2]
        intr = Intrinsics.from_K(view.K, W, H)
        T = np.asarray(view.T_camera_object, np.float64)
        depth = render_object(sub, intr, T).depth
        Pc = V @ T[:3, :3].T + T[:3, 3]
        z = Pc[:, 2]
        ok = z > 1e-3
        u = np.full(len(V), -1, np.int64)
        v = np.full(len(V), -1, np.int64)
        uv = np.zeros((len(V), 2))
        uv[ok, 0] = intr.fx * Pc[ok, 0] / z[ok] + intr.cx   # integer coordinates are pixel
        uv[ok, 1] = intr.fy * Pc[ok, 1] / z[ok] + intr.cy   # centres
        u[ok], v[ok] = np.round(uv[ok, 0]).astype(np.int64), np.round(uv[ok, 1]).astype(np.int64)
        ok &= (u >= 0) & (u < W) & (v >= 0) & (v < H)
        cos = -np.einsum("ij,ij->i", N @ T[:3, :3].T, Pc / np.linalg.norm(Pc, axis=1,
                                                                          keepdims=True))
        idx = np.nonzero(ok)[0]
        uu, vv = u[idx], v[idx]
        keep = (np.abs(depth[vv, uu] - z[idx]) < tol) & view.visible[vv, uu] & (cos[idx] >=
                                                                               min_cos)
        idx, uu, vv = idx[keep], uu[keep], vv[keep]
        w = cos[idx] ** sharpness
        # bilinear, as a texture lookup: pixel x, y -> texture coordinates (v up)
        tex_uv = np.stack([(uv[idx, 0] + 0.5) / W, 1.0 - (uv[idx, 1] + 0.5) / H], 1)
        acc[idx] += w[:, None] * sample_texture(view.rgb, tex_uv)
        wsum[idx] += w
    seen = wsum > 0
    if not seen.any():
        raise InputError(f"no vertex of '{mesh.name}' is visible in the views given: cannot "
                         "learn its appearance (check the poses and masks)")
    col = np.zeros((len(V), 3))
    col[seen] = acc[seen] / wsum[seen, None]
    col[~seen] = col[seen].mean(0)
    sub.vertex_colors = col.astype(np.float32)
    return sub, float(seen.mean())


def _turn(axis: int, deg: float, centre: np.ndarray) -> np.ndarray:
    """T_object_object: a turn by ``deg`` about model axis ``axis`` through ``centre``."""
    w = np.zeros(3)
    w[axis] = np.radians(deg)
    R = so3_exp(w)
    return make_T(R, centre - R @ centre)


def turn_axes(hypotheses: list[np.ndarray],
              min_turns: int = 5) -> list[tuple[int, float, list[int]]]:
    """(model axis, smallest turn in deg, indices of the hypotheses that are turns about it,
    the identity included) for each axis that at least ``min_turns`` of the hypotheses turn
    about (proper turns, not half turns): a surface of revolution."""
    out = []
    for a in range(3):
        angles, idx = [], []
        for k, H in enumerate(hypotheses):
            R = H[:3, :3]
            if abs(R[a, a] - 1) < 1e-6:
                ang = float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))
                if 1.0 < ang < 179.0:
                    angles.append(ang)
                    idx.append(k)
                elif ang <= 1.0:
                    idx.append(k)
        if len(angles) >= min_turns:
            out.append((a, min(angles), idx))
    return out


def pose_hypotheses(mesh: Mesh, rel_tol: float = 0.02, step_deg: float = 30.0,
                    n_points: int = 600) -> list[np.ndarray]:
    """Turns H (4, 4), in the model frame, under which the untextured surface nearly lies on
    itself: candidates are turns about the model x, y and z axes through the bounding-box centre
    every ``step_deg``, and half turns about one axis followed by turns about another; one is
    kept when the 95th percentile of the distances from turned surface samples to the surface is
    below ``rel_tol`` of the diameter. The identity comes first. A pose T_camera_object and
    T_camera_object @ H then fit a depth image (nearly) alike."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d
    import open3d.core as o3c

    V = mesh.vertices
    centre = bbox_centre(V)
    P, _ = sample_surface(V, mesh.faces, n_points, np.random.default_rng(0))
    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3c.Tensor(V.astype(np.float32)), o3c.Tensor(mesh.faces.astype(np.uint32)))
    steps = np.arange(step_deg, 360.0 - 1e-6, step_deg)
    cands = [_turn(a, d, centre) for a in range(3) for d in steps]
    cands += [_turn(a, d, centre) @ _turn(b, 180.0, centre)
              for b in range(3) for a in range(3) if a != b for d in steps if abs(d - 180) > 1]
    out, seen = [np.eye(4)], {tuple(np.round(np.eye(4), 4).ravel())}
    tol = rel_tol * mesh.diameter
    for H in cands:
        key = tuple(np.round(H, 4).ravel() + 0.0)
        if key in seen:
            continue
        seen.add(key)
        Q = (P @ H[:3, :3].T + H[:3, 3]).astype(np.float32)
        d = sc.compute_distance(o3c.Tensor(Q)).numpy()
        if np.percentile(d, 95) < tol:
            out.append(H)
    return out


def _sphere_in_image(centre: np.ndarray, diameter: float, T_camera_object: np.ndarray,
                     intr: Intrinsics) -> tuple[np.ndarray, float, float, float] | None:
    """(the model point ``centre`` in the camera frame (3,), its pixel u, v, the radius in px
    of the sphere of ``diameter`` m about it) at pose T_camera_object; None when it is less
    than 5 cm in front of the camera."""
    c = T_camera_object[:3, :3] @ centre + T_camera_object[:3, 3]
    if c[2] <= 0.05:
        return None
    return (c, intr.fx * c[0] / c[2] + intr.cx, intr.fy * c[1] / c[2] + intr.cy,
            0.5 * diameter * intr.fx / c[2])


@dataclass
class AppearanceChoice:
    """index: the chosen hypothesis (0 = the pose given, or its own small turn); T_camera_object:
    the pose chosen; scores: every hypothesis's coarse normalised cross-correlation with the
    image (-1..1; nan where too few pixels compare); score: the chosen pose's fine one."""

    index: int
    T_camera_object: np.ndarray
    scores: np.ndarray
    score: float


def _masked_blur(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of img (h, w, C) float32 inside mask (h, w) bool, without the outside."""
    m = mask.astype(np.float32)
    num = cv2.GaussianBlur(img * m[..., None], (0, 0), sigma)
    return num / np.maximum(cv2.GaussianBlur(m, (0, 0), sigma), 1e-6)[..., None]


def _high_pass(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """img minus its masked blur: the print's detail, without the smooth shading that differs
    between the learnt appearance and the image (light, exposure)."""
    return img * mask[..., None] - _masked_blur(img, mask, sigma)


def ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over channels of the normalised cross-correlation of a (n, C) with each of b
    (S, n, C) -> (S,); channels without contrast are left out (0 when none has any)."""
    a = a - a.mean(0)
    b = b - b.mean(1, keepdims=True)
    num = np.einsum("nc,snc->sc", a, b)
    den = np.sqrt(np.einsum("nc,nc->c", a, a)[None] * np.einsum("snc,snc->sc", b, b))
    ok = den > 1e-9
    r = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    return np.where(ok.any(1), r.sum(1) / np.maximum(ok.sum(1), 1), 0.0)


def _shifted_high_passes(img: np.ndarray, mask: np.ndarray, sigma: float, shift_px: int
                         ) -> np.ndarray:
    """The high pass (:func:`_high_pass` inside ``mask``) of img (h, w, C) shifted by every
    (dx, dy) in {-shift_px, 0, shift_px}^2 (border pixels repeated) -> (9, h, w, C)."""
    h, w, C = img.shape
    k = shift_px
    pad = np.pad(img, ((k, k), (k, k), (0, 0)), mode="edge")
    offs = (-k, 0, k)
    stack = np.concatenate([pad[k - dy:k - dy + h, k - dx:k - dx + w]
                            for dy in offs for dx in offs], 2)           # (h, w, 9 C)
    return _high_pass(stack, mask, sigma).reshape(h, w, 9, C).transpose(2, 0, 1, 3)


def choose_by_appearance(rgb: np.ndarray, intr: Intrinsics, T_camera_object: np.ndarray,
                         appearance: Mesh, hypotheses: list[np.ndarray],
                         depth: np.ndarray | None = None, max_side: int = 80,
                         occlusion_m: float = 0.01, min_pixels: int = 40,
                         margin: float = 0.05, min_score: float = 0.3, blur_px: float = 0.7,
                         detail_px: float = 2.0, local_margin: float = 0.02, top: int = 3,
                         shift_px: int = 2) -> AppearanceChoice:
    """Render ``appearance`` (a mesh with vertex colours, :func:`bake_vertex_colors`) at
    T_camera_object @ H for every H of ``hypotheses`` (the first the identity) and compare each
    with ``rgb`` (H, W, 3) uint8 on the pixels it covers, at most ``max_side`` px across (the
    window is scaled down to that): both slightly blurred (``blur_px``), their detail finer
    than ``detail_px`` compared (the smooth shading differs between the learnt colours and the
    image, and a turn does not change it). With ``depth`` (H, W) float32 m, pixels where the
    image is more than ``occlusion_m`` in front of the render (something occludes the object)
    are left out. The hypotheses are compared on coarser detail first; the pose given and the
    ``top`` best are then turned by a third and a ninth of the step about any axis the object
    turns about (a surface of revolution) whose turns the print tells apart (their coarse
    scores spread by more than ``margin``) where the fine detail fits better, and the best of
    them kept (another than the pose given only when it beats it by ``margin``). The result is
    taken when its fine score beats the pose given by ``margin`` (by ``local_margin`` for the
    pose's own small turns) and is at least ``min_score`` (a poor fit everywhere -- the pose a
    centimetre off, the object mostly hidden -- tells nothing: measured, the learnt print
    scores 0.66-0.92 at the true pose); else the pose given. The fine comparison takes the best
    of the image shifted by up to ``shift_px`` (the pose's residual offset). The image's detail
    is taken once per level, inside the pixels the pose given covers (the turns compared fit
    the depth alike, so they cover nearly the same pixels), and each step's poses are rendered
    in one ray cast."""
    if appearance.vertex_colors is None:
        raise InputError("the appearance mesh has no vertex colours; bake them first "
                         "(bake_vertex_colors)")
    if not hypotheses:
        raise InputError("no hypotheses: give at least the identity")
    T0 = np.asarray(T_camera_object, np.float64)
    Ts = [T0 @ H for H in hypotheses]
    # the window: the object's projected bounding sphere, clipped to the image
    centre = bbox_centre(appearance.vertices)
    sphere = _sphere_in_image(centre, appearance.diameter, T0, intr)
    if sphere is None:
        nan = np.full(len(Ts), np.nan)
        return AppearanceChoice(0, T0, nan, float("nan"))
    _, uc, vc, r = sphere
    x0, y0 = max(0, int(uc - r)), max(0, int(vc - r))
    x1, y1 = min(intr.width, int(np.ceil(uc + r))), min(intr.height, int(np.ceil(vc + r)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        nan = np.full(len(Ts), np.nan)
        return AppearanceChoice(0, T0, nan, float("nan"))
    s = min(1.0, max_side / max(x1 - x0, y1 - y0))
    crop = rgb[y0:y1, x0:x1]
    dcrop = None if depth is None else np.ascontiguousarray(depth[y0:y1, x0:x1])

    def level(scale: float):
        """(window intrinsics, image, depth or None, min pixels) at ``scale`` of the crop."""
        w = max(1, int(round((x1 - x0) * scale)))
        h = max(1, int(round((y1 - y0) * scale)))
        sx, sy = w / (x1 - x0), h / (y1 - y0)     # integer coordinates are pixel centres
        win = Intrinsics(fx=intr.fx * sx, fy=intr.fy * sy, cx=(intr.cx - x0 + 0.5) * sx - 0.5,
                         cy=(intr.cy - y0 + 0.5) * sy - 0.5, width=w, height=h)
        im = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        if blur_px > 0:
            im = cv2.GaussianBlur(im, (0, 0), blur_px)
        d = None if dcrop is None else cv2.resize(dcrop, (w, h),
                                                  interpolation=cv2.INTER_NEAREST)
        return win, im, d, max(4, int(min_pixels * sx * sy / (s * s)))

    # fine: at most max_side px across; coarse: half that (the same blur and detail in its
    # pixels: twice as coarse), where a turn a few degrees off the true one still fits
    fine_level, coarse_level = level(s), level(s / 2)
    scene = mesh_scene(appearance)   # built once per appearance, not per detection

    def renders(Ts_: list[np.ndarray], coarse: bool) -> list:
        """The appearance rendered at every pose of Ts_, one ray cast for all."""
        win = (coarse_level if coarse else fine_level)[0]
        return scene.render_batch(win, [invert_T(T) for T in Ts_], normals=False)

    def pixels(res, coarse: bool) -> np.ndarray:
        """(h, w) bool: the render's pixels the image shows (nothing in front of them)."""
        obs_d = (coarse_level if coarse else fine_level)[2]
        sel = res.mask
        if obs_d is not None:
            sel &= ~((obs_d > 0) & (obs_d < res.depth - occlusion_m))
        return sel

    def reference(res, coarse: bool) -> tuple[np.ndarray, np.ndarray]:
        """The pose given's pixels in its render ``res`` and the image's detail inside them,
        shifted by up to shift_px at the fine level ((9 or 1, h, w, 3)): taken once per level,
        as the turns compared fit the depth alike and cover nearly the same pixels."""
        o = (coarse_level if coarse else fine_level)[1]
        sel = pixels(res, coarse)
        if shift_px and not coarse:
            return sel, _shifted_high_passes(o, sel, detail_px, shift_px)
        return sel, _high_pass(o, sel, detail_px)[None]

    def score(res, coarse: bool, ref: tuple[np.ndarray, np.ndarray]) -> float:
        """The score of one render against the level's :func:`reference` (see the
        docstring)."""
        min_px = (coarse_level if coarse else fine_level)[3]
        sel = pixels(res, coarse)
        sel0, obs_hp = ref
        inner = cv2.erode((sel & sel0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if inner.sum() < min_px:
            return float("nan")
        col = interpolate_vertex_attribute(res, [appearance], [appearance.vertex_colors])
        if blur_px > 0:
            col = _masked_blur(col, res.mask, blur_px)
        a = _high_pass(col, sel, detail_px)
        # the best of the image's shifts against the render (the pose's residual offset)
        return float(ncc(a[inner], obs_hp[:, inner]).max())

    # every hypothesis coarse; then the pose given and the best ``top`` of them, each turned by
    # a third, then a ninth of the step about the axes the object turns about, fine
    rs = renders(Ts, True)            # Ts[0]: the pose given
    ref = reference(rs[0], True)
    scores = np.array([score(r, True, ref) for r in rs])
    if np.isnan(scores).all():
        return AppearanceChoice(0, T0, scores, float("nan"))
    order = [int(i) for i in np.argsort(np.nan_to_num(-scores, nan=np.inf))[:top]]
    # a turn about an axis is tried only where the print tells the turns about it apart: the
    # coarse scores of the hypotheses turned about it spread by more than ``margin`` (a print
    # of bands about the axis scores all turns within a few hundredths, and a small turn would
    # be taken on the noise of the fine score alone)
    axes = [(a, step) for a, step, idx in turn_axes(hypotheses)
            if np.ptp(np.nan_to_num(scores[idx], nan=np.nanmin(scores))) > margin]
    # the candidates fine, then each turned by +-delta about every such axis, the turn kept
    # where it fits better (+delta first); every step's poses rendered in one ray cast
    cands = [0] + [i for i in order if i != 0]
    T_c = [Ts[i] for i in cands]
    rs = renders(T_c, False)
    ref = reference(rs[0], False)
    fines = [score(r, False, ref) for r in rs]
    fine0 = fines[0]
    live = [k for k in range(len(cands)) if not np.isnan(fines[k])]
    for axis, step in axes:
        for delta in (step / 3, step / 9):
            turns = [_turn(axis, sign * delta, centre) for sign in (1, -1)]
            poses = [T_c[k] @ G for k in live for G in turns]
            res = renders(poses, False)
            for j, k in enumerate(live):
                for Tn, rn in zip(poses[2 * j:2 * j + 2], res[2 * j:2 * j + 2]):
                    f = score(rn, False, ref)
                    if f > fines[k]:
                        T_c[k], fines[k] = Tn, f
                        break
    best, T_best, f_best = 0, T0, -np.inf
    for k in live:
        if fines[k] > f_best + (margin if cands[k] else 0.0):
            best, T_best, f_best = cands[k], T_c[k], fines[k]
    gain = margin if best else local_margin
    if f_best >= min_score and (np.isnan(fine0) or f_best > fine0 + gain):
        return AppearanceChoice(best, T_best, scores, float(f_best))
    return AppearanceChoice(0, T0, scores, float(fine0))


@dataclass
class RangeFit:
    """T_camera_object: the pose moved along the line of sight (the pose given when refused);
    scale: how much larger the image shows the object than the pose given rendered it (the
    range is divided by it; 1 when refused); score: the masked normalised cross-correlation of
    the print at the fit (-1..1, nan when nothing compared); refined: the pose was moved;
    reason: why not, when it was not."""

    T_camera_object: np.ndarray
    scale: float
    score: float
    refined: bool
    reason: str = ""


def _vertex(v) -> float:
    """The offset (-0.5..0.5) of the peak of the parabola through three equally spaced values
    from the middle one; 0 when there are not three or the middle one is no peak."""
    if len(v) != 3:
        return 0.0
    a, b, c = (float(x) for x in v)
    den = a - 2 * b + c
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0


def _scale_about(s: float, p: np.ndarray, q: np.ndarray | None = None) -> np.ndarray:
    """(2, 3) float32: image coordinates scaled by s about the point p (x, y), then moved so
    that p lands on q (default: p stays)."""
    q = p if q is None else q
    return np.array([[s, 0, q[0] - s * p[0]], [0, s, q[1] - s * p[1]]], np.float32)


def _render_grey(scene, appearance: Mesh, grey_v: np.ndarray, win: Intrinsics,
                 Ts: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The masks (h, w) bool and grey prints (h, w) float32 of ``appearance`` at every pose of
    Ts in the window ``win``, one ray cast for all, rays only inside the box of the poses'
    projected vertices."""
    V = appearance.vertices
    uv = np.concatenate([win.project(V @ T[:3, :3].T + T[:3, 3])[0] for T in Ts])
    x0, y0 = np.maximum(np.floor(np.nanmin(uv, 0)).astype(int) - 2, 0)
    x1 = min(int(np.ceil(np.nanmax(uv[:, 0]))) + 3, win.width)
    y1 = min(int(np.ceil(np.nanmax(uv[:, 1]))) + 3, win.height)
    masks = [np.zeros((win.height, win.width), bool) for _ in Ts]
    greys = [np.zeros((win.height, win.width), np.float32) for _ in Ts]
    if x1 <= x0 or y1 <= y0:
        return masks, greys
    sub = win.crop_resize(x0, y0, x1 - x0, y1 - y0, x1 - x0, y1 - y0)
    for rs, m, g in zip(scene.render_batch(sub, [invert_T(T) for T in Ts], normals=False),
                        masks, greys):
        m[y0:y1, x0:x1] = rs.mask
        g[y0:y1, x0:x1] = interpolate_vertex_attribute(rs, [appearance], [grey_v])[..., 0]
    return masks, greys


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """img (h, w) float32 sampled at the pixel coordinates x, y (any equal shapes; 0 outside),
    by cv2.remap in rows of at most 4096 samples (its maps must be narrower than 32767)."""
    n = x.size
    w = min(n, 4096)
    pad = -n % w
    mx = np.pad(x.ravel(), (0, pad), constant_values=-1.0).reshape(-1, w)
    my = np.pad(y.ravel(), (0, pad), constant_values=-1.0).reshape(-1, w)
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out.ravel()[:n].reshape(x.shape)


def _size_scores(shifted: np.ndarray, sels: list[np.ndarray], greys: list[np.ndarray],
                 moves: list[tuple[np.ndarray, np.ndarray, float]], ss: np.ndarray
                 ) -> np.ndarray:
    """The masked normalised cross-correlation (cv2.matchTemplate's TM_CCOEFF_NORMED) of every
    render (grey (h, w), compared on its pixels sel (h, w) bool), scaled by s0 s for every s of
    ss about its point p and moved to q (moves: (p, q, s0) in pixels (x, y)), with the image at
    every shift (``shifted``: (h, w, K, K) views of the image window, K = 2 shift + 1) ->
    (renders, S, K, K); -2 where either side has no contrast. All renders and shifts in one
    matrix product over the union of their pixels."""
    union = np.logical_or.reduce(sels)
    ys, xs = np.nonzero(union)
    K = shifted.shape[2]
    obs = shifted[ys, xs].reshape(len(ys), K * K)                           # (n, K K)
    M = np.stack([s[ys, xs] for s in sels]).astype(np.float32)              # (R, n)
    # the image's spread over each render's pixels at every shift (sums in float64: the
    # difference of two large sums)
    o64, M64 = obs.astype(np.float64), M.astype(np.float64)
    var = np.maximum(M64 @ o64 ** 2 - (M64 @ o64) ** 2 / M64.sum(1)[:, None], 0.0)  # (R, K K)
    tpl = []
    for g, (p, q, s0), m in zip(greys, moves, M):
        mx = (p[0] + (xs[None] - q[0]) / (s0 * ss[:, None])).astype(np.float32)
        my = (p[1] + (ys[None] - q[1]) / (s0 * ss[:, None])).astype(np.float32)
        t = _bilinear(g, mx, my)                                              # (S, n)
        t = (t - (t @ m / m.sum())[:, None]) * m                          # centred, masked
        tpl.append(t)
    tpl = np.stack(tpl)                                                     # (R, S, n)
    norm = np.linalg.norm(tpl, axis=2)                                      # (R, S)
    num = (tpl.reshape(-1, len(ys)) @ obs).reshape(len(sels), len(ss), K * K)
    den = norm[..., None] * np.sqrt(var)[:, None]
    cc = np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), -2.0)
    return cc.reshape(len(sels), len(ss), K, K)


def _turn_in_camera(T: np.ndarray, centre: np.ndarray, w_deg: np.ndarray) -> np.ndarray:
    """T_camera_object turned by the rotation vector ``w_deg`` (camera frame, degrees) about
    the model point ``centre``, which stays where it is."""
    R = so3_exp(np.radians(w_deg))
    c = T[:3, :3] @ centre + T[:3, 3]
    out = T.copy()
    out[:3, :3] = R @ T[:3, :3]
    out[:3, 3] = c - out[:3, :3] @ centre
    return out


def fit_range_by_appearance(rgb: np.ndarray, intr: Intrinsics, T_camera_object: np.ndarray,
                            appearance: Mesh,
                            scales: tuple[float, float, float] = (0.9, 1.1, 0.02),
                            shift_px: int = 4, rounds: int = 2, erode_px: int = 1,
                            min_pixels: int = 50, min_score: float = 0.3,
                            turn_deg: float = 6.0) -> RangeFit:
    """Move a colour-only pose along the line of sight to where the object's learnt print
    (``appearance``, :func:`bake_vertex_colors`) fits the image ``rgb`` (H, W, 3) uint8.

    A pose from the colour image alone (PnP on the pose network's coordinates) gets the
    object's distance wrong by a few per cent (median 2-6 % on the demo world's test sequence),
    while ADD(-S) tolerates 1-3 % (10 % of the diameter at about 1 m): what the colour image
    tells best is the object's size, and that is what this fits. The appearance is rendered at
    the pose (grey; blurring it and the image by 0.7 px, as the turn by the print does, biased
    the fit by up to 1 % towards a smaller size), scaled about its projected centre by every
    s of ``scales`` (start, stop, step: s > 1 = the object nearer by the factor s) and
    compared with the image at every shift up to ``shift_px`` (masked normalised
    cross-correlation, as cv2.matchTemplate's TM_CCOEFF_NORMED, on the same pixels for every
    s: the render's at the smallest s, eroded by ``erode_px``; leaving out the pixels the pose
    network sees as hidden measured 3.5 points less ADD(-S)). The best s and shift are each
    refined by a parabola through their neighbours; ``rounds`` - 1 more rounds search one step
    either side of the fit in quarter steps, with half the shifts, on the pixels of the render
    scaled and moved to the fit (the render is not cast again: a move of a few per cent along
    the line of sight changes the perspective by less than the steps). The object's centre
    then moves to the shifted point at the range divided by the size.

    The colour-only pose is also turned (5-15 deg in median), and a turned outline fits best
    at another size (a turned power drill's at the smallest). So the size is fitted for the
    pose turned by 0 and +-``turn_deg`` about the camera's x and y axes through the object's
    centre too (9 turns rendered in one ray cast, each through every round on its own pixels)
    and the turn that fits best wins; the rotation returned is the pose given's (the turn only
    helps to find the size). On three trainings' colour-only test poses this took ADD(-S) from
    37.6 to 48.0 % (BENCHMARKS.md); fitting the turns only about the size of the pose given,
    or on pixels all turns share, lost most of that. ``turn_deg`` 0: no turns.

    A turn is dropped when its best s is at an end of its range (the print then does not tell
    the size: measured, a pose turned by 10-20 deg scores best at the smallest size, its
    outline fitting inside the object's), when it scores below ``min_score`` (a print without
    contrast, a pose far off) or when fewer than ``min_pixels`` compare. The fit is refused,
    and the pose given kept, when no turn is left; the reason is the first turn's dropped (the
    pose given's, when it was). It is refused from the start when the object would be wider
    than the image (a pose a few centimetres from the camera, as PnP on a bad detection can
    give). The window is the object's projected bounding sphere at the largest size, plus the
    shifts."""
    if appearance.vertex_colors is None:
        raise InputError("the appearance mesh has no vertex colours; bake them first "
                         "(bake_vertex_colors)")
    lo, hi, step = (float(x) for x in scales)
    if not 0 < lo < 1 < hi or not 0 < step < hi - lo:
        raise InputError(f"scales must be (start < 1 < stop, step > 0) as (0.9, 1.1, 0.02), got "
                         f"{scales}")
    if not 0 <= turn_deg < 45:
        raise InputError(f"turn_deg must be in [0, 45) degrees, got {turn_deg}")
    T0 = np.asarray(T_camera_object, np.float64)
    c_m = bbox_centre(appearance.vertices)
    sphere = _sphere_in_image(c_m, appearance.diameter, T0, intr)
    if sphere is None:
        return RangeFit(T0, 1.0, float("nan"), False, "the object is behind the camera")
    H, W = rgb.shape[:2]
    k0 = k = int(shift_px)
    # one window for every turn and round: the sphere at the largest size, plus the shifts
    _, uc, vc, r = sphere
    if 2 * r > max(H, W):
        return RangeFit(T0, 1.0, float("nan"), False,
                        f"the object would be {2 * r:.0f} px across, wider than the image: too "
                        f"near for its size to tell the range")
    r = r * hi + k0
    x0, y0 = int(np.floor(uc - r)), int(np.floor(vc - r))
    x1, y1 = int(np.ceil(uc + r)), int(np.ceil(vc + r))
    xa, xb, ya, yb = max(0, x0 - k0), min(W, x1 + k0), max(0, y0 - k0), min(H, y1 + k0)
    if xb - xa < 8 or yb - ya < 8:
        return RangeFit(T0, 1.0, float("nan"), False, "the object is outside the image")
    size = (x1 - x0, y1 - y0)
    win = intr.crop_resize(x0, y0, size[0], size[1], size[0], size[1])
    # the image window, k px larger on every side (zeros outside the image)
    img = np.zeros((size[1] + 2 * k0, size[0] + 2 * k0), np.float32)
    img[ya - y0 + k0:yb - y0 + k0, xa - x0 + k0:xb - x0 + k0] = cv2.cvtColor(
        rgb[ya:yb, xa:xb].astype(np.float32), cv2.COLOR_RGB2GRAY)
    scene = mesh_scene(appearance)
    kernel = np.ones((2 * erode_px + 1,) * 2, np.uint8)
    # the grey print per vertex (OpenCV's RGB2GRAY weights; grey is linear in the colour, so
    # interpolating it equals the grey of the interpolated colour)
    grey_v = appearance.vertex_colors @ np.array([0.299, 0.587, 0.114], np.float32) * 255.0
    t = float(turn_deg)
    turns = [np.array([a, b, 0.0]) for a in (0.0, t, -t) for b in (0.0, t, -t)] if t else \
        [np.zeros(3)]
    # the pose given and its turns, rendered once: the later rounds scale and move the renders
    # (what a render at the moved pose shows, but for the perspective of a few per cent)
    masks, greys = _render_grey(scene, appearance, grey_v, win,
                                [_turn_in_camera(T0, c_m, w) for w in turns])
    p = np.array([uc - x0, vc - y0])      # the object's centre, where every turn keeps it
    # (turn, size so far, move so far (x, y) px): the pose given first
    states = [(n, 1.0, np.zeros(2)) for n in range(len(turns))]
    best = None
    for rnd in range(rounds):
        ss = np.arange(lo, hi + 0.5 * step, step)
        # the image's (2k+1)^2 shifted copies, as views (later rounds: half the shifts)
        n_sh = 2 * k + 1
        shifted = np.lib.stride_tricks.sliding_window_view(
            img[k0 - k:img.shape[0] - k0 + k, k0 - k:img.shape[1] - k0 + k], (n_sh, n_sh))
        cands, why = [], ""
        for n, s0, d0 in states:
            # the pixels compared: the same for every s (the render's at the smallest, eroded)
            sel = cv2.warpAffine(masks[n].astype(np.float32), _scale_about(s0 * lo, p, p + d0),
                                 size) > 0.99
            if erode_px:
                sel = cv2.erode(sel.astype(np.uint8), kernel) > 0
            if sel.sum() < min_pixels:
                why = why or f"{int(sel.sum())} pixels to compare < {min_pixels}"
                continue
            cands.append((n, s0, d0, sel))
        cc = _size_scores(shifted, [c[3] for c in cands], [greys[c[0]] for c in cands],
                          [(p, p + d0, s0) for _, s0, d0, _ in cands], ss) if cands else []
        fits = []
        for (n, s0, d0, _), cc_n in zip(cands, cc):
            flat = cc_n.reshape(len(ss), -1)
            j = flat.argmax(1)
            curve = flat[np.arange(len(ss)), j]
            i = int(np.argmax(curve))
            if curve[i] < min_score:
                why = why or f"round {rnd + 1}: the print fits at most {curve[i]:.2f} < {min_score}"
                continue
            if i == 0 or i == len(ss) - 1:
                why = why or (f"round {rnd + 1}: the print fits best at the end of the sizes "
                              f"tried ({s0 * ss[i]:.3f})")
                continue
            jy, jx = divmod(int(j[i]), n_sh)
            shift = np.array([jx + _vertex(cc_n[i, jy, jx - 1:jx + 2]) - k,
                              jy + _vertex(cc_n[i, jy - 1:jy + 2, jx]) - k])
            s = float(ss[i]) + step * _vertex(curve[i - 1:i + 2])
            fits.append((float(curve[i]), n, s0 * s, d0 + shift))
        if not fits:
            return RangeFit(T0, 1.0, float("nan") if best is None else best[0], False, why)
        best = max(fits, key=lambda f: f[0])
        states = [f[1:] for f in fits]
        lo, hi, step = 1 - step, 1 + step, step / 4
        k = (k + 1) // 2
    score, _, total, d = best
    # the centre to the moved point, at the range divided by the size
    c = T0[:3, :3] @ c_m + T0[:3, 3]
    T = T0.copy()
    T[:3, 3] = intr.backproject((np.array([uc, vc]) + d)[None], np.array([c[2] / total]))[0] \
        - T0[:3, :3] @ c_m
    return RangeFit(T, total, score, True)
