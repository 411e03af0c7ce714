"""SE(3)/SO(3) helpers (numpy, float64). Transforms are 4x4 ``T_a_b``: points in frame b -> a.

se(3) vectors are ``xi = [v (3), w (3)]`` (translation part first, metres / radians);
``se3_exp``/``se3_log`` are inverses for rotation angles in [0, pi) and stay accurate near 0 and
near pi. Quaternions are ``[x, y, z, w]`` (ROS order). Rotation angles come from atan2, which
is accurate at both ends (arccos of the trace loses ~1e-8 rad there).
"""

from __future__ import annotations

import numpy as np

from nol_ros.errors import InputError

_EPS = 1e-9


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, 3) rotation + (3,) translation -> (4, 4)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (exact, no general matrix inverse)."""
    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def compose(*Ts: np.ndarray) -> np.ndarray:
    """compose(T_a_b, T_b_c, ...) = T_a_b @ T_b_c @ ..."""
    out = np.eye(4)
    for T in Ts:
        out = out @ np.asarray(T, dtype=np.float64)
    return out


def transform_points(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(4, 4) @ (N, 3) points -> (N, 3)."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(pts, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def rotate_vectors(R_or_T: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate (N, 3) direction vectors by a (3, 3) rotation or the rotation of a (4, 4)."""
    R = np.asarray(R_or_T, dtype=np.float64)[:3, :3]
    return np.asarray(v, dtype=np.float64) @ R.T


def hat(w: np.ndarray) -> np.ndarray:
    """(3,) -> (3, 3) skew-symmetric matrix with hat(w) @ x = w x x."""
    wx, wy, wz = np.asarray(w, dtype=np.float64)
    return np.array([[0.0, -wz, wy], [wz, 0.0, -wx], [-wy, wx, 0.0]])


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle (3,) radians -> (3, 3) rotation."""
    w = np.asarray(w, dtype=np.float64).reshape(3)
    th = float(np.linalg.norm(w))
    W = hat(w)
    if th < 1e-8:
        return np.eye(3) + W + 0.5 * W @ W
    # (1 - cos th) written as 2 sin^2(th / 2): no cancellation for small angles
    return np.eye(3) + np.sin(th) / th * W + 2.0 * (np.sin(th / 2) / th) ** 2 * W @ W


def _angle_and_axis_vector(R: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Rotation angle in [0, pi] via atan2 (accurate at 0 and pi, unlike arccos), the vector
    v = 2 sin(th) a from the skew part, and cos(th)."""
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.arctan2(0.5 * np.linalg.norm(v), c)), v, float(c)


