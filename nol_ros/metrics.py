"""Pose, trajectory and image metrics (metres, degrees, pixels, dB).

ADD/ADI (Hinterstoisser et al.): mean distance of model points under the two poses / to the
nearest transformed point (symmetric objects). MSSD/MSPD (BOP): maximum 3D / 2D point
distance, minimised over the object's symmetry transformations. ATE after Umeyama alignment, RPE
over a frame offset. Masked PSNR/SSIM on images in [0, 1]. LPIPS only with user-supplied weights.
"""

from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
from scipy.spatial import cKDTree

from nol_ros.errors import InputError, NolError
from nol_ros.geometry import make_T, so3_exp

# the pose errors, re-exported next to the metrics built on them
from nol_ros.geometry import rotation_error_deg as rotation_error_deg
from nol_ros.geometry import translation_error_m as translation_error_m
from nol_ros.reconstruction.registration import sample_surface


class MissingWeightsError(NolError):
    code = "MISSING_WEIGHTS"


def _xf(R, t, pts):
    return np.asarray(pts, float) @ np.asarray(R, float).T + np.asarray(t, float).reshape(3)


def _check_pose_args(R_est, t_est, R_gt, t_gt, pts) -> np.ndarray:
    for name, v, shape in (("R_est", R_est, (3, 3)), ("R_gt", R_gt, (3, 3)),
                           ("t_est", t_est, (3,)), ("t_gt", t_gt, (3,))):
        a = np.asarray(v, float)
        if a.size != int(np.prod(shape)) or not np.all(np.isfinite(a)):
            raise InputError(f"{name} must be {shape} finite values, got shape {a.shape}")
    pts = np.asarray(pts, float)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise InputError(f"pts must be (N, 3) model points in metres with N > 0, got {pts.shape}")
    return pts


def add(R_est, t_est, R_gt, t_gt, pts) -> float:
    """ADD: mean ||(R_est x + t_est) - (R_gt x + t_gt)|| over model points pts (N, 3) metres;
    R (3, 3), t (3,) metres (object -> camera). Returns metres."""
    pts = _check_pose_args(R_est, t_est, R_gt, t_gt, pts)
    return float(np.linalg.norm(_xf(R_est, t_est, pts) - _xf(R_gt, t_gt, pts), axis=1).mean())


def adi(R_est, t_est, R_gt, t_gt, pts) -> float:
    """ADI (ADD-S): mean over ground-truth-posed points of the distance to the NEAREST
    estimate-posed point (metres); for symmetric objects."""
    pts = _check_pose_args(R_est, t_est, R_gt, t_gt, pts)
    e, g = _xf(R_est, t_est, pts), _xf(R_gt, t_gt, pts)
    d, _ = cKDTree(e).query(g, k=1)
    return float(d.mean())


def add_s(R_est, t_est, R_gt, t_gt, pts, symmetric: bool) -> float:
    """ADD for asymmetric objects, ADI for symmetric ones (the usual ADD(-S)), metres."""
    return (adi if symmetric else add)(R_est, t_est, R_gt, t_gt, pts)


def _sym_list(sym_Rs) -> list[np.ndarray]:
    """Symmetry transformations as (4, 4) float64 (model frame, metres); (3, 3) rotations are
    accepted. None/empty = identity only."""
    if sym_Rs is None or len(sym_Rs) == 0:
        return [np.eye(4)]
    out = []
    for S in sym_Rs:
        S = np.asarray(S, float)
        if S.shape == (3, 3):
            S = np.block([[S, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]])
        if S.shape != (4, 4):
            raise InputError(f"a symmetry must be (3, 3) or (4, 4), got {S.shape}")
        out.append(S)
    return out


