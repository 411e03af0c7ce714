"""Projection/back-projection, depth -> points, crops that keep K consistent."""

import numpy as np
import pytest

from nol_ros.camera import SMOT_XTION, Intrinsics, crop_image, square_crop_box
from nol_ros.errors import InputError

RNG = np.random.default_rng(0)


def test_project_backproject_round_trip():
    P = np.c_[RNG.uniform(-0.5, 0.5, (50, 2)), RNG.uniform(0.4, 3, 50)]
    uv, z = SMOT_XTION.project(P)
    np.testing.assert_allclose(SMOT_XTION.backproject(uv, z), P, atol=1e-12)
    # principal point projects the optical axis
    uv0, _ = SMOT_XTION.project(np.array([[0, 0, 1.0]]))
    np.testing.assert_allclose(uv0[0], [SMOT_XTION.cx, SMOT_XTION.cy])


def test_depth_to_points_skips_invalid_and_checks_size():
    d = np.zeros((480, 640), np.float32)
    d[100, 200], d[5, 7] = 1.5, 2.0
    d[6, 7] = np.nan
    pts, pix = SMOT_XTION.depth_to_points(d)
    assert len(pts) == 2
    uv, z = SMOT_XTION.project(pts)
    np.testing.assert_allclose(uv, pix, atol=1e-9)
    with pytest.raises(InputError, match="intrinsics"):
        SMOT_XTION.depth_to_points(np.zeros((10, 10)))


def test_crop_resize_keeps_projection_consistent():
    """A point's pixel in the crop (through K_crop) equals where crop_image moves its pixel."""
    img = np.zeros((480, 640), np.float32)
    P = np.array([[0.05, -0.03, 0.9]])
    uv, _ = SMOT_XTION.project(P)
    u, v = np.round(uv[0]).astype(int)
    img[v, u] = 1.0
    box = (u - 70, v - 50, 160)
    Kc = SMOT_XTION.crop_resize(box[0], box[1], box[2], box[2], 256, 256)
    uv_c, _ = Kc.project(P)
    out = crop_image(img, box, 256, "linear")
    peak = np.unravel_index(np.argmax(out), out.shape)
    # the point's centre in the crop, up to the sub-pixel rounding of the marked pixel
    exp = (np.array([u, v]) - [box[0], box[1]] + 0.5) * 256 / 160 - 0.5
    np.testing.assert_allclose([peak[1], peak[0]], exp, atol=1.0)
    np.testing.assert_allclose(uv_c[0], (uv[0] - [box[0], box[1]] + 0.5) * 1.6 - 0.5)
    # scaling the whole image: pixel centre convention
    half = SMOT_XTION.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    assert half.cx == pytest.approx((SMOT_XTION.cx + 0.5) / 2 - 0.5)


@pytest.mark.parametrize("interp,out", [("linear", 256), ("linear", 97), ("area", 64)])
def test_crop_image_and_crop_resize_agree_everywhere(interp, out):
    """Crop images holding their own pixel coordinates: the source location crop_image samples
    for every crop pixel must be where K projects the crop pixel's ray (through K_crop)."""
    intr = SMOT_XTION
    v, u = np.mgrid[0:intr.height, 0:intr.width].astype(np.float64)
    box = (203, 117, 190)
    cu, cv = crop_image(u, box, out, interp), crop_image(v, box, out, interp)
    Kc = intr.crop_resize(box[0], box[1], box[2], box[2], out, out)
    assert (Kc.width, Kc.height) == (out, out)
    j, i = np.mgrid[2:out - 2, 2:out - 2]
    rays = Kc.backproject(np.c_[i.ravel(), j.ravel()], np.ones(i.size))
    uv, _ = intr.project(rays)
    # OpenCV quantises sampling positions to 1/32 px
    np.testing.assert_allclose(uv[:, 0], cu[j, i].ravel(), atol=0.02)
    np.testing.assert_allclose(uv[:, 1], cv[j, i].ravel(), atol=0.02)


def test_square_crop_box_rule_and_padding():
    m = np.zeros((480, 640), bool)
    m[100:140, 300:360] = True  # 60 x 40 -> half side is the 128 minimum
    x0, y0, side = square_crop_box(m, 128)
    assert side == 256 and x0 == 330 - 128 and y0 == 120 - 128
    m2 = np.zeros((480, 640), bool)
    m2[10:400, 0:100] = True  # tall object at the border
    x0, y0, side = square_crop_box(m2, 128)
    assert side == 390 and x0 < 0
    out = crop_image(np.full((480, 640, 3), 200, np.uint8), (x0, y0, side), 256)
    assert out[:, 0].max() == 0 and out[128, 200].min() == 200  # padded outside, kept inside
    with pytest.raises(InputError, match="empty"):
        square_crop_box(np.zeros((4, 4), bool))
    with pytest.raises(InputError):
        Intrinsics(0, 1, 0, 0, 10, 10)
