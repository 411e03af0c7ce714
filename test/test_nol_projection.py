"""NOL projection: exact re-projection of a textured object from sources at exact poses, pose
gradients (finite differences), exp maps, IBR baselines and bad input."""

import numpy as np
import pytest
import torch

from nol_ros.camera import Intrinsics, crop_image, square_crop_box
from nol_ros.datasets.synthetic.objects import make_object
from nol_ros.errors import InputError
from nol_ros.geometry import look_at, se3_exp
from nol_ros.metrics import masked_psnr
from nol_ros.nol.projection import (
    SourceView,
    blend_ibr,
    project_sources,
    project_vertices,
    sample_projection,
    se3_exp_torch,
)
from nol_ros.rasterizer import render_object, shade

CAM = Intrinsics(538.0, 538.0, 319.5, 239.5, 640, 480)


def _view(mesh, T_co, size=256):
    """Render the albedo (no lighting) and crop it like a NOL source (the object is smaller
    than 256 px, so the 256 px crop keeps the image scale: resampling the fine text-like
    texture would cost ~10 dB by itself, which is not what these tests are about)."""
    res = render_object(mesh, CAM, T_co)
    img = shade(res, [mesh], ambient=1.0, diffuse=0.0)
    box = square_crop_box(res.mask, min_half=128)
    K = CAM.crop_resize(box[0], box[1], box[2], box[2], size, size).K
    rgb = crop_image(img, box, size, "linear")
    mask = crop_image(res.mask.astype(np.uint8), box, size, "nearest") > 0
    return SourceView(rgb, mask, K, T_co), img, res


def _pose(az, el, dist=0.45):
    eye = dist * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    return np.linalg.inv(look_at(eye, np.zeros(3)))


@pytest.fixture(scope="module")
def box():
    return make_object(2, seed=3)  # a textured sugar box


def test_reprojection_matches_direct_render(box):
    T_t = _pose(0.4, 0.6)
    _, target_img, res = _view(box, T_t)
    # exactness: a source AT the target pose (same image scale) reproduces the target
    same = project_sources(box, [_view(box, T_t)[0]], CAM, T_t)
    cov = same.valid.any(0)[0].numpy()
    assert cov.sum() > 0.75 * res.mask.sum()  # faces with a vertex on a silhouette edge drop
    assert masked_psnr(blend_ibr(same, "best").permute(1, 2, 0).numpy(), target_img, cov) > 30
    # six other views: their texture is resampled under other foreshortening (measured
    # ~19.8 dB on this text-rich texture; identity above is the exactness check)
    sources = [_view(box, _pose(a, 0.5))[0] for a in np.linspace(0, 2 * np.pi, 6,
                                                                  endpoint=False)]
    proj = project_sources(box, sources, CAM, T_t)
    covered = proj.valid.any(0)[0].numpy()
    assert covered.sum() > 0.75 * res.mask.sum()
    out = blend_ibr(proj, "angle").permute(1, 2, 0).numpy()
    psnr = masked_psnr(out, target_img, covered)
    assert psnr > 18.0, psnr
    # a pose error of 1 cm in the sources costs several dB (the reason for refinement)
    rng = np.random.default_rng(0)
    noisy = [SourceView(s.rgb, s.mask, s.K, s.T_camera_object @ se3_exp(
        np.r_[rng.normal(0, 0.006, 3), rng.normal(0, 0.02, 3)])) for s in sources]
    pn = project_sources(box, noisy, CAM, T_t)
    cov2 = pn.valid.any(0)[0].numpy() & covered
    psnr_noisy = masked_psnr(blend_ibr(pn, "angle").permute(1, 2, 0).numpy(), target_img, cov2)
    assert psnr_noisy < psnr - 3.0
    for mode in ("mean", "best"):
        p = masked_psnr(blend_ibr(proj, mode).permute(1, 2, 0).numpy(), target_img, covered)
        assert p > 16.0


