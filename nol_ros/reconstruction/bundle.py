"""Feature bundle adjustment over the tracker's keyframes (the offline chain's last step).

The keyframe pose graph (dense loop edges, :meth:`RgbdTracker.close_loops`) leaves the error of
the fast, blurred turns in the keyframes' poses (TUM fr1/desk: 2.42 cm ATE over the keyframes
alone). Here the keyframes' ORB features (the re-localiser's, :class:`KeyframeFeatures`) are
matched between every pair of keyframes whose poses say they overlap, the matches are chained
into landmarks, and the keyframe poses and landmark positions are optimised together with the
dense constraints:

- reprojection residuals in pixels (sigma grows with the keypoint's pyramid octave);
- depth residuals with a wide sigma (``depth_sigma_m`` at 1 m, growing with depth squared):
  corners lie on depth edges and a Kinect's depth and colour are not taken at the same
  instant, so the measured depth of a keypoint is a weak cue (fr1/desk with 1000 features a
  keyframe and a 1 cm / 1 deg prior, measured: sigma 3 mm 2.02 cm ATE, 3 cm 1.69 cm);
- relative-pose priors from the dense alignment: consecutive keyframes (the tracking) and the
  pose graph's loop edges, each group with ``odometry_sigma_m`` / ``odometry_sigma_deg`` to
  start with. They keep keyframes with few features in place.

How much each group is trusted is measured, not fixed: after a solve, each group's sigmas are
scaled by the robust spread (1.4826 x median |r|) of its whitened residuals, and the problem is
solved again (``sigma_rounds``; the feature groups' spread corrected for the share of their
degrees of freedom the landmarks take). Where the dense alignment is excellent (the synthetic
world: loop edges within 0.5 mm of the truth) it wins; where blur and sensor timing spoil it (a
real hand-held Kinect) the features do. Measured (ATE cm, rounds 0 / 1 / 2 / 3 / 4, before the
correction): fr1/desk 1.77 / 1.81 / 1.88 / 1.94 / 1.98 (2.40 without adjustment); the
synthetic demo world 0.62 / 0.27 / 0.21 / 0.18 / 0.16 (0.15 without; its checkered floor gives
repeated features). With the correction and 2 rounds (the default): 1.86 and 0.22.

Robust (Huber on every residual) Levenberg-Marquardt with the landmarks eliminated by the Schur
complement. The first keyframe is held fixed (the gauge). Pure numpy/scipy/OpenCV; poses are
``T_world_camera``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from nol_ros.geometry import so3_exp, so3_log
from nol_ros.reconstruction.relocalise import KeyframeFeatures, ratio_test_matches


@dataclass(frozen=True)
class BundleConfig:
    max_pair_dist_m: float = 0.8      # keyframes this close (centres) ...
    max_pair_angle_deg: float = 45.0  # ... and turned this little are matched ...
    max_pair_candidates: int = 0      # ... with at most this many earlier ones, nearest first
    ratio: float = 0.8                # Lowe's ratio test of the ORB matches
    min_matches: int = 12             # a pair with fewer consistent matches adds none
    gate_m: float = 0.05              # a match's 3D points (current poses) this close, at most
    pixel_sigma: float = 1.0          # reprojection sigma at octave 0 (x 1.2 per octave)
    depth_sigma_m: float = 0.03       # depth sigma at 1 m (x depth^2, x the octave's scale)
    odometry_sigma_m: float = 0.003   # initial sigma of the dense relative-pose priors ...
    odometry_sigma_deg: float = 0.3   # ... (consecutive keyframes, loop edges)
    huber: float = 2.0                # robust kernel, in sigmas
    iterations: int = 15
    sigma_rounds: int = 2             # re-estimate each residual group's sigma this often
    max_shift_m: float = 0.10         # a keyframe moved further than this: result refused


@dataclass
class BundleResult:
    T_world_kf: np.ndarray   # (n, 4, 4) the adjusted keyframe poses
    landmarks: int
    observations: int
    pairs: int
    cost_before: float
    cost_after: float
    iterations: int


def ratio_matches(fi: KeyframeFeatures, fj: KeyframeFeatures, cfg: BundleConfig
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """ORB matches of keyframe j's features onto keyframe i's that pass Lowe's ratio test:
    indices (a into fj, b into fi), or None when fewer than ``min_matches``. Depends on the
    descriptors only."""
    if len(fi.desc) < cfg.min_matches or len(fj.desc) < cfg.min_matches:
        return None
    a, b = ratio_test_matches(fj.desc, fi.desc, cfg.ratio)
    return (a, b) if len(a) >= cfg.min_matches else None


def _gate(fi: KeyframeFeatures, fj: KeyframeFeatures, T_i_j: np.ndarray, matches,
          cfg: BundleConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The ratio-test ``matches`` whose 3D points agree within ``gate_m`` under the relative
    pose T_i_j (None when fewer than ``min_matches`` do)."""
    if matches is None:
        return None
    a, b = matches
    p = fj.pts[a].astype(np.float64) @ T_i_j[:3, :3].T + T_i_j[:3, 3]
    keep = np.linalg.norm(p - fi.pts[b], axis=1) < cfg.gate_m
    if keep.sum() < cfg.min_matches:
        return None
    return a[keep], b[keep]