def mssd(R_est, t_est, R_gt, t_gt, pts, sym_Rs=None) -> float:
    """BOP MSSD (metres): min over symmetries S of max_x ||T_est x - T_gt S x||.
    sym_Rs: list of (4, 4) (or (3, 3)) symmetry transformations in the model frame (metres),
    e.g. from :func:`symmetries_from_models_info`; None = no symmetry."""
    pts = _check_pose_args(R_est, t_est, R_gt, t_gt, pts)
    e = _xf(R_est, t_est, pts)
    R_gt, t_gt = np.asarray(R_gt, float).reshape(3, 3), np.asarray(t_gt, float).reshape(3)
    best = np.inf
    for S in _sym_list(sym_Rs):
        g = _xf(R_gt @ S[:3, :3], R_gt @ S[:3, 3] + t_gt, pts)
        best = min(best, float(np.linalg.norm(e - g, axis=1).max()))
    return best


def mspd(R_est, t_est, R_gt, t_gt, pts, intr, sym_Rs=None) -> float:
    """BOP MSPD (pixels): min over symmetries of the max 2D distance of the projected model
    points. intr: :class:`nol_ros.camera.Intrinsics` or a (3, 3) K."""
    pts = _check_pose_args(R_est, t_est, R_gt, t_gt, pts)
    K = np.asarray(intr.K if hasattr(intr, "K") else intr, float).reshape(3, 3)

    def proj(P):
        if np.any(P[:, 2] <= 0):
            raise InputError("mspd: a model point is behind the camera (z <= 0)")
        p = P @ K.T
        return p[:, :2] / p[:, 2:3]

    e = proj(_xf(R_est, t_est, pts))
    R_gt, t_gt = np.asarray(R_gt, float).reshape(3, 3), np.asarray(t_gt, float).reshape(3)
    best = np.inf
    for S in _sym_list(sym_Rs):
        g = proj(_xf(R_gt @ S[:3, :3], R_gt @ S[:3, 3] + t_gt, pts))
        best = min(best, float(np.linalg.norm(e - g, axis=1).max()))
    return best


def symmetry_transforms(continuous_axes=(), discrete=(), n_continuous: int = 36) -> list:
    """BOP-style symmetry list: identity, the given discrete 4x4s, and each continuous axis
    (through the model origin) sampled every 360/n degrees."""
    out = [np.eye(4)] + [np.asarray(S, float).reshape(4, 4) for S in discrete]
    for ax in continuous_axes:
        a = np.asarray(ax, float) / np.linalg.norm(ax)
        out += [make_T(so3_exp(a * 2 * np.pi * k / n_continuous), np.zeros(3))
                for k in range(1, n_continuous)]
    return out


def symmetries_from_models_info(entry: dict, max_sym_disc_step: float = 0.01
                                ) -> list[np.ndarray]:
    """Symmetry transformations (4, 4) float64, model frame, METRES, of one BOP models_info
    entry: identity and ``symmetries_discrete`` (16 numbers, row-major, translation in mm),
    each combined with the ``symmetries_continuous`` ({axis, offset (mm)}) discretised as in the
    BOP toolkit: ceil(pi / max_sym_disc_step) steps, so the point farthest from the axis moves
    at most max_sym_disc_step * diameter between consecutive steps."""
    disc = [np.eye(4)]
    for v in entry.get("symmetries_discrete", []):
        S = np.asarray(v, float).reshape(4, 4).copy()
        S[:3, 3] *= 1e-3
        disc.append(S)
    cont = [np.eye(4)]
    for sym in entry.get("symmetries_continuous", []):
        axis = np.asarray(sym["axis"], float)
        axis = axis / np.linalg.norm(axis)
        off = np.asarray(sym.get("offset", [0, 0, 0]), float) * 1e-3
        n = int(np.ceil(np.pi / max_sym_disc_step))
        for i in range(1, n):
            R = so3_exp(axis * (2 * np.pi * i / n))
            C = np.eye(4)
            C[:3, :3], C[:3, 3] = R, off - R @ off  # rotation about the axis through offset
            cont.append(C)
    return [C @ D for D in disc for C in cont]


