"""Metrics against hand-computed values."""

import numpy as np
import pytest

from nol_ros import metrics as M
from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import make_T, so3_exp


def test_add_adi_hand_values():
    pts = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    Id = np.eye(3)
    assert M.add(Id, [0, 0, 0.1], Id, [0, 0, 0], pts) == pytest.approx(0.1)
    R90 = so3_exp([0, 0, np.pi / 2])  # maps the point set onto itself
    assert M.add(R90, [0, 0, 0], Id, [0, 0, 0], pts) == pytest.approx(np.sqrt(2))
    assert M.adi(R90, [0, 0, 0], Id, [0, 0, 0], pts) == pytest.approx(0.0, abs=1e-12)
    assert M.add_s(R90, [0, 0, 0], Id, [0, 0, 0], pts, symmetric=True) == pytest.approx(0, abs=1e-9)


def test_mssd_mspd_with_symmetries():
    pts = np.array([[0.1, 0, 0], [-0.1, 0, 0]])
    Id = np.eye(3)
    R180 = so3_exp([0, 0, np.pi])
    assert M.mssd(R180, [0, 0, 0.5], Id, [0, 0, 0.5], pts) == pytest.approx(0.2)
    syms = [np.eye(4), make_T(R180, np.zeros(3))]
    assert M.mssd(R180, [0, 0, 0.5], Id, [0, 0, 0.5], pts, syms) == pytest.approx(0, abs=1e-12)
    K = np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1.0]])
    # 1 cm shift at 0.5 m with f = 500 -> 10 px
    assert M.mspd(Id, [0.01, 0, 0.5], Id, [0, 0, 0.5], pts, K) == pytest.approx(10.0)
    s = M.symmetry_transforms(continuous_axes=[[0, 0, 1]], n_continuous=4)
    assert len(s) == 4


def test_ate_and_rpe():
    rng = np.random.default_rng(0)
    gt = [make_T(so3_exp(rng.normal(size=3) * 0.1), rng.normal(size=3)) for _ in range(20)]
    A = make_T(so3_exp([0.1, 0.2, 0.3]), [1, 2, 3])
    est = [np.linalg.inv(A) @ T for T in gt]  # the same trajectory in another world frame
    e, _ = M.ate_rmse(est, gt)
    assert e == pytest.approx(0, abs=1e-9)
    assert M.ate_rmse(est, gt, align=False)[0] > 1.0
    t, r = M.rpe(est, gt)
    assert t == pytest.approx(0, abs=1e-9) and r == pytest.approx(0, abs=1e-5)
    noisy = [T @ make_T(np.eye(3), [0.01, 0, 0]) if i % 2 else T for i, T in enumerate(gt)]
    t, _ = M.rpe(noisy, gt)
    assert t == pytest.approx(0.01, rel=1e-6)


def test_masked_psnr_ssim():
    rng = np.random.default_rng(1)
    ref = rng.random((32, 32, 3))
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    img = ref.copy()
    img[mask] += 0.1
    img[~mask] = 0  # outside the mask does not matter
    assert M.masked_psnr(img, ref, mask) == pytest.approx(20.0)
    assert M.masked_ssim(ref, ref, mask) == pytest.approx(1.0)
    assert M.masked_ssim(img, ref, mask) < 1.0
    with pytest.raises(Exception, match="empty"):
        M.masked_psnr(img, ref, np.zeros((32, 32), bool))
    with pytest.raises(M.MissingWeightsError, match="weights"):
        M.lpips_distance(img, ref)


def test_adi_and_mspd_hand_values():
    pts = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    Id = np.eye(3)
    # estimate shifted 0.6 m along x: ADD 0.6; ADI: gt point 0 -> 0.6, gt point 1 -> 0.4
    assert M.add(Id, [0.6, 0, 0], Id, [0, 0, 0], pts) == pytest.approx(0.6)
    assert M.adi(Id, [0.6, 0, 0], Id, [0, 0, 0], pts) == pytest.approx(0.5)
    assert M.add_s(Id, [0.6, 0, 0], Id, [0, 0, 0], pts, symmetric=False) == pytest.approx(0.6)
    two = np.array([[0.1, 0, 0], [-0.1, 0, 0]])
    R180 = so3_exp([0, 0, np.pi])
    intr = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    # the two points swap: 0.2 m apart at 0.5 m depth with f = 500 -> 200 px
    assert M.mspd(R180, [0, 0, 0.5], Id, [0, 0, 0.5], two, intr) == pytest.approx(200.0)
    assert M.mspd(R180, [0, 0, 0.5], Id, [0, 0, 0.5], two, intr,
                  sym_Rs=[np.eye(3), R180]) == pytest.approx(0, abs=1e-9)
    with pytest.raises(InputError, match="pts"):
        M.add(Id, [0, 0, 0], Id, [0, 0, 0], np.zeros((3, 2)))