def nearest_keyframes(T: np.ndarray, T_j: np.ndarray, max_dist_m: float,
                      max_angle_deg: float, max_count: int) -> list[int]:
    """Indices of the poses T (k, 4, 4) within ``max_dist_m`` and ``max_angle_deg`` of T_j,
    nearest first (distance plus 1 cm per degree; ties in index order), at most ``max_count``
    (0: all): the keyframes worth matching with keyframe j, or checking for a loop closure
    with it (:meth:`RgbdTracker._loop_candidates`)."""
    if len(T) == 0:
        return []
    dist = np.linalg.norm(T[:, :3, 3] - T_j[:3, 3], axis=1)
    cos = (np.einsum("kij,ij->k", T[:, :3, :3], T_j[:3, :3]) - 1.0) / 2.0
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    ok = np.flatnonzero((dist <= max_dist_m) & (ang <= max_angle_deg))
    ok = ok[np.argsort(dist[ok] + 0.01 * ang[ok], kind="stable")]
    return (ok[:max_count] if max_count > 0 else ok).tolist()


def build_landmarks(T: np.ndarray, feats: list[KeyframeFeatures], cfg: BundleConfig,
                    pool: Executor | None = None):
    """Match the overlapping keyframe pairs (on ``pool``, when given) and chain the matches
    into landmarks.

    T: (n, 4, 4) T_world_kf; feats: n keyframes' features (empty ones take no part).
    Returns (X (L, 3) world points, cam (m,), lm (m,), uv (m, 2), z (m,), octave (m,), pairs
    matched). A landmark keeps at most one observation per keyframe (the one nearest the
    median of its world points); observations further than ``gate_m`` from it are dropped.
    """
    pairs = [(i, j) for j in range(len(T)) for i in nearest_keyframes(
        T[:j], T[j], cfg.max_pair_dist_m, cfg.max_pair_angle_deg, cfg.max_pair_candidates)]
    mapper = pool.map if pool is not None else map
    ratio = mapper(lambda p: ratio_matches(feats[p[0]], feats[p[1]], cfg), pairs)
    found = [_gate(feats[i], feats[j], np.linalg.inv(T[i]) @ T[j], m, cfg)
             for (i, j), m in zip(pairs, ratio)]
    offs = np.cumsum([0] + [len(f.uv) for f in feats])
    n_nodes = int(offs[-1])
    kept = [(i, j, m) for (i, j), m in zip(pairs, found) if m is not None]
    src = np.concatenate([offs[j] + m[0] for i, j, m in kept] + [np.zeros(0, np.int64)])
    dst = np.concatenate([offs[i] + m[1] for i, j, m in kept] + [np.zeros(0, np.int64)])
    graph = sp.coo_matrix((np.ones(len(src)), (src, dst)), shape=(n_nodes, n_nodes))
    labels = connected_components(graph, directed=False)[1]
    node = np.flatnonzero(np.bincount(labels)[labels] >= 2)   # keypoints matched at all
    lab = labels[node]
    kf_of = np.repeat(np.arange(len(feats)), np.diff(offs))[node]
    q_of = node - offs[kf_of]
    pts = np.concatenate([f.pts.reshape(-1, 3) for f in feats]).astype(np.float64)[node]
    pw = np.einsum("nij,nj->ni", T[kf_of, :3, :3], pts) + T[kf_of, :3, 3]
    # per connected component (a landmark candidate): the median of its world points
    groups, size = np.unique(lab, return_counts=True)
    centre = np.zeros((len(groups), 3))
    start = np.cumsum(size) - size           # each group's first row in lab's sorted order
    for c in range(3):
        v = pw[np.lexsort((pw[:, c], lab)), c]
        centre[:, c] = 0.5 * (v[start + (size - 1) // 2] + v[start + size // 2])
    g_of = np.searchsorted(groups, lab)
    dist = np.linalg.norm(pw - centre[g_of], axis=1)
    # one observation per keyframe and landmark (the nearest the median), within gate_m
    ok = np.flatnonzero(dist < cfg.gate_m)
    ok = ok[np.lexsort((dist[ok], kf_of[ok], g_of[ok]))]
    first_of_pair = np.ones(len(ok), bool)
    first_of_pair[1:] = (g_of[ok][1:] != g_of[ok][:-1]) | (kf_of[ok][1:] != kf_of[ok][:-1])
    ok = ok[first_of_pair]
    seen = np.bincount(g_of[ok], minlength=len(groups))
    ok = ok[seen[g_of[ok]] >= 2]
    land, lm = np.unique(g_of[ok], return_inverse=True)
    cam, q = kf_of[ok], q_of[ok]
    uv = np.array([feats[k].uv[i] for k, i in zip(cam, q)], np.float64).reshape(-1, 2)
    z = pts[ok, 2]
    octave = np.array([feats[k].octave[i] for k, i in zip(cam, q)], np.float64)
    return centre[land], cam.astype(np.int64), lm.astype(np.int64), uv, z, octave, len(kept)


def _left(d: np.ndarray, T: np.ndarray) -> np.ndarray:
    """exp(d) applied on the left in the world frame: d = [omega (3) rad, v (3) m]."""
    out = T.copy()
    Rw = so3_exp(d[:3])
    out[:3, :3] = Rw @ T[:3, :3]
    out[:3, 3] = Rw @ T[:3, 3] + d[3:]
    return out


def _prior_residual(T_i: np.ndarray, T_j: np.ndarray, T_i_j_inv: np.ndarray,
                    w: np.ndarray) -> np.ndarray:
    """w (6,) * [log R_E, t_E] of E = T_i_j^-1 T_i^-1 T_j: how far the poses' relative pose
    is from the measured T_i_j (6,)."""
    E = T_i_j_inv @ np.linalg.inv(T_i) @ T_j
    return w * np.concatenate([so3_log(E[:3, :3]), E[:3, 3]])


def bundle_adjust(T_world_kf: np.ndarray, feats: list[KeyframeFeatures], K: np.ndarray,
                  cfg: BundleConfig = BundleConfig(), pool: Executor | None = None,
                  loop_edges: Sequence[tuple[int, int, np.ndarray]] = ()
                  ) -> BundleResult | None:
    """Adjust the keyframe poses T_world_kf (n, 4, 4) with their features (n entries) and the
    camera matrix K (3, 3); loop_edges: the pose graph's verified loop edges [(i, j, T_i_j)]
    between keyframes i and j; pool: see :func:`build_landmarks`. Returns None when there
    is nothing to adjust (fewer than 3 keyframes or no landmark) or when the result moves a
    keyframe more than ``max_shift_m`` (a wrong match chain; the input poses are then
    kept)."""
    T0 = np.asarray(T_world_kf, np.float64)
    n = len(T0)
    if n < 3:
        return None
    X, cam, lm, uv, z, octave, pairs = build_landmarks(T0, feats, cfg, pool)
    L, m = len(X), len(cam)
    if L == 0:
        return None
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    scale = 1.2 ** octave
    sig_px = cfg.pixel_sigma * scale
    sig_z = np.maximum(cfg.depth_sigma_m * z ** 2 * scale, 1e-3)
    # relative-pose priors: consecutive keyframes (group 0) and the pose graph's loop edges
    # (group 1); each group's weights [rotation (3), translation (3)]
    edges = [(i, i + 1, np.linalg.inv(np.linalg.inv(T0[i]) @ T0[i + 1])) for i in range(n - 1)]
    edges += [(i, j, np.linalg.inv(T_i_j)) for i, j, T_i_j in loop_edges]
    group = np.array([0] * (n - 1) + [1] * len(loop_edges))
    w_group = np.array([[1.0 / np.radians(cfg.odometry_sigma_deg)] * 3
                        + [1.0 / cfg.odometry_sigma_m] * 3] * 2)
    h = cfg.huber

    def residuals(T, X):
        Tinv = np.linalg.inv(T)
        Rc, tc = Tinv[cam, :3, :3], Tinv[cam, :3, 3]
        pc = np.einsum("mij,mj->mi", Rc, X[lm]) + tc
        zz = pc[:, 2]
        r = np.stack([(fx * pc[:, 0] / zz + cx - uv[:, 0]) / sig_px,
                      (fy * pc[:, 1] / zz + cy - uv[:, 1]) / sig_px,
                      (zz - z) / sig_z], 1)
        pr = np.array([_prior_residual(T[i], T[j], Ti, w_group[g])
                       for (i, j, Ti), g in zip(edges, group)]).reshape(-1, 6)
        return r, pc, Rc, pr

    def cost(r, pr):
        a = np.abs(np.concatenate([r.ravel(), pr.ravel()]))
        return float(np.where(a < h, 0.5 * a * a, h * (a - 0.5 * h)).sum())

    def irls(a):   # Huber weights of whitened residuals
        return np.where(np.abs(a) < h, 1.0, h / np.maximum(np.abs(a), 1e-12))

    rows6 = (6 * cam[:, None, None] + np.arange(6)[None, :, None]).repeat(3, 2)
    cols3 = (3 * lm[:, None, None] + np.arange(3)[None, None, :]).repeat(6, 1)
    lrow = (3 * np.arange(L)[:, None, None] + np.arange(3)[None, :, None]).repeat(3, 2)
    lcol = (3 * np.arange(L)[:, None, None] + np.arange(3)[None, None, :]).repeat(3, 1)
    free = np.ones(6 * n, bool)
    free[:6] = False       # keyframe 0 is the gauge
    T = T0.copy()
    done = 0
    r, pc, Rc, pr = residuals(T, X)
    c_start = cost(r, pr)
    for rnd in range(cfg.sigma_rounds + 1):
        if rnd > 0:
            # each group's sigma from the robust spread of its residuals at the optimum
            def spread(a):
                return float(np.clip(1.4826 * np.median(np.abs(a)), 0.1, 10.0)) if a.size else 1.0
            # the landmarks absorb part of their observations' error: m observations of L
            # landmarks leave m - L of m degrees of freedom per residual component
            red = np.sqrt(m / max(m - L, 1))
            sig_px = sig_px * spread(r[:, :2]) * red
            sig_z = sig_z * spread(r[:, 2]) * red
            for g in (0, 1):
                w_group[g, :3] /= spread(pr[group == g, :3])
                w_group[g, 3:] /= spread(pr[group == g, 3:])
            r, pc, Rc, pr = residuals(T, X)
        c = cost(r, pr)
        lam = 1e-3
        for _ in range(cfg.iterations):
            done += 1
            zz = pc[:, 2]
            Jp = np.zeros((m, 3, 3))
            Jp[:, 0, 0], Jp[:, 0, 2] = fx / zz, -fx * pc[:, 0] / zz ** 2
            Jp[:, 1, 1], Jp[:, 1, 2] = fy / zz, -fy * pc[:, 1] / zz ** 2
            Jp[:, 2, 2] = 1.0
            Jp[:, :2] /= sig_px[:, None, None]
            Jp[:, 2] /= sig_z[:, None]
            JX = Jp @ Rc                                          # d r / d X   (m, 3, 3)
            JT = np.concatenate([JX @ hat_batch(X[lm]), -JX], 2)  # d r / d [w, v] (m, 3, 6)
            wt = irls(r)
            Hpp = np.zeros((n, 6, 6))
            bp = np.zeros((n, 6))
            np.add.at(Hpp, cam, np.einsum("mki,mk,mkj->mij", JT, wt, JT))
            np.add.at(bp, cam, np.einsum("mki,mk->mi", JT, wt * r))
            Hll = np.zeros((L, 3, 3))
            bl = np.zeros((L, 3))
            np.add.at(Hll, lm, np.einsum("mki,mk,mkj->mij", JX, wt, JX))
            np.add.at(bl, lm, np.einsum("mki,mk->mi", JX, wt * r))
            Hpl = np.einsum("mki,mk,mkj->mij", JT, wt, JX)        # (m, 6, 3)
            H = np.zeros((6 * n, 6 * n))
            for k in range(n):
                H[6 * k:6 * k + 6, 6 * k:6 * k + 6] += Hpp[k]
            wp = irls(pr)
            for e, ((i, j, _), g) in enumerate(zip(edges, group)):   # the priors
                Ji, Jj = _prior_jacobians(T[j], w_group[g])
                Wi, Wj = Ji * wp[e][:, None], Jj * wp[e][:, None]   # J^T W J, J^T W r
                si, sj = slice(6 * i, 6 * i + 6), slice(6 * j, 6 * j + 6)
                H[si, si] += Ji.T @ Wi
                H[sj, sj] += Jj.T @ Wj
                H[si, sj] += Ji.T @ Wj
                H[sj, si] += Jj.T @ Wi
                bp[i] += Wi.T @ pr[e]
                bp[j] += Wj.T @ pr[e]
            Hpl_sp = sp.csr_matrix((Hpl.ravel(), (rows6.ravel(), cols3.ravel())),
                                   shape=(6 * n, 3 * L))
            while True:
                Hll_d = Hll + lam * np.einsum("lii->li", Hll)[:, :, None] * np.eye(3) \
                    + 1e-9 * np.eye(3)
                Hll_inv = np.linalg.inv(Hll_d)
                Hinv_sp = sp.csr_matrix((Hll_inv.ravel(), (lrow.ravel(), lcol.ravel())),
                                        shape=(3 * L, 3 * L))
                A = Hpl_sp @ Hinv_sp
                S = H + lam * np.diag(np.maximum(np.diag(H), 1e-9)) - (A @ Hpl_sp.T).toarray()
                rhs = bp.ravel() - A @ bl.ravel()
                dp = np.zeros(6 * n)
                try:
                    dp[free] = -np.linalg.solve(S[np.ix_(free, free)], rhs[free])
                except np.linalg.LinAlgError:
                    lam *= 10
                    if lam > 1e4:
                        break
                    continue
                dl = -np.einsum("lij,lj->li", Hll_inv, bl + (Hpl_sp.T @ dp).reshape(L, 3))
                Tn = np.array([_left(dp[6 * k:6 * k + 6], T[k]) for k in range(n)])
                Xn = X + dl
                rn, pcn, Rcn, prn = residuals(Tn, Xn)
                cn = cost(rn, prn)
                if np.isfinite(cn) and cn < c:
                    gain = (c - cn) / c
                    T, X, r, pc, Rc, pr, c = Tn, Xn, rn, pcn, Rcn, prn, cn
                    lam = max(lam / 3.0, 1e-7)
                    break
                lam *= 5.0
                if lam > 1e4:
                    gain = 0.0
                    break
            if lam > 1e4 or gain < 1e-4:
                break
    shift = np.linalg.norm(T[:, :3, 3] - T0[:, :3, 3], axis=1).max()
    if not np.isfinite(shift) or shift > cfg.max_shift_m:
        return None
    return BundleResult(T, L, m, pairs, c_start, c, done)


def hat_batch(v: np.ndarray) -> np.ndarray:
    """(m, 3) vectors -> (m, 3, 3) cross-product matrices."""
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def _prior_jacobians(T_j: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jacobians (6, 6) of the prior residual w * [log R_E, t_E] of E = T_i_j^-1 T_i^-1 T_j
    wrt left perturbations [omega, v] of T_i and of T_j, to first order at E = I:
    d/d(T_j) = w * Ad(T_j^-1) and d/d(T_i) = -w * Ad(T_j^-1), where Ad(A^-1) maps
    [omega, v] to [R^T omega, R^T (v - t x omega)] for A = [R, t]. Gauss-Newton needs only
    the direction; the residual itself is exact."""
    Rt = T_j[:3, :3].T
    J = np.zeros((6, 6))
    J[:3, :3] = Rt
    J[3:, :3] = -Rt @ np.array([[0, -T_j[2, 3], T_j[1, 3]], [T_j[2, 3], 0, -T_j[0, 3]],
                                [-T_j[1, 3], T_j[0, 3], 0]])
    J[3:, 3:] = Rt
    J = w[:, None] * J
    return -J, J
