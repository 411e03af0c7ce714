"""Offline smoothing of a tracked camera trajectory with a motion prior.

Every frame's tracked pose is a measurement with its own noise: on the real fr1/desk
sequence two frames tracked against the same keyframe differ from the true motion by a few
millimetres and a few tenths of a degree, mostly along the direction the alignment pins down
worst (a turn about the image x axis traded for a shift along y). A camera is a body with
inertia: at 30 Hz its velocity changes little between frames. The smoother finds the poses
that stay close to the tracked ones and whose velocity changes least, a fixed-interval
(two-sided) smoother, so it belongs to the offline path only (the live node publishes the
tracked pose).

Unknowns are right perturbations of every pose, T_i' = T_i [exp(omega_i), rho_i]. Residuals
(Huber-weighted, Gauss-Newton):

- measurement, per trusted frame: [t, log R] of M_i^-1 T_i' (M_i the tracked pose) over
  ``sigma_pose_m`` / ``sigma_pose_deg``;
- motion, per three consecutive frames of a segment: the change of the body velocity
  u_i = log(T_i^-1 T_{i+1}) / dt_i (the SE(3) twist: constant along a screw motion, so a
  camera circling a table at a steady pace costs nothing), (u_i - u_{i-1}) /
  (sigma_accel * tau_i) with tau_i the mean of the two intervals.

A segment ends where a frame is not trusted, where the caller says so (a re-localisation)
or where two frames are more than ``max_gap_s`` apart; frames that are not trusted keep
their poses, and the trajectory's first frame keeps its pose. A segment whose smoothed poses
stray beyond ``max_spread`` measurement sigmas has motion rougher than the prior allows: its
acceleration sigmas are loosened x4 (at most ``max_loosen`` times), then it is left as
tracked. The defaults: the pose noise measured on fr1/desk; the accelerations those of a
hand-held or robot-carried camera (2 m/s^2, 180 deg/s^2; on fr1/desk 0.5 m/s^2 fits better,
on the synthetic table world 2-4 m/s^2, BENCHMARKS.md). Shapes: T (N, 4, 4), stamps (N,)
seconds, trusted (N,) bool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from nol_ros.errors import InputError
from nol_ros.geometry import se3_log, so3_exp, so3_log
from nol_ros.reconstruction.bundle import hat_batch


@dataclass(frozen=True)
class SmootherConfig:
    sigma_pose_m: float = 0.0025      # noise of one tracked pose, translation (m)
    sigma_pose_deg: float = 0.25      # noise of one tracked pose, rotation (deg)
    sigma_accel_m_s2: float = 2.0     # the camera's typical acceleration (m/s^2)
    sigma_accel_deg_s2: float = 180.0 # the camera's typical angular acceleration (deg/s^2)
    max_gap_s: float = 0.2            # no motion prior across a longer gap between frames (s)
    huber: float = 2.0                # Huber threshold on every residual (in sigmas)
    iterations: int = 3               # Gauss-Newton iterations
    max_spread: float = 1.0           # poses may stray this far from the tracked (robust sigmas)
    max_loosen: int = 3               # at most this many x4 loosenings of the motion prior


def _segments(stamps: np.ndarray, trusted: np.ndarray, breaks: np.ndarray,
              max_gap_s: float) -> list[np.ndarray]:
    """Runs of >= 3 consecutive trusted frames with no break and no gap > max_gap_s."""
    out, cur = [], []
    for i in range(len(stamps)):
        if not trusted[i]:
            cur = _close(out, cur)
            continue
        if cur and (breaks[i] or not 0 < stamps[i] - stamps[cur[-1]] <= max_gap_s):
            cur = _close(out, cur)
        cur.append(i)
    _close(out, cur)
    return out


def _close(out: list, cur: list) -> list:
    if len(cur) >= 3:
        out.append(np.array(cur))
    return []


def _velocities(T: np.ndarray, dt: np.ndarray):
    """Body velocities of consecutive poses T (n, 4, 4) over dt (n-1,) s: u (n-1, 6), the
    twist [v, w] of T_i^-1 T_{i+1} per second (exactly constant along a screw motion), and
    the relative poses' rotations R_D (n-1, 3, 3), translations t_D (n-1, 3) and rotation
    vectors phi_D (n-1, 3)."""
    D = np.linalg.inv(T[:-1]) @ T[1:]
    xi = np.array([se3_log(d) for d in D])
    return xi / dt[:, None], D[:, :3, :3], D[:, :3, 3], xi[:, 3:]


def _measured(Minv: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far the poses T (n, 4, 4) are from the tracked ones (Minv: their inverses):
    E = M^-1 T (n, 4, 4) and [t, log R] of E (n, 6)."""
    E = Minv @ T
    return E, np.concatenate([E[:, :3, 3], np.array([so3_log(R) for R in E[:, :3, :3]])], 1)


