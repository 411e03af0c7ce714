"""Pose, trajectory and image metrics (metres, degrees, pixels, dB).

ADD/ADI (Hinterstoisser et al.): mean distance of model points under the two poses / to the
nearest transformed point (symmetric objects). MSSD/MSPD (BOP): maximum 3D / 2D point
distance, minimised over the object's symmetry transformations. ATE after Umeyama alignment, RPE
over a frame offset. Masked PSNR/SSIM on images in [0, 1]. LPIPS only with user-supplied weights.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from nol_ros.errors import InputError, NolError


class MissingWeightsError(NolError):
    code = "MISSING_WEIGHTS"


def _xf(R, t, pts):
    return np.asarray(pts, float) @ np.asarray(R, float).T + np.asarray(t, float).reshape(3)


def add(R_est, t_est, R_gt, t_gt, pts) -> float:
    return float(np.linalg.norm(_xf(R_est, t_est, pts) - _xf(R_gt, t_gt, pts), axis=1).mean())


def adi(R_est, t_est, R_gt, t_gt, pts) -> float:
    e, g = _xf(R_est, t_est, pts), _xf(R_gt, t_gt, pts)
    d, _ = cKDTree(e).query(g, k=1)
    return float(d.mean())


def add_s(R_est, t_est, R_gt, t_gt, pts, symmetric: bool) -> float:
    """ADD for asymmetric objects, ADI for symmetric ones (the usual ADD(-S))."""
    return (adi if symmetric else add)(R_est, t_est, R_gt, t_gt, pts)


def _sym_list(sym_Rs):
    return [np.eye(4)] if sym_Rs is None or len(sym_Rs) == 0 else list(sym_Rs)


def mssd(R_est, t_est, R_gt, t_gt, pts, sym_Ts=None) -> float:
    """min over symmetries S (4x4, model frame) of max ||T_est x - T_gt S x||."""
    e = _xf(R_est, t_est, pts)
    best = np.inf
    for S in _sym_list(sym_Ts):
        g = _xf(np.asarray(R_gt) @ S[:3, :3], np.asarray(R_gt) @ S[:3, 3] + np.asarray(t_gt),
                pts)
        best = min(best, float(np.linalg.norm(e - g, axis=1).max()))
    return best


def mspd(R_est, t_est, R_gt, t_gt, pts, K, sym_Ts=None) -> float:
    """min over symmetries of max 2D distance (pixels) of the projected points."""
    K = np.asarray(K, float)

    def proj(P):
        p = P @ K.T
        return p[:, :2] / p[:, 2:3]

    e = proj(_xf(R_est, t_est, pts))
    best = np.inf
    for S in _sym_list(sym_Ts):
        g = proj(_xf(np.asarray(R_gt) @ S[:3, :3],
                     np.asarray(R_gt) @ S[:3, 3] + np.asarray(t_gt), pts))
        best = min(best, float(np.linalg.norm(e - g, axis=1).max()))
    return best


def symmetry_transforms(continuous_axes=(), discrete=(), n_continuous: int = 36) -> list:
    """BOP-style symmetry list: identity, the given discrete 4x4s, and each continuous axis
    sampled every 360/n degrees."""
    from nol_ros.geometry import make_T, so3_exp

    out = [np.eye(4)] + [np.asarray(S, float).reshape(4, 4) for S in discrete]
    for ax in continuous_axes:
        a = np.asarray(ax, float) / np.linalg.norm(ax)
        out += [make_T(so3_exp(a * 2 * np.pi * k / n_continuous), np.zeros(3))
                for k in range(1, n_continuous)]
    return out


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


def ate_rmse(T_est: list[np.ndarray], T_gt: list[np.ndarray], align: bool = True
             ) -> tuple[float, np.ndarray]:
    """Absolute trajectory error (RMSE of camera positions, metres) after rigid alignment."""
    P = np.array([T[:3, 3] for T in T_est])
    G = np.array([T[:3, 3] for T in T_gt])
    A = align_umeyama(P, G) if align else np.eye(4)
    Pa = P @ A[:3, :3].T + A[:3, 3]
    return float(np.sqrt(np.mean(np.sum((Pa - G) ** 2, axis=1)))), A


def rpe(T_est: list[np.ndarray], T_gt: list[np.ndarray], delta: int = 1
        ) -> tuple[float, float]:
    """Relative pose error over ``delta`` frames: (translation RMSE m, rotation RMSE deg)."""
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


def masked_psnr(img: np.ndarray, ref: np.ndarray, mask: np.ndarray, max_val: float = 1.0
                ) -> float:
    """PSNR over the pixels of ``mask`` ((H, W) bool); images (H, W, C) in [0, max_val]."""
    m = np.asarray(mask, bool)
    if not m.any():
        raise InputError("masked_psnr: the mask is empty")
    d = (np.asarray(img, np.float64) - np.asarray(ref, np.float64))[m]
    mse = float(np.mean(d**2))
    return float("inf") if mse == 0 else float(10 * np.log10(max_val**2 / mse))


def masked_ssim(img: np.ndarray, ref: np.ndarray, mask: np.ndarray, max_val: float = 1.0
                ) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5; Wang et al. 2004) over the mask's pixels."""
    import cv2

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
    import os

    if not weights_path:
        raise MissingWeightsError(
            "LPIPS needs the AlexNet backbone weights, which cannot be downloaded here; pass "
            "weights_path= a local torchvision AlexNet state dict, or use PSNR/SSIM")
    if not os.path.isfile(weights_path):
        raise MissingWeightsError(f"LPIPS weights file '{weights_path}' does not exist")
    import torch

    model = _LPIPS_CACHE.get(weights_path)
    if model is None:
        import warnings

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


