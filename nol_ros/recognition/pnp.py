"""Poses from predicted correspondences (PnP-RANSAC) and their refinement with depth (ICP).

:func:`pnp_ransac`: 2D-3D correspondences -> T_camera_object, or None ("no pose") when RANSAC
finds fewer than ``min_inliers`` consistent correspondences, too small an inlier fraction, or a
pose behind the camera. Never a garbage pose with a high score: the score is the inlier
fraction.

:func:`rigid_ransac`: the same with 3D-3D correspondences (predicted object coordinates and the
depth image's camera points at the same pixels; RGB-D cameras): a rigid fit (Kabsch) inside
RANSAC. Depth fixes what a small crop cannot give PnP (the distance, and the rotation that
only weak perspective shows).

:func:`refine_icp`: render the mesh at the RGB pose to get the model points the camera sees,
then ICP (Open3D) from coarse to fine against the depth points inside the predicted visible
mask (points farther than the object's radius from the median depth -- occluders, the table --
are dropped): point to point model->depth, then the finest stage point to plane depth->model
with a robust kernel (:class:`IcpConfig` says why). The
start moves the RGB pose so the visible model surface and the observed points have the same
per-axis medians (PnP's translation, above all along the ray, is its weakest part).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import fit_rigid, invert_T, make_T
from nol_ros.rasterizer import mesh_scene
from nol_ros.recognition.poses import bbox_centre


@dataclass
class PnPResult:
    T_camera_object: np.ndarray | None   # (4, 4) or None = no pose
    n_inliers: int
    n_points: int
    score: float                          # inlier fraction (0 when no pose)
    reason: str = ""


def _check_correspondences(P: np.ndarray, other: np.ndarray, what: str,
                           need: int) -> PnPResult | None:
    """Shared input checks of the two RANSAC solvers: a length mismatch or NaN is the caller's
    bug (InputError); too few correspondences is "no pose" (returned)."""
    if len(P) != len(other):
        raise InputError(f"{len(P)} object points but {len(other)} {what} points")
    if len(P) < need:
        return PnPResult(None, 0, len(P), 0.0, f"only {len(P)} correspondences (need {need})")
    if not (np.all(np.isfinite(P)) and np.all(np.isfinite(other))):
        raise InputError("correspondences contain NaN or infinity")
    return None


def _accept(T: np.ndarray, n_inl: int, n: int, min_inliers: int,
            min_inlier_fraction: float) -> PnPResult:
    """The pose, or "no pose" with the reason: too few inliers, too small a fraction, not
    finite, or at/behind the camera."""
    frac = n_inl / n
    if n_inl < min_inliers:
        return PnPResult(None, n_inl, n, 0.0, f"{n_inl} inliers < {min_inliers}")
    if frac < min_inlier_fraction:
        return PnPResult(None, n_inl, n, 0.0, f"inlier fraction {frac:.2f} < "
                         f"{min_inlier_fraction}")
    if not np.all(np.isfinite(T)) or T[2, 3] <= 0.05:
        return PnPResult(None, n_inl, n, 0.0, f"pose at z = {T[2, 3]:.3f} m (behind or at "
                         "the camera)")
    return PnPResult(T, int(n_inl), n, float(frac))


def pnp_ransac(obj_pts: np.ndarray, img_pts: np.ndarray, K: np.ndarray,
               reproj_px: float = 3.0, iterations: int = 150, min_inliers: int = 12,
               min_inlier_fraction: float = 0.15, confidence: float = 0.99,
               seed: int = 0) -> PnPResult:
    """obj_pts (N, 3) object-frame metres, img_pts (N, 2) pixels, K (3, 3). EPnP inside
    RANSAC, then Levenberg-Marquardt on the inliers."""
    P = np.ascontiguousarray(obj_pts, np.float64).reshape(-1, 3)
    p = np.ascontiguousarray(img_pts, np.float64).reshape(-1, 2)
    K = np.asarray(K, np.float64).reshape(3, 3)
    n = len(P)
    bad = _check_correspondences(P, p, "image", max(4, min_inliers))
    if bad is not None:
        return bad
    cv2.setRNGSeed(int(seed))
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(P, p, K, None, iterationsCount=int(iterations),
                                                 reprojectionError=float(reproj_px),
                                                 confidence=float(confidence),
                                                 flags=cv2.SOLVEPNP_EPNP)
    except cv2.error as e:
        return PnPResult(None, 0, n, 0.0, f"solvePnPRansac failed: {str(e)[:100]}")
    if not ok or inl is None:
        return PnPResult(None, 0, n, 0.0, "RANSAC found no consensus")
    inl = inl.reshape(-1)
    if len(inl) >= 6:
        rvec, tvec = cv2.solvePnPRefineLM(P[inl], p[inl], K, None, rvec, tvec)
        # inliers of the refined pose
        proj, _ = cv2.projectPoints(P, rvec, tvec, K, None)
        d = np.linalg.norm(proj.reshape(-1, 2) - p, axis=1)
        inl = np.flatnonzero(d < reproj_px)
    R, _ = cv2.Rodrigues(rvec)
    T = make_T(R, tvec.reshape(3))
    res = _accept(T, len(inl), n, min_inliers, min_inlier_fraction)
    if res.T_camera_object is not None and np.any((P[inl] @ R.T + T[:3, 3])[:, 2] <= 0):
        return PnPResult(None, len(inl), n, 0.0, "inlier points behind the camera")
    return res


def _squared_residuals(Ts: np.ndarray, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """|R_h p_n + t_h - q_n|^2 for (H, 4, 4) poses and (N, 3) point pairs -> (H, N), as one
    matrix product: |p|^2 + |q|^2 + |t|^2 - 2 q.R p + 2 p.R^T t - 2 q.t, with q.R p the dot
    product of the flattened outer product q p^T and R (30-40x the speed of applying every
    pose to every point)."""
    R, t = Ts[:, :3, :3], Ts[:, :3, 3]
    n = len(P)
    f = np.concatenate([(Q[:, :, None] * P[:, None, :]).reshape(n, 9), P, Q, np.ones((n, 1))], 1)
    g = np.concatenate([-2 * R.reshape(-1, 9), 2 * np.einsum("hji,hj->hi", R, t), -2 * t,
                        (t * t).sum(1, keepdims=True)], 1)
    return (P * P).sum(1) + (Q * Q).sum(1) + g @ f.T


def rigid_ransac(obj_pts: np.ndarray, cam_pts: np.ndarray, thresh_m: float = 0.015,
                 iterations: int = 300, min_inliers: int = 12,
                 min_inlier_fraction: float = 0.15, min_extent_m: float = 0.0,
                 seed: int = 0) -> PnPResult:
    """obj_pts (N, 3) object-frame metres, cam_pts (N, 3) camera-frame metres (depth points at
    the same pixels). Minimal 3-point Kabsch fits inside RANSAC (degenerate, near-collinear
    samples skipped; :func:`~nol_ros.geometry.fit_rigid` for all at once), then two
    least-squares refits on the inliers. No pose also when the inlier object coordinates'
    RMS spread is below ``min_extent_m`` (a fit to a patch of the object). Score: inlier
    fraction."""
    P = np.asarray(obj_pts, np.float64).reshape(-1, 3)
    Q = np.asarray(cam_pts, np.float64).reshape(-1, 3)
    n = len(P)
    bad = _check_correspondences(P, Q, "camera", max(3, min_inliers))
    if bad is not None:
        return bad
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(iterations), 3))
    A, B = P[idx], Q[idx]
    # both triangles must span an area (a sample on a line fixes no rotation)
    area = np.minimum(np.linalg.norm(np.cross(A[:, 1] - A[:, 0], A[:, 2] - A[:, 0]), axis=1),
                      np.linalg.norm(np.cross(B[:, 1] - B[:, 0], B[:, 2] - B[:, 0]), axis=1))
    good = area > (0.5 * thresh_m) ** 2
    if not good.any():
        return PnPResult(None, 0, n, 0.0, "every sample was degenerate (points on a line)")
    Ts = fit_rigid(A[good], B[good])
    inside = _squared_residuals(Ts, P, Q) < thresh_m ** 2
    best = int(np.argmax(inside.sum(1)))
    T, inl = Ts[best], np.flatnonzero(inside[best])
    for _ in range(2):
        if len(inl) < 3:
            break
        T = fit_rigid(P[inl], Q[inl])
        inl = np.flatnonzero(np.linalg.norm(P @ T[:3, :3].T + T[:3, 3] - Q, axis=1) < thresh_m)
    res = _accept(T, len(inl), n, min_inliers, min_inlier_fraction)
    if res.T_camera_object is not None and min_extent_m > 0:
        # the inliers must span the seen surface, not a patch of it: a pose net whose
        # coordinates collapse (a poorly trained one) agrees with the depth on a small cluster,
        # where the rotation is free and the origin lands centimetres off
        ext = float(np.sqrt(((P[inl] - P[inl].mean(0)) ** 2).sum(1).mean()))
        if ext < min_extent_m:
            return PnPResult(None, len(inl), n, 0.0, f"the inliers cover a patch of the object "
                             f"({ext * 100:.1f} cm RMS < {min_extent_m * 100:.1f} cm)")
    return res


@dataclass(frozen=True)
class IcpConfig:
    """max_corr_m: coarse-to-fine correspondence distances (m); iterations per stage;
    min_points: fewer observed depth points -> keep the RGB pose; voxel_m: downsampling;
    max_shift_m: ICP moving the (centred) start farther than this is taken as a failure.
    The coarse stages pull the visible model surface onto the observed points (point to point);
    the finest stage (plane_kernel_m > 0) turns round: each observed point is pulled onto the
    model's tangent plane, with a Tukey kernel of that width. Real depth is missing over part
    of the object (dark print, specular spots, noise at 1.5 m): model points with no partner
    there pull the point-to-point pose off by millimetres and tilt it by a degree or two, which
    on a bottle or can is the whole error left; observed points on the model's planes are not
    biased by the holes (the synthetic bottle from a start 1 cm / 3 deg off: 3.5 -> 0.3 mm).
    (Tried: ICP from 4 turns of the RGB pose about the model's z axis, best alignment wins --
    no change on the demo test sequence with ground-truth boxes, 4x the time; point to plane in
    every stage -- boxes and the drill slide along their faces, 5-20 points of ADD lost.)"""

    max_corr_m: tuple[float, ...] = (0.03, 0.015, 0.007)
    iterations: int = 30
    min_points: int = 50
    voxel_m: float = 0.004
    max_shift_m: float = 0.15
    plane_kernel_m: float = 0.01    # last stage depth->model point to plane, Tukey k (m); 0: off
    # model points only where the start pose puts them inside the mask: with a mask that leaves
    # out what occludes the object (a learnt object's source views) the occluded surface is no
    # longer matched against nothing -- a pudding box three quarters hidden slid 36 mm along
    # its face without this. Off for recognition, whose predicted mask is not that exact.
    model_in_mask: bool = False
    normal_radius_m: float = 0.012  # model normals for that stage: neighbours within (m)


@dataclass
class IcpResult:
    T_camera_object: np.ndarray
    refined: bool
    fitness: float          # mean of the model->depth and depth->model inlier fractions
    rmse_m: float
    n_points: int
    reason: str = ""
    start_fitness: float = 0.0   # the same score at T_init (before the ICP moved it)


def _visible_model_points(mesh, T: np.ndarray, intr: Intrinsics, box,
                          keep: np.ndarray | None = None) -> np.ndarray:
    """Object-frame points of the mesh surface the camera sees at pose T, ray cast only inside
    ``box`` (x0, y0, x1, y1) of the image (a sub-window of intr); with ``keep`` ((H, W) bool,
    the whole image) only those whose pixel it holds."""
    x0, y0, x1, y1 = box
    sub = intr.crop_resize(x0, y0, x1 - x0, y1 - y0, x1 - x0, y1 - y0)
    res = mesh_scene(mesh).render(sub, invert_T(T), near=0.01, far=20.0, normals=False)
    d = res.depth
    hit = d > 0
    if keep is not None:
        hit &= keep[y0:y1, x0:x1]
    v, u = np.nonzero(hit)
    if len(u) == 0:
        return np.zeros((0, 3))
    P_cam = sub.backproject(np.stack([u, v], 1).astype(float), d[v, u])
    return P_cam @ T[:3, :3] - T[:3, :3].T @ T[:3, 3]  # T^-1 applied


def refine_icp(T_init: np.ndarray, mesh, depth: np.ndarray, intr: Intrinsics,
               mask: np.ndarray, cfg: IcpConfig = IcpConfig()) -> IcpResult:
    """Refine T_camera_object with the depth image (H, W) float32 m (0 = invalid) inside
    ``mask`` ((H, W) bool, the object's predicted visible pixels)."""

    T0 = np.asarray(T_init, np.float64)
    d = np.asarray(depth)
    if d.shape != (intr.height, intr.width):
        raise InputError(f"depth is {d.shape}, intrinsics are {intr.height}x{intr.width}")
    m = np.asarray(mask, bool) & np.isfinite(d) & (d > 0)
    if m.sum() < cfg.min_points:
        return IcpResult(T0, False, 0.0, 0.0, int(m.sum()), "too few depth points in the mask")
    v, u = np.nonzero(m)
    z = d[v, u].astype(np.float64)
    radius = 0.5 * float(np.linalg.norm(np.ptp(mesh.vertices, 0)))
    zmed = float(np.median(z))
    keep = np.abs(z - zmed) < radius
    u, v, z = u[keep], v[keep], z[keep]
    if len(z) < cfg.min_points:
        return IcpResult(T0, False, 0.0, 0.0, len(z), "too few depth points near the median")
    obs = intr.backproject(np.stack([u, v], 1).astype(float), z)
    # model points seen from the RGB pose, in a window around the mask
    pad = 10
    box = (max(0, int(u.min()) - pad), max(0, int(v.min()) - pad),
           min(intr.width, int(u.max()) + pad + 1), min(intr.height, int(v.max()) + pad + 1))
    # the window must hold the model's projection: widen it to the projected bounding box
    c_cam = T0[:3, :3] @ bbox_centre(mesh.vertices) + T0[:3, 3]
    if c_cam[2] <= 0.05:
        return IcpResult(T0, False, 0.0, 0.0, len(z), "RGB pose behind the camera")
    r_px = intr.fx * radius / c_cam[2]
    uc, vc = intr.fx * c_cam[0] / c_cam[2] + intr.cx, intr.fy * c_cam[1] / c_cam[2] + intr.cy
    box = (int(max(0, min(box[0], uc - r_px))), int(max(0, min(box[1], vc - r_px))),
           int(min(intr.width, max(box[2], uc + r_px + 1))),
           int(min(intr.height, max(box[3], vc + r_px + 1))))
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return IcpResult(T0, False, 0.0, 0.0, len(z), "the RGB pose projects outside the image")
    r = _icp_once(mesh, T0, obs, intr, box, cfg,
                  np.asarray(mask, bool) if cfg.model_in_mask else None)
    if r is None:
        return IcpResult(T0, False, 0.0, 0.0, len(z), "the model is not visible at the RGB pose "
                         "or ICP moved it implausibly far")
    T, score, rmse, start = r
    return IcpResult(T, True, score, rmse, len(z), start_fitness=start)


def _icp_once(mesh, T0: np.ndarray, obs: np.ndarray, intr: Intrinsics, box, cfg: IcpConfig,
              keep: np.ndarray | None = None):
    """ICP from T0 -> (T, score, rmse, score at T0) or None (diverged). score: the mean of the
    fractions of model and observed points that have a partner within the finest distance."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    model = _visible_model_points(mesh, T0, intr, box, keep)
    if len(model) < 20:
        return None
    # start with the visible model surface centred on the observed points (per-axis medians:
    # PnP's translation is its weakest part, depth along the ray above all)
    mc = model @ T0[:3, :3].T + T0[:3, 3]
    T = T0.copy()
    T[:3, 3] += np.median(obs, 0) - np.median(mc, 0)
    T_start = T.copy()
    src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(model))
    tgt = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(obs))
    if cfg.voxel_m > 0:
        src = src.voxel_down_sample(cfg.voxel_m)
        tgt = tgt.voxel_down_sample(cfg.voxel_m)
    reg = o3d.pipelines.registration
    crit = reg.ICPConvergenceCriteria(max_iteration=cfg.iterations)
    stages = list(cfg.max_corr_m)
    last = stages.pop() if cfg.plane_kernel_m > 0 else None
    for dist in stages:
        res = reg.registration_icp(src, tgt, dist, T, reg.TransformationEstimationPointToPoint(),
                                   crit)
        if res.fitness > 0:
            T = np.asarray(res.transformation)
    if last is not None:
        src.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(cfg.normal_radius_m, 30))
        est = reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=cfg.plane_kernel_m))
        res = reg.registration_icp(tgt, src, last, np.linalg.inv(T), est, crit)
        if res.fitness > 0:
            T = np.linalg.inv(np.asarray(res.transformation))
    if np.linalg.norm(T[:3, 3] - T_start[:3, 3]) > cfg.max_shift_m:
        return None
    # the last stage scored its own direction at T and the finest distance; score the other
    d = cfg.max_corr_m[-1]
    if last is None:
        fwd, back = res, reg.evaluate_registration(tgt, src, d, np.linalg.inv(T))
    else:
        fwd, back = reg.evaluate_registration(src, tgt, d, T), res
    start = 0.5 * (float(reg.evaluate_registration(src, tgt, d, T0).fitness)
                   + float(reg.evaluate_registration(tgt, src, d, np.linalg.inv(T0)).fitness))
    return T, 0.5 * (float(fwd.fitness) + float(back.fitness)), float(fwd.inlier_rmse), start