def align_umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> np.ndarray:
    """T (4x4, similarity if with_scale) minimising ||T src - dst||^2. (N, 3) each."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if src.shape != dst.shape or len(src) < 3:
        raise InputError(f"need >= 3 corresponding points, got {src.shape} and {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    xs, xd = src - ms, dst - md
    C = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(C)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (xs**2).sum(1).mean() if with_scale else 1.0
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = md - s * R @ ms
    return T


def _check_traj(T_est, T_gt) -> None:
    if len(T_est) != len(T_gt):
        raise InputError(f"trajectories differ in length: {len(T_est)} estimated vs "
                         f"{len(T_gt)} ground-truth poses; pass corresponding poses")
    for name, Ts in (("T_est", T_est), ("T_gt", T_gt)):
        for i, T in enumerate(Ts):
            T = np.asarray(T, float)
            if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                raise InputError(f"{name}[{i}] must be a finite (4, 4) matrix")


def ate_rmse(T_est: list[np.ndarray], T_gt: list[np.ndarray], align: bool = True
             ) -> tuple[float, np.ndarray]:
    """Absolute trajectory error: RMSE (metres) of the camera positions of T_est (list of (4, 4)
    T_world_camera) against T_gt after the rigid Umeyama alignment A (4, 4, maps the estimate's
    world into the ground truth's; identity with align=False). Returns (rmse_m, A)."""
    _check_traj(T_est, T_gt)
    P = np.array([T[:3, 3] for T in T_est])
    G = np.array([T[:3, 3] for T in T_gt])
    A = align_umeyama(P, G) if align else np.eye(4)
    Pa = P @ A[:3, :3].T + A[:3, 3]
    return float(np.sqrt(np.mean(np.sum((Pa - G) ** 2, axis=1)))), A


def rpe(T_est: list[np.ndarray], T_gt: list[np.ndarray], delta: int = 1
        ) -> tuple[float, float]:
    """Relative pose error over ``delta`` frames: (translation RMSE m, rotation RMSE deg) of
    E_i = inv(inv(G_i) G_{i+delta}) (inv(P_i) P_{i+delta}); independent of the world frames."""
    _check_traj(T_est, T_gt)
    if delta < 1:
        raise InputError(f"delta must be >= 1, got {delta}")
    et, er = [], []
    for i in range(len(T_est) - delta):
        de = np.linalg.inv(T_est[i]) @ T_est[i + delta]
        dg = np.linalg.inv(T_gt[i]) @ T_gt[i + delta]
        E = np.linalg.inv(dg) @ de
        et.append(np.linalg.norm(E[:3, 3]))
        er.append(np.degrees(np.arccos(np.clip((np.trace(E[:3, :3]) - 1) / 2, -1, 1))))
    if not et:
        raise InputError(f"trajectory of {len(T_est)} poses is shorter than delta={delta}")
    return float(np.sqrt(np.mean(np.square(et)))), float(np.sqrt(np.mean(np.square(er))))


def _check_images(img, ref, mask) -> None:
    a, b, m = np.asarray(img), np.asarray(ref), np.asarray(mask)
    if a.shape != b.shape:
        raise InputError(f"image {a.shape} and reference {b.shape} differ in shape")
    if a.ndim not in (2, 3) or m.shape != a.shape[:2]:
        raise InputError(f"mask {m.shape} must be (H, W) of the images {a.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("images contain NaN or infinity")


def masked_psnr(img: np.ndarray, ref: np.ndarray, mask: np.ndarray, max_val: float = 1.0
                ) -> float:
    """PSNR (dB) over the pixels of ``mask`` ((H, W) bool): 10 log10(max_val^2 / MSE), the MSE
    taken over all channels of the masked pixels; img, ref (H, W) or (H, W, C) float in
    [0, max_val]. inf for identical pixels."""
    _check_images(img, ref, mask)
    m = np.asarray(mask, bool)
    if not m.any():
        raise InputError("masked_psnr: the mask is empty")
    d = (np.asarray(img, np.float64) - np.asarray(ref, np.float64))[m]
    mse = float(np.mean(d**2))
    return float("inf") if mse == 0 else float(10 * np.log10(max_val**2 / mse))


def masked_ssim(img: np.ndarray, ref: np.ndarray, mask: np.ndarray, max_val: float = 1.0
                ) -> float:
    """SSIM (Wang et al. 2004; Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03, borders
    reflected) computed per channel on the whole image, then averaged over the pixels of
    ``mask`` ((H, W) bool) and the channels. img, ref (H, W) or (H, W, C) in [0, max_val]."""
    _check_images(img, ref, mask)
    m = np.asarray(mask, bool)
    if not m.any():
        raise InputError("masked_ssim: the mask is empty")
    a = np.asarray(img, np.float64)
    b = np.asarray(ref, np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        vals.append(s[m])
    return float(np.mean(vals))


_LPIPS_CACHE: dict = {}


def lpips_distance(img: np.ndarray, ref: np.ndarray, weights_path: str | None = None,
                   mask: np.ndarray | None = None) -> float:
    """LPIPS (Zhang et al. 2018, AlexNet variant; lower is more similar).

    The learnt linear layers ship with the ``lpips`` package, but its AlexNet backbone is a
    download that cannot happen here: pass ``weights_path``, a local torchvision AlexNet state
    dict (e.g. ``alexnet-owt-7be5be79.pth``). Without it this raises; there is no silent
    fallback to a random backbone. img/ref: (H, W, 3) in [0, 1]; mask (H, W) bool averages the
    spatial LPIPS map over the mask (the paper compares object crops)."""
    if not weights_path:
        raise MissingWeightsError(
            "LPIPS needs the AlexNet backbone weights, which cannot be downloaded here; pass "
            "weights_path= a local torchvision AlexNet state dict, or use PSNR/SSIM")
    if not os.path.isfile(weights_path):
        raise MissingWeightsError(f"LPIPS weights file '{weights_path}' does not exist")
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    model = _LPIPS_CACHE.get(weights_path)
    if model is None:
        # lazy: lpips + torchvision (6 s + 6 s to import) load only when this runs
        import lpips
        import torchvision

        alex = torchvision.models.alexnet(weights=None)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            alex.load_state_dict(state)
        except Exception as e:
            raise MissingWeightsError(f"'{weights_path}' is not a torchvision AlexNet state dict "
                                      f"({type(e).__name__}: {str(e)[:200]})") from e
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net="alex", pnet_rand=True, spatial=True, verbose=False)
        feats = dict(alex.features.named_children())
        for sl in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4,
                   model.net.slice5):
            for name, mod in sl.named_children():
                mod.load_state_dict(feats[name].state_dict())
        model.eval()
        _LPIPS_CACHE[weights_path] = model

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(2, 0, 1)[None]

    with torch.no_grad():
        d = model(t(img), t(ref), normalize=True)[0, 0].numpy()
    if mask is None:
        return float(d.mean())
    m = np.asarray(mask, bool)
    if not m.any():
        raise InputError("lpips_distance: the mask is empty")
    return float(d[m].mean())


def geometric_symmetries(vertices: np.ndarray, faces: np.ndarray, tol_m: float = 0.0005,
                         n_points: int = 3000, step_deg: float = 2.0) -> list[np.ndarray]:
    """Rotations about the model origin that map the untextured surface onto itself: candidates
    are rotations about z every ``step_deg``, 180-degree turns about x and y, and their
    products; one is kept when the 99th percentile of the exact distances from rotated surface
    samples to the (unrotated) surface is below ``tol_m`` -- so small parts such as a handle
    count, and a rotation by a few degrees is not taken for a symmetry (comparing with a second
    point sampling instead, as before, accepted 2-6 deg turns of a box and hid rotation errors of
    that size). A registration from geometry alone is only defined up to these; evaluate
    rotation errors modulo them."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d
    import open3d.core as o3c

    P, _ = sample_surface(vertices, faces, n_points, np.random.default_rng(0))
    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3c.Tensor(np.asarray(vertices, np.float32)),
                     o3c.Tensor(np.asarray(faces, np.uint32)))
    zrots = [so3_exp([0, 0, np.radians(a)]) for a in np.arange(step_deg, 360, step_deg)]
    flips = [so3_exp(np.array(ax) * np.pi) for ax in ([1, 0, 0], [0, 1, 0])]
    cands, seen = [], set()
    for R in zrots + flips + [F @ Rz for F in flips for Rz in zrots]:
        key = tuple(np.round(R, 6).ravel() + 0.0)  # flip(x) . Rz(pi) = flip(y): once
        if key not in seen:
            seen.add(key)
            cands.append(R)


    def passing(Rs, pts, tol):
        Q = np.concatenate([pts @ R.T for R in Rs]).astype(np.float32)
        d = sc.compute_distance(o3c.Tensor(Q)).numpy().reshape(len(Rs), len(pts))
        return [R for R, p99 in zip(Rs, np.percentile(d, 99, axis=1)) if p99 < tol]

    # a quick look with few points first (most candidates are far off), then the full test
    cands = passing(cands, P[:400], 4 * tol_m)
    keep = passing(cands, P, tol_m) if cands else []
    return [np.eye(4)] + [make_T(R, np.zeros(3)) for R in keep]


def continuous_symmetry_axis(vertices: np.ndarray, faces: np.ndarray, rel_tol: float = 0.01,
                             min_tol_m: float = 0.001, n_points: int = 2000
                             ) -> tuple[np.ndarray, np.ndarray] | None:
    """The axis of a continuous rotational symmetry of the untextured surface (a can, a bowl), or
    None: for each model axis (x, y, z) through the bounding-box centre, the surface turned by
    23, 71, 137 and 199 deg about it must lie on itself (99th percentile of the distances below
    ``rel_tol`` of the diameter, at least ``min_tol_m``: scans are bumpy, a box or a bottle is
    centimetres off). Returns (unit axis (3,), a point on it (3,) m) in the model frame -- what
    the pose labels are made unique about (:func:`nol_ros.recognition.trainset
    .canonical_symmetric_coords`)."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d
    import open3d.core as o3c

    V = np.asarray(vertices, np.float64)
    P, _ = sample_surface(V, faces, n_points, np.random.default_rng(0))
    centre = (V.min(0) + V.max(0)) / 2
    diam = float(np.linalg.norm(np.ptp(V, 0)))
    tol = max(min_tol_m, rel_tol * diam)
    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3c.Tensor(V.astype(np.float32)), o3c.Tensor(np.asarray(faces, np.uint32)))
    for ax in np.eye(3):
        Q = np.concatenate([(P - centre) @ so3_exp(ax * np.radians(a)).T + centre
                            for a in (23, 71, 137, 199)]).astype(np.float32)
        d = sc.compute_distance(o3c.Tensor(Q)).numpy()
        if np.percentile(d, 99) < tol:
            return ax.copy(), centre
    return None