def _system(T: np.ndarray, Minv: np.ndarray, dt: np.ndarray, sig: np.ndarray, huber: float):
    """Jacobian J (sparse, rows: n measurement blocks then n-2 motion blocks of 6) and
    weighted residuals r at poses T (n, 4, 4); sig (4,): measurement translation (m) and
    rotation (rad), acceleration translation (m/s^2) and rotation (rad/s^2). Jacobians to
    first order in the per-frame motion and in the distance from the tracked poses."""
    n = len(T)
    w_m = np.r_[np.full(3, 1.0 / sig[0]), np.full(3, 1.0 / sig[1])]
    s_a = np.r_[np.full(3, sig[2]), np.full(3, sig[3])]
    tau = 0.5 * (dt[:-1] + dt[1:])                       # (n-2,)
    E, e = _measured(Minv, T)
    phi_E = e[:, 3:]
    r_m = e * w_m
    Jm = np.zeros((n, 6, 6))
    Jm[:, :3, :3] = E[:, :3, :3]
    Jm[:, 3:, 3:] = np.eye(3) + 0.5 * hat_batch(phi_E)   # inverse right Jacobian of SO(3)
    Jm *= w_m[None, :, None]
    u, R_D, t_D, phi = _velocities(T, dt)
    # first-order change of u_i with the right perturbations xi_i (A) and xi_{i+1} (B):
    # d phi_D = Jr^-1 (omega_{i+1} - R_D^T omega_i), d t_D = R_D rho_{i+1} - rho_i + t_D x omega_i,
    # d v_D = V^-1 d t_D + 1/2 t_D x d phi_D
    P, Tx = hat_batch(phi), hat_batch(t_D)
    Vinv = np.eye(3) - 0.5 * P
    Jr_inv = np.eye(3) + 0.5 * P
    Rt = np.transpose(R_D, (0, 2, 1))
    A = np.zeros((n - 1, 6, 6))
    B = np.zeros((n - 1, 6, 6))
    A[:, 3:, 3:] = -Jr_inv @ Rt
    A[:, :3, :3] = -Vinv
    A[:, :3, 3:] = Vinv @ Tx + 0.5 * Tx @ A[:, 3:, 3:]
    B[:, 3:, 3:] = Jr_inv
    B[:, :3, :3] = Vinv @ R_D
    B[:, :3, 3:] = 0.5 * Tx @ Jr_inv
    A /= dt[:, None, None]
    B /= dt[:, None, None]
    scale = 1.0 / (s_a[None, :] * tau[:, None])          # (n-2, 6)
    r_a = (u[1:] - u[:-1]) * scale
    # Huber, per block on its normalised length (a frame or a jolt, not one axis)
    nm, na = np.linalg.norm(r_m, axis=1), np.linalg.norm(r_a, axis=1)
    hw_m = np.sqrt(np.where(nm > huber, huber / np.maximum(nm, 1e-12), 1.0))
    hw_a = np.sqrt(np.where(na > huber, huber / np.maximum(na, 1e-12), 1.0))
    # motion block i (frames i, i+1, i+2): u_{i+1} - u_i -> -A_i, A_{i+1} - B_i, B_{i+1}
    S = (scale * hw_a[:, None])[:, :, None]
    blocks = [(Jm * hw_m[:, None, None], np.arange(n), np.arange(n)),
              (-A[:-1] * S, n + np.arange(n - 2), np.arange(n - 2)),
              ((A[1:] - B[:-1]) * S, n + np.arange(n - 2), np.arange(1, n - 1)),
              (B[1:] * S, n + np.arange(n - 2), np.arange(2, n))]
    ii, jj, vv = [], [], []
    for blk, rb, cb in blocks:
        r_idx = 6 * rb[:, None, None] + np.arange(6)[None, :, None]
        c_idx = 6 * cb[:, None, None] + np.arange(6)[None, None, :]
        ii.append(np.broadcast_to(r_idx, blk.shape).ravel())
        jj.append(np.broadcast_to(c_idx, blk.shape).ravel())
        vv.append(blk.ravel())
    J = sp.csr_matrix((np.concatenate(vv), (np.concatenate(ii), np.concatenate(jj))),
                      shape=(6 * n + 6 * (n - 2), 6 * n))
    r = np.concatenate([(r_m * hw_m[:, None]).ravel(), (r_a * hw_a[:, None]).ravel()])
    return J, r