def test_sampling_is_exact_on_a_linear_ramp():
    S = 16
    ramp = torch.arange(S, dtype=torch.float32)[None, None, None].expand(1, 1, S, S).clone()
    uv = torch.tensor([[[3.0, 5.0], [7.0, 5.0], [3.0, 9.0]]])   # one triangle's vertices
    vis = torch.ones(1, 3, dtype=torch.bool)
    faces = torch.tensor([[0, 1, 2]])
    face_id = torch.zeros(1, 2, dtype=torch.long)
    bary = torch.tensor([[[1.0, 0, 0], [0.25, 0.5, 0.25]]])
    P, valid = sample_projection(ramp, uv, vis, faces, face_id, bary)
    # x-ramp: value = u; interpolated u = 3 and 0.25*3 + 0.5*7 + 0.25*3 = 5
    assert torch.allclose(P[0, 0, 0], torch.tensor([3.0, 5.0]), atol=1e-5)
    assert valid.all()
    vis[0, 1] = False
    _, valid = sample_projection(ramp, uv, vis, faces, face_id, bary)
    assert not valid.any()


def test_pose_gradient_matches_finite_differences():
    torch.manual_seed(0)
    S = 32
    feat = torch.rand(1, 3, S, S, dtype=torch.float64)
    feat = torch.nn.functional.avg_pool2d(feat, 5, 1, 2)  # smooth, so bilinear is near-smooth
    verts = torch.tensor([[-0.05, -0.05, 0.0], [0.05, -0.05, 0.0], [0.0, 0.05, 0.0]],
                         dtype=torch.float64)
    K = torch.tensor([[[200.0, 0, 15.5], [0, 200.0, 15.5], [0, 0, 1]]], dtype=torch.float64)
    T0 = torch.eye(4, dtype=torch.float64)[None].clone()
    T0[0, 2, 3] = 0.8
    faces = torch.tensor([[0, 1, 2]])
    face_id = torch.zeros(4, 4, dtype=torch.long)
    bary = torch.rand(4, 4, 3, dtype=torch.float64)
    bary = bary / bary.sum(-1, keepdim=True)
    vis = torch.ones(1, 3, dtype=torch.bool)

    def loss(xi):
        T = T0 @ se3_exp_torch(xi)[None]
        uv, _ = project_vertices(verts, T, K)
        P, _ = sample_projection(feat, uv, vis, faces, face_id, bary)
        return (P ** 2).sum()

    xi = torch.tensor([0.002, -0.001, 0.003, 0.01, -0.02, 0.015], dtype=torch.float64,
                      requires_grad=True)
    g = torch.autograd.grad(loss(xi), xi)[0]
    eps = 1e-6
    fd = torch.stack([(loss(xi.detach() + eps * e) - loss(xi.detach() - eps * e)) / (2 * eps)
                      for e in torch.eye(6, dtype=torch.float64)])
    assert torch.allclose(g, fd, rtol=1e-3, atol=1e-6), (g, fd)
    assert g.abs().sum() > 0


def test_exp_maps_match_numpy_and_are_stable_at_zero():
    rng = np.random.default_rng(1)
    for xi in [np.zeros(6), rng.normal(size=6) * 0.3, np.r_[0.1, 0, 0, 1e-10, 0, 0]]:
        Tt = se3_exp_torch(torch.tensor(xi, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(Tt, se3_exp(xi), atol=1e-9)
    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    se3_exp_torch(xi).sum().backward()
    assert torch.isfinite(xi.grad).all()


def test_bad_sources_are_refused(box):
    s, _, _ = _view(box, _pose(0, 0.5))
    bad = SourceView(s.rgb, s.mask, s.K, np.full((4, 4), np.nan))
    with pytest.raises(InputError, match="NaN"):
        project_sources(box, [bad], CAM, _pose(0.2, 0.5))
    empty = SourceView(s.rgb, np.zeros_like(s.mask), s.K, s.T_camera_object)
    with pytest.raises(InputError, match="empty mask"):
        project_sources(box, [empty], CAM, _pose(0.2, 0.5))
    with pytest.raises(InputError, match="no source"):
        project_sources(box, [], CAM, _pose(0.2, 0.5))