def so3_log(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> axis-angle (3,) radians, |w| in [0, pi]; accurate to ~1e-12 near 0 and
    near pi (at exactly pi both signs are valid; the one agreeing with the skew part is kept)."""
    R = np.asarray(R, dtype=np.float64)[:3, :3]
    th, v, c = _angle_and_axis_vector(R)
    if th < 1e-6:
        return 0.5 * (1.0 + th * th / 6.0) * v  # th / (2 sin th) to second order
    if np.pi - th < 1e-3:
        # near pi the skew part vanishes; the symmetric part is cos(th) I + (1 - cos(th)) a a^T
        A = ((R + R.T) / 2 - c * np.eye(3)) / (1.0 - c)
        i = int(np.argmax(np.diag(A)))
        a = A[:, i] / np.sqrt(max(A[i, i], _EPS))
        a /= np.linalg.norm(a)
        if a @ v < 0:
            a = -a
        return a * th
    return th / (2.0 * np.sin(th)) * v


def _V(w: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(w))
    W = hat(w)
    if th < 1e-6:
        return np.eye(3) + 0.5 * W + W @ W / 6.0
    return (np.eye(3) + (1 - np.cos(th)) / th**2 * W + (th - np.sin(th)) / th**3 * W @ W)


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """Twist xi = [v (3) m, w (3) rad] -> (4, 4) rigid transform (t = V(w) v)."""
    xi = np.asarray(xi, dtype=np.float64).reshape(6)
    v, w = xi[:3], xi[3:]
    return make_T(so3_exp(w), _V(w) @ v)


def se3_log(T: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform -> twist xi = [v (3), w (3)] with |w| <= pi."""
    T = np.asarray(T, dtype=np.float64)
    w = so3_log(T[:3, :3])
    v = np.linalg.solve(_V(w), T[:3, 3])
    return np.concatenate([v, w])


def R_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    """Quaternion [x, y, z, w] (normalised here) -> (3, 3) rotation."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    n = float(np.linalg.norm(q))
    if not np.isfinite(n) or n < _EPS:
        raise InputError(f"quaternion {q.tolist()} has no direction; give a unit [x, y, z, w]")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def quat_xyzw_from_R(R: np.ndarray) -> np.ndarray:
    """(3, 3) -> unit quaternion [x, y, z, w] with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4, (R[1, 0] - R[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def interpolate_T(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Slerp of the rotation + lerp of the translation; alpha in [0, 1]."""
    T0, T1 = np.asarray(T0, dtype=np.float64), np.asarray(T1, dtype=np.float64)
    dR = so3_log(T0[:3, :3].T @ T1[:3, :3])
    R = T0[:3, :3] @ so3_exp(alpha * dR)
    return make_T(R, (1 - alpha) * T0[:3, 3] + alpha * T1[:3, 3])


def random_unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def perturb_T(T: np.ndarray, trans_m: float, rot_rad: float, rng: np.random.Generator,
              mode: str = "uniform") -> np.ndarray:
    """Perturb a pose in its own frame: T @ exp([dt, dw]).

    mode "uniform": each translation component ~ U(-trans_m, trans_m), each rotation component
    ~ U(-rot_rad, rot_rad) (the paper's Table B.1); "gauss": N(0, sigma) per component;
    "fixed": a random direction with exactly |dt| = trans_m and |dw| = rot_rad.
    """
    if mode == "uniform":
        dt = rng.uniform(-trans_m, trans_m, 3)
        dw = rng.uniform(-rot_rad, rot_rad, 3)
    elif mode == "gauss":
        dt = rng.normal(0, trans_m, 3)
        dw = rng.normal(0, rot_rad, 3)
    elif mode == "fixed":
        dt = random_unit_vectors(1, rng)[0] * trans_m
        dw = random_unit_vectors(1, rng)[0] * rot_rad
    else:
        raise InputError(f"perturb mode '{mode}' unknown; use uniform, gauss or fixed")
    return np.asarray(T, dtype=np.float64) @ make_T(so3_exp(dw), dt)


def fit_rigid(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Least-squares rigid transform T (4, 4) with B ~ R A + t (Kabsch; reflections excluded)
    for (N, 3) point sets, or for a batch (H, N, 3) -> (H, 4, 4) in one vectorised call."""
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    one = A.ndim == 2
    if one:
        A, B = A[None], B[None]
    ca, cb = A.mean(1, keepdims=True), B.mean(1, keepdims=True)
    H = np.einsum("hni,hnj->hij", A - ca, B - cb)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("hij,hjk->hik", Vt.transpose(0, 2, 1),
                                        U.transpose(0, 2, 1))))
    D = np.tile(np.eye(3), (len(A), 1, 1))
    D[:, 2, 2] = d
    R = Vt.transpose(0, 2, 1) @ D @ U.transpose(0, 2, 1)
    T = np.tile(np.eye(4), (len(A), 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = cb[:, 0] - np.einsum("hij,hj->hi", R, ca[:, 0])
    return T[0] if one else T


def rotation_angle(R: np.ndarray) -> float:
    """Rotation angle of a (3, 3) rotation (or the rotation of a (4, 4)), radians in [0, pi]."""
    return _angle_and_axis_vector(np.asarray(R, dtype=np.float64)[:3, :3])[0]


def rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of R_a^T R_b in degrees, [0, 180]. Accepts (3, 3) rotations or (4, 4) poses."""
    R_a = np.asarray(R_a, dtype=np.float64)[:3, :3]
    R_b = np.asarray(R_b, dtype=np.float64)[:3, :3]
    return float(np.degrees(rotation_angle(R_a.T @ R_b)))


def translation_error_m(t_a: np.ndarray, t_b: np.ndarray) -> float:
    """Euclidean distance of two (3,) translations (or the translations of (4, 4) poses), m."""
    t_a, t_b = np.asarray(t_a, dtype=np.float64), np.asarray(t_b, dtype=np.float64)
    if t_a.shape == (4, 4):
        t_a = t_a[:3, 3]
    if t_b.shape == (4, 4):
        t_b = t_b[:3, 3]
    return float(np.linalg.norm(t_a.reshape(3) - t_b.reshape(3)))


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_camera of an optical-frame camera at ``eye`` looking at ``target`` (z forward,
    x right, y down), with image 'up' as close to ``up`` as possible."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    n = np.linalg.norm(z)
    if n < _EPS:
        raise InputError("look_at: eye and target coincide")
    z /= n
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking straight along up
        x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_T(np.stack([x, y, z], axis=1), eye)