def _solve(M: np.ndarray, Minv: np.ndarray, dt: np.ndarray, sig: np.ndarray, huber: float,
           iterations: int, fix_first: bool) -> np.ndarray:
    """Gauss-Newton from the tracked poses M (n, 4, 4): the smoothed poses (n, 4, 4); with
    fix_first the first pose is held where it is (the trajectory's first frame defines the
    world)."""
    n = len(M)
    T = M.copy()
    k = 1 if fix_first else 0
    for _ in range(max(1, iterations)):
        J, r = _system(T, Minv, dt, sig, huber)
        J = J[:, 6 * k:]
        dx = np.zeros((n, 6))
        dx[k:] = spsolve((J.T @ J).tocsc(), -(J.T @ r)).reshape(n - k, 6)
        T[:, :3, 3] += np.einsum("nij,nj->ni", T[:, :3, :3], dx[:, :3])
        T[:, :3, :3] = T[:, :3, :3] @ np.array([so3_exp(w) for w in dx[:, 3:]])
        if np.abs(dx).max() < 1e-7:
            break
    return T


def _spread(Minv: np.ndarray, T: np.ndarray, sig: np.ndarray) -> float:
    """Robust spread of the smoothed poses T (n, 4, 4) about the tracked ones (Minv: their
    inverses) in units of the measurement sigmas: the median normalised 6-vector length over
    its median under the model (2.31 for six unit normals); ~1 when the motion prior and the
    tracked poses agree, well above where the prior is too tight for the motion."""
    e = _measured(Minv, T)[1] / np.repeat(sig[:2], 3)
    return float(np.median(np.linalg.norm(e, axis=1)) / 2.31)


def _smooth_segment(M: np.ndarray, dt: np.ndarray, cfg: SmootherConfig, fix_first: bool
                    ) -> tuple[np.ndarray, float]:
    """Smoothed poses (n, 4, 4) of one segment of tracked poses M (n, 4, 4), dt (n-1,) s
    (fix_first: see :func:`_solve`), and the factor the accelerations' sigmas needed: x4
    while the smoothed poses stray beyond ``max_spread`` measurement sigmas (motion rougher
    than the prior: a fast robot arm, frames further apart than their stamps say)."""
    base = np.array([cfg.sigma_pose_m, np.radians(cfg.sigma_pose_deg), cfg.sigma_accel_m_s2,
                     np.radians(cfg.sigma_accel_deg_s2)])
    Minv = np.linalg.inv(M)
    f = 1.0
    for _ in range(cfg.max_loosen + 1):
        sig = base * np.array([1.0, 1.0, f, f])
        T = _solve(M, Minv, dt, sig, cfg.huber, cfg.iterations, fix_first)
        if _spread(Minv, T, sig) <= cfg.max_spread:
            return T, f
        f *= 4.0
    return M.copy(), np.inf


def smooth_trajectory(T_world_camera: np.ndarray, stamps_s: np.ndarray, trusted: np.ndarray,
                      cfg: SmootherConfig = SmootherConfig(),
                      breaks: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Smoothed camera poses (N, 4, 4) of a tracked trajectory T_world_camera (N, 4, 4) with
    stamps_s (N,) seconds and trusted (N,) bool, and the number of frames smoothed; breaks
    (N,) bool: a new segment starts at these frames (re-localised ones: their pose is not
    tied to the previous frame's by tracking). The first frame keeps its pose (it defines
    the world frame). Frames outside a segment of >= 3 keep their poses, and so does a segment
    whose motion is too rough for the prior even loosened ``max_loosen`` times."""
    T = np.asarray(T_world_camera, np.float64)
    st = np.asarray(stamps_s, np.float64)
    ok = np.asarray(trusted, bool)
    if not (len(T) == len(st) == len(ok)):
        raise InputError(f"{len(T)} poses, {len(st)} stamps and {len(ok)} trusted flags: "
                         "give one of each per frame")
    br = np.zeros(len(T), bool) if breaks is None else np.asarray(breaks, bool)
    out = T.copy()
    used = 0
    for seg in _segments(st, ok, br, cfg.max_gap_s):
        out[seg], f = _smooth_segment(T[seg], np.diff(st[seg]), cfg, seg[0] == 0)
        used += len(seg) if np.isfinite(f) else 0
    return out, used