def test_symmetries_from_models_info():
    # continuous symmetry about the z axis through x = 10 mm, and a 180-degree turn about it
    flip = [-1, 0, 0, 20, 0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    info = {"diameter": 100.0, "symmetries_continuous": [{"axis": [0, 0, 1],
                                                          "offset": [10, 0, 0]}],
            "symmetries_discrete": [flip]}
    syms = M.symmetries_from_models_info(info, max_sym_disc_step=0.01)
    n = int(np.ceil(np.pi / 0.01))  # 315 steps per turn
    assert len(syms) == 2 * n
    on_axis = np.array([0.01, 0.0, 0.05, 1.0])
    for S in syms:
        np.testing.assert_allclose(S @ on_axis, on_axis, atol=1e-12)
    # a ring around the axis maps onto itself: MSSD of a rotated estimate is ~0 with the
    # symmetries (at most one discretisation step), large without
    a = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    ring = np.c_[0.01 + 0.03 * np.cos(a), 0.03 * np.sin(a), np.zeros_like(a)]
    R = so3_exp([0, 0, 1.0])
    t_est = np.array([0.01, 0, 0.5]) - R @ [0.01, 0, 0]  # rotation about the offset axis
    assert M.mssd(R, t_est, np.eye(3), [0, 0, 0.5], ring) > 0.02
    step_arc = 0.03 * 2 * np.pi / n
    assert M.mssd(R, t_est, np.eye(3), [0, 0, 0.5], ring, syms) < step_arc
    assert len(M.symmetries_from_models_info({"diameter": 1.0})) == 1


def test_ate_and_umeyama_hand_values():
    corners = np.array([[1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]], float)
    A = make_T(so3_exp([0.3, -0.2, 0.5]), [1.0, -2.0, 0.5])
    gt = [make_T(np.eye(3), c) for c in corners]
    # estimate: positions 10 % farther from the centre, in another world frame: the best
    # rigid alignment is A^-1 and every point is then 0.1 * sqrt(2) off
    est = [np.linalg.inv(A) @ make_T(np.eye(3), 1.1 * c) for c in corners]
    e, T_align = M.ate_rmse(est, gt)
    assert e == pytest.approx(0.1 * np.sqrt(2))
    np.testing.assert_allclose(T_align, A, atol=1e-9)
    # with scale, Umeyama recovers the similarity exactly
    src = np.array([T[:3, 3] for T in est])
    S = M.align_umeyama(src, corners, with_scale=True)
    np.testing.assert_allclose(src @ S[:3, :3].T + S[:3, 3], corners, atol=1e-9)
    assert np.cbrt(np.linalg.det(S[:3, :3])) == pytest.approx(1 / 1.1)
    with pytest.raises(InputError, match="differ in length"):
        M.ate_rmse(est[:3], gt)


def test_rpe_rotation_hand_value():
    rng = np.random.default_rng(3)
    gt = [make_T(so3_exp(rng.normal(size=3)), rng.normal(size=3)) for _ in range(9)]
    Rz = make_T(so3_exp([0, 0, 0.1]), np.zeros(3))
    est = [T @ Rz if i % 2 else T for i, T in enumerate(gt)]
    # every relative motion is off by a rotation of exactly 0.1 rad
    _, r = M.rpe(est, gt)
    assert r == pytest.approx(np.degrees(0.1), rel=1e-9)
    assert M.rotation_error_deg(Rz[:3, :3], np.eye(3)) == pytest.approx(np.degrees(0.1))


def _ssim_reference(x, y, i, j, c1, c2):
    """SSIM at pixel (i, j) from an explicit 11 x 11 Gaussian window (sigma 1.5)."""
    g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5**2))
    g /= g.sum()
    w = np.outer(g, g)
    px, py = x[i - 5:i + 6, j - 5:j + 6], y[i - 5:i + 6, j - 5:j + 6]
    mx, my = (w * px).sum(), (w * py).sum()
    vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
    cxy = (w * (px - mx) * (py - my)).sum()
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_against_explicit_window_and_constants():
    rng = np.random.default_rng(4)
    x = rng.random((24, 24))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    c1, c2 = 0.01**2, 0.03**2
    for i, j in ((8, 9), (12, 12), (15, 7)):
        m = np.zeros((24, 24), bool)
        m[i, j] = True
        assert M.masked_ssim(x, y, m) == pytest.approx(_ssim_reference(x, y, i, j, c1, c2),
                                                       rel=1e-6)
    # constant images a, b: SSIM = (2ab + c1) / (a^2 + b^2 + c1) everywhere
    a, b = np.full((16, 16, 3), 0.3), np.full((16, 16, 3), 0.5)
    assert M.masked_ssim(a, b, np.ones((16, 16), bool)) == pytest.approx(
        (2 * 0.3 * 0.5 + c1) / (0.3**2 + 0.5**2 + c1), rel=1e-9)
    # PSNR with another range: a 5-level error on 8-bit values
    ref = rng.integers(10, 240, (8, 8, 3)).astype(float)
    assert M.masked_psnr(ref + 5, ref, np.ones((8, 8), bool), max_val=255) == pytest.approx(
        10 * np.log10(255**2 / 25))
    assert M.masked_psnr(ref, ref, np.ones((8, 8), bool)) == float("inf")
    with pytest.raises(InputError, match="differ in shape"):
        M.masked_ssim(x, y[:-1], np.ones((24, 24), bool))
    with pytest.raises(InputError, match="mask"):
        M.masked_psnr(x, y, np.ones((5, 5), bool))
    with pytest.raises(InputError, match="NaN"):
        M.masked_psnr(np.full_like(x, np.nan), y, np.ones((24, 24), bool))