def geometric_symmetries(vertices: np.ndarray, faces: np.ndarray, tol_m: float = 0.001,
                         n_points: int = 6000, step_deg: float = 2.0) -> list[np.ndarray]:
    """Rotations about the model origin that map the untextured surface onto itself: candidates
    are rotations about z every ``step_deg``, 180-degree turns about x and y, and their
    products; one is kept when a rotated surface sampling is as close to another independent
    sampling as two independent samplings are to each other (99th percentile of the
    nearest-neighbour distances, + ``tol_m``), so small parts such as a handle count. A
    registration from geometry alone is only defined up to these; evaluate rotation errors
    modulo them."""
    from nol_ros.geometry import make_T, so3_exp
    from nol_ros.reconstruction.registration import sample_surface

    P, _ = sample_surface(vertices, faces, n_points, np.random.default_rng(0))
    Q, _ = sample_surface(vertices, faces, n_points, np.random.default_rng(1))
    tree = cKDTree(P)
    base = float(np.percentile(tree.query(Q, k=1)[0], 99))
    zrots = [so3_exp([0, 0, np.radians(a)]) for a in np.arange(step_deg, 360, step_deg)]
    flips = [so3_exp(np.array(ax) * np.pi) for ax in ([1, 0, 0], [0, 1, 0])]
    cands = zrots + flips + [F @ Rz for F in flips for Rz in zrots]
    out = [np.eye(4)]
    for R in cands:
        d, _ = tree.query(Q @ R.T, k=1)
        if np.percentile(d, 99) < 1.5 * base + tol_m:
            out.append(make_T(R, np.zeros(3)))
    return out


def rotation_error_sym_deg(T_est: np.ndarray, T_gt: np.ndarray, syms: list[np.ndarray]) -> float:
    """Smallest rotation error between T_est and T_gt @ S over the symmetries S."""
    from nol_ros.geometry import rotation_error_deg

    return min(rotation_error_deg(T_est[:3, :3], (T_gt @ S)[:3, :3]) for S in syms)
