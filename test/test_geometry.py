"""SE(3)/SO(3) identities, exp/log round trips (incl. near 0 and pi), quaternions, look_at."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nol_ros import geometry as g
from nol_ros.errors import InputError

RNG = np.random.default_rng(42)


def rand_T(rng=RNG):
    return g.make_T(Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(),
                    rng.normal(size=3))


def test_compose_invert_transform_points():
    A, B = rand_T(), rand_T()
    P = RNG.normal(size=(20, 3))
    np.testing.assert_allclose(g.transform_points(g.compose(A, B), P),
                               g.transform_points(A, g.transform_points(B, P)), atol=1e-12)
    np.testing.assert_allclose(g.compose(A, g.invert_T(A)), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(g.invert_T(A), np.linalg.inv(A), atol=1e-12)
    np.testing.assert_allclose(g.rotate_vectors(A, P), P @ A[:3, :3].T, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 0.3, 2.0, np.pi - 1e-3, np.pi - 1e-5,
                                   np.pi - 1e-7, np.pi])
def test_so3_exp_log_round_trip(angle):
    rng = np.random.default_rng(int(angle * 1e6) % 1000)
    for _ in range(20):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        w = axis * angle
        R = g.so3_exp(w)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(R, Rotation.from_rotvec(w).as_matrix(), atol=1e-12)
        w2 = g.so3_log(R)
        if angle < np.pi:  # the log is unique: recover the vector itself
            np.testing.assert_allclose(w2, w, atol=1e-9)
        else:  # exactly pi: +w and -w are the same rotation
            assert min(np.abs(w2 - w).max(), np.abs(w2 + w).max()) < 1e-9
        np.testing.assert_allclose(g.so3_exp(w2), R, atol=1e-12)
        assert g.rotation_angle(R) == pytest.approx(angle, abs=1e-12)


def test_rotation_error_is_accurate_for_tiny_and_half_turn_rotations():
    R = Rotation.random(random_state=3).as_matrix()
    for ang in (1e-7, 1e-3, 1.0, np.pi - 1e-6):
        D = Rotation.from_rotvec(ang * np.array([0.6, 0.0, 0.8])).as_matrix()
        # relative accuracy for tiny angles (arccos of the trace would give ~1e-6 deg noise)
        assert g.rotation_error_deg(R, R @ D) == pytest.approx(np.degrees(ang), rel=1e-6)
    T = g.make_T(R, [1.0, 2.0, 3.0])
    assert g.translation_error_m(T, g.make_T(R, [1.0, 2.0, 3.5])) == pytest.approx(0.5)
    assert g.rotation_error_deg(T, T) == 0.0


def test_se3_exp_log_and_derivative():
    for _ in range(10):
        xi = RNG.normal(size=6) * [0.5, 0.5, 0.5, 1, 1, 1]
        np.testing.assert_allclose(g.se3_log(g.se3_exp(xi)), xi, atol=1e-9)
    # near a half turn and near zero rotation
    for ang in (np.pi - 1e-6, 1e-9):
        w = ang * np.array([0.0, 0.6, 0.8])
        xi = np.r_[0.3, -0.2, 0.1, w]
        np.testing.assert_allclose(g.se3_log(g.se3_exp(xi)), xi, atol=1e-8)
    # se3_exp against the matrix exponential of the 4x4 twist (independent reference)
    from scipy.linalg import expm

    xi = np.array([0.2, -0.1, 0.4, 0.5, -1.0, 0.7])
    X = np.zeros((4, 4))
    X[:3, :3], X[:3, 3] = g.hat(xi[3:]), xi[:3]
    np.testing.assert_allclose(g.se3_exp(xi), expm(X), atol=1e-12)
    # exp of a small twist ~ I + hat(xi)
    xi = np.array([1e-4, -2e-4, 3e-4, 1e-4, 2e-4, -1e-4])
    T = g.se3_exp(xi)
    np.testing.assert_allclose(T[:3, 3], xi[:3], atol=1e-7)
    np.testing.assert_allclose(T[:3, :3], np.eye(3) + g.hat(xi[3:]), atol=1e-7)


def test_quaternions_match_scipy_and_round_trip():
    for _ in range(20):
        R = Rotation.random(random_state=RNG.integers(1 << 31)).as_matrix()
        q = g.quat_xyzw_from_R(R)
        qs = Rotation.from_matrix(R).as_quat()
        assert np.allclose(q, qs, atol=1e-10) or np.allclose(q, -qs, atol=1e-10)
        np.testing.assert_allclose(g.R_from_quat_xyzw(q), R, atol=1e-12)
    with pytest.raises(InputError, match="quaternion"):
        g.R_from_quat_xyzw([0, 0, 0, 0])


def test_interpolate_and_perturb_and_errors():
    A, B = rand_T(), rand_T()
    np.testing.assert_allclose(g.interpolate_T(A, B, 0), A, atol=1e-12)
    np.testing.assert_allclose(g.interpolate_T(A, B, 1), B, atol=1e-9)
    M = g.interpolate_T(A, B, 0.5)
    assert g.rotation_error_deg(A, M) == pytest.approx(g.rotation_error_deg(M, B), abs=1e-6)
    rng = np.random.default_rng(0)
    P = g.perturb_T(A, 0.01, np.radians(3), rng, mode="fixed")
    assert g.translation_error_m(P[:3, 3], A[:3, 3]) == pytest.approx(0.01, abs=1e-12)
    assert g.rotation_error_deg(P, A) == pytest.approx(3.0, abs=1e-9)
    U = [g.perturb_T(np.eye(4), 0.01, 0.05, rng) for _ in range(200)]
    assert max(np.abs(T[:3, 3]).max() for T in U) <= 0.01
    with pytest.raises(Exception, match="unknown"):
        g.perturb_T(A, 0.01, 0.01, rng, mode="bogus")


def test_look_at_is_optical_frame():
    eye, tgt = np.array([1.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0])
    T = g.look_at(eye, tgt)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
    # target is straight ahead (+z), world up appears as image up (-y)
    p = g.transform_points(g.invert_T(T), tgt[None])[0]
    assert p[0] == pytest.approx(0) and p[1] == pytest.approx(0) and p[2] > 0
    up = g.rotate_vectors(g.invert_T(T), np.array([[0, 0, 1.0]]))[0]
    assert up[1] < 0


def test_fit_rigid_single_and_batched_recovers_rotations_never_reflections():
    rng = np.random.default_rng(7)
    A = rng.normal(0, 0.1, (5, 20, 3))
    Ts = [g.make_T(g.so3_exp(rng.normal(0, 2, 3)), rng.normal(0, 1, 3)) for _ in range(5)]
    B = np.stack([a @ T[:3, :3].T + T[:3, 3] for a, T in zip(A, Ts)])
    assert np.allclose(g.fit_rigid(A, B), np.stack(Ts), atol=1e-9)
    assert np.allclose(g.fit_rigid(A[0], B[0]), Ts[0], atol=1e-9)
    # a mirrored point set: the best proper rotation, det +1, not the reflection
    M = g.fit_rigid(A[1], A[1] * [1, 1, -1])
    assert np.linalg.det(M[:3, :3]) == pytest.approx(1.0)