def test_lpips_loads_a_local_backbone_and_refuses_without(tmp_path):
    """The test makes its own (random) AlexNet weights file: it checks the loading path and
    the metric's basic properties, not the published LPIPS values (no download here)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    rng = np.random.default_rng(0)
    a = rng.random((64, 64, 3))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert M.lpips_distance(a, a, str(path)) == pytest.approx(0.0, abs=1e-6)
    d1 = M.lpips_distance(a, b, str(path))
    d2 = M.lpips_distance(a, np.clip(a + rng.normal(0, 0.4, a.shape), 0, 1), str(path))
    assert 0 < d1 < d2
    with pytest.raises(M.MissingWeightsError, match="does not exist"):
        M.lpips_distance(a, b, str(tmp_path / "nope.pth"))
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(M.MissingWeightsError, match="not a torchvision AlexNet"):
        M.lpips_distance(a, b, str(tmp_path / "bad.pth"))


def test_geometric_symmetries_are_exact_not_approximate():
    """A box has exactly its three half turns (no 2-6 deg turns that would hide rotation errors
    of that size), a closed cylinder every z turn (and upside down), a mug with a handle none
    about z."""
    from nol_ros.datasets.synthetic.objects import make_object
    from nol_ros.geometry import make_T, rotation_angle, so3_exp
    from nol_ros.metrics import geometric_symmetries, rotation_error_sym_deg

    box = make_object(1, 0).untextured()
    syms = geometric_symmetries(box.vertices, box.faces)
    assert sorted(round(np.degrees(rotation_angle(S))) for S in syms) == [0, 180, 180, 180]
    T = make_T(so3_exp([0, 0, np.radians(4.0)]), np.zeros(3))
    assert rotation_error_sym_deg(T, np.eye(4), syms) == pytest.approx(4.0, abs=1e-6)
    can = make_object(3, 0).untextured()
    zs = [S for S in geometric_symmetries(can.vertices, can.faces) if abs(S[2, 2] - 1) < 1e-9]
    assert len(zs) == 180  # every 2 deg about the axis
    # a turn about the can's axis between two sampled turns is no error at all (the minimum
    # over the samples alone said 1 deg); a tilt of the axis is, whatever the turn with it
    csyms = geometric_symmetries(can.vertices, can.faces)
    turn = make_T(so3_exp([0, 0, np.radians(37.0)]), np.zeros(3))
    assert rotation_error_sym_deg(turn, np.eye(4), csyms) == pytest.approx(0.0, abs=1e-6)
    tilt = make_T(so3_exp([np.radians(0.7), 0, 0]), np.zeros(3)) @ turn
    assert rotation_error_sym_deg(tilt, np.eye(4), csyms) == pytest.approx(0.7, abs=1e-6)
    upside_down = make_T(so3_exp([np.pi, 0, 0]), np.zeros(3)) @ tilt
    assert rotation_error_sym_deg(upside_down, np.eye(4), csyms) == pytest.approx(0.7, abs=1e-6)
    mug = make_object(9, 0).untextured()
    msyms = geometric_symmetries(mug.vertices, mug.faces)
    assert all(S[2, 2] < 0 or np.allclose(S, np.eye(4)) for S in msyms)  # no turn about z
