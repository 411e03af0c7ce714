"""Metrics against hand-computed values."""

import numpy as np
import pytest

from nol_ros import metrics as M
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