def rotation_error_sym_deg(T_est: np.ndarray, T_gt: np.ndarray, syms: list[np.ndarray],
                           continuous_min_turns: int = 90) -> float:
    """Smallest rotation error between T_est and T_gt @ S over the symmetries S ((4, 4) or
    (3, 3), as :func:`geometric_symmetries` gives them). When S holds at least
    ``continuous_min_turns`` turns about the model z axis (a surface of revolution, sampled every
    few degrees), any turn about z is a symmetry: the error is then the angle between the
    estimated and the true z axis (over the symmetries' images of it, e.g. upside down), the
    exact minimum over all turns; the minimum over the sampled turns alone adds up to half the
    sampling step (1 deg at geometric_symmetries' 2 deg) for a turn between two samples."""
    Rs = [np.asarray(S)[:3, :3] for S in syms]
    if sum(abs(R[2, 2] - 1.0) < 1e-9 for R in Rs) >= continuous_min_turns:
        z_est = np.asarray(T_est)[:3, :3][:, 2]
        cos = [float(z_est @ (np.asarray(T_gt)[:3, :3] @ R[:, 2])) for R in Rs]
        return float(np.degrees(np.arccos(np.clip(max(cos), -1.0, 1.0))))
    return min(rotation_error_deg(T_est[:3, :3], T_gt[:3, :3] @ R) for R in Rs)
