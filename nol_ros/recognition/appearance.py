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


def _scale_about(s: float, p: np.ndarray) -> np.ndarray:
    """(2, 3) float32: image coordinates scaled by s about the point p (x, y)."""
    return np.array([[s, 0, (1 - s) * p[0]], [0, s, (1 - s) * p[1]]], np.float32)


def fit_range_by_appearance(rgb: np.ndarray, intr: Intrinsics, T_camera_object: np.ndarray,
                            appearance: Mesh,
                            scales: tuple[float, float, float] = (0.9, 1.1, 0.01),
                            shift_px: int = 4, rounds: int = 2, erode_px: int = 1,
                            min_pixels: int = 50, min_score: float = 0.3,
                            pad: float = 1.25) -> RangeFit:
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
    cross-correlation, cv2.matchTemplate TM_CCOEFF_NORMED, on the same pixels for every s: the
    render's at the smallest s, eroded by ``erode_px``; leaving out the pixels the pose network
    sees as hidden measured 3.5 points less ADD(-S)). The best s and shift (each refined by a
    parabola through its neighbours) move the object's centre to the shifted point at the
    range divided by s; ``rounds`` - 1 more rounds render the new pose and search two
    half-steps about it. The fit is refused, and the pose given kept, when a round's best s is
    at an end of its range: the print then does not tell the size (measured: a pose turned by
    10-20 deg scores best at the smallest size, its outline fitting inside the object's, and
    half of the power drill's poses got worse before this check), when the best fit scores
    below ``min_score`` (a print without contrast, a pose far off) or when fewer than
    ``min_pixels`` compare. The window is the object's projected bounding sphere times ``pad``."""
    if appearance.vertex_colors is None:
        raise InputError("the appearance mesh has no vertex colours; bake them first "
                         "(bake_vertex_colors)")
    lo, hi, step = (float(x) for x in scales)
    if not 0 < lo < 1 < hi or not 0 < step < hi - lo:
        raise InputError(f"scales must be (start < 1 < stop, step > 0) as (0.9, 1.1, 0.01), got "
                         f"{scales}")
    T0 = np.asarray(T_camera_object, np.float64)
    T = T0.copy()
    c_m = bbox_centre(appearance.vertices)
    scene = mesh_scene(appearance)
    H, W = rgb.shape[:2]
    k = int(shift_px)
    score = float("nan")
    total = 1.0
    for rnd in range(rounds):
        sphere = _sphere_in_image(c_m, appearance.diameter, T, intr)
        if sphere is None:
            return RangeFit(T0, 1.0, score, False, "the object is behind the camera")
        c, uc, vc, r = sphere
        r *= pad
        x0, y0 = int(np.floor(uc - r)), int(np.floor(vc - r))
        x1, y1 = int(np.ceil(uc + r)), int(np.ceil(vc + r))
        xa, xb, ya, yb = max(0, x0 - k), min(W, x1 + k), max(0, y0 - k), min(H, y1 + k)
        if xb - xa < 8 or yb - ya < 8:
            return RangeFit(T0, 1.0, score, False, "the object is outside the image")
        win = Intrinsics(fx=intr.fx, fy=intr.fy, cx=intr.cx - x0, cy=intr.cy - y0,
                         width=x1 - x0, height=y1 - y0)
        res = scene.render_batch(win, [invert_T(T)], normals=False)[0]
        tpl = cv2.cvtColor(interpolate_vertex_attribute(res, [appearance],
                                                        [appearance.vertex_colors]) * 255.0,
                           cv2.COLOR_RGB2GRAY)
        # the image window, k px larger on every side (zeros outside the image)
        img = np.zeros((y1 - y0 + 2 * k, x1 - x0 + 2 * k), np.float32)
        img[ya - y0 + k:yb - y0 + k, xa - x0 + k:xb - x0 + k] = cv2.cvtColor(
            rgb[ya:yb, xa:xb].astype(np.float32), cv2.COLOR_RGB2GRAY)
        p = np.array([uc - x0, vc - y0])
        size = (tpl.shape[1], tpl.shape[0])
        # the pixels compared: the same for every s (the render's at the smallest, eroded)
        sel = cv2.warpAffine(res.mask.astype(np.float32), _scale_about(lo, p), size) > 0.99
        if erode_px:
            sel = cv2.erode(sel.astype(np.uint8), np.ones((2 * erode_px + 1,) * 2, np.uint8)) > 0
        if sel.sum() < min_pixels:
            return RangeFit(T0, 1.0, score, False,
                            f"{int(sel.sum())} pixels to compare < {min_pixels}")
        msk = sel.astype(np.float32)
        ss = np.arange(lo, hi + 0.5 * step, step)
        curve, shifts = [], []
        for s in ss:
            t = cv2.warpAffine(tpl, _scale_about(s, p), size, flags=cv2.INTER_LINEAR)
            cc = cv2.matchTemplate(img, t * msk, cv2.TM_CCOEFF_NORMED, mask=msk)
            cc = np.nan_to_num(cc, nan=-2.0, posinf=-2.0, neginf=-2.0)
            jy, jx = np.unravel_index(int(np.argmax(cc)), cc.shape)
            curve.append(float(cc[jy, jx]))
            shifts.append((jx + _vertex(cc[jy, jx - 1:jx + 2]) - k,
                           jy + _vertex(cc[jy - 1:jy + 2, jx]) - k))
        i = int(np.argmax(curve))
        score = curve[i]
        if score < min_score:
            return RangeFit(T0, 1.0, score, False, f"round {rnd + 1}: the print fits at most "
                            f"{score:.2f} < {min_score}")
        if i == 0 or i == len(ss) - 1:
            return RangeFit(T0, 1.0, score, False,
                            f"round {rnd + 1}: the print fits best at the end of the sizes "
                            f"tried ({ss[i]:.3f})")
        s = float(ss[i]) + step * _vertex(curve[i - 1:i + 2])
        q = np.array([uc, vc]) + shifts[i]
        z = c[2] / s
        centre = np.array([(q[0] - intr.cx) / intr.fx * z, (q[1] - intr.cy) / intr.fy * z, z])
        T = T.copy()
        T[:3, 3] = centre - T[:3, :3] @ c_m
        total *= s
        lo, hi, step = 1 - 2 * step, 1 + 2 * step, step / 2
    return RangeFit(T, total, score, True)
