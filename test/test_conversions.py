"""Image/CameraInfo/pose conversions both ways, with padding, endianness and bad input."""

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from nol_ros.ros.conversions import (
    depth_to_image,
    intrinsics_to_camera_info,
    numpy_to_image,
    pose_from_matrix,
    transform_from_matrix,
)
from nol_ros.streaming.messages import (
    CameraInfoError,
    ImageEncodingError,
    camera_info_to_intrinsics,
    depth_from_image,
    image_to_numpy,
    matrix_from_pose,
    matrix_from_transform,
    rgb_from_image,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("enc,dtype,shape", [
    ("rgb8", np.uint8, (7, 5, 3)), ("bgr8", np.uint8, (7, 5, 3)), ("mono8", np.uint8, (7, 5)),
    ("16UC1", np.uint16, (7, 5)), ("32FC1", np.float32, (7, 5))])
def test_image_round_trip(enc, dtype, shape):
    if dtype == np.float32:
        a = RNG.uniform(0.1, 5, shape).astype(dtype)
    else:
        a = RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    msg = numpy_to_image(a, enc)
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * a.itemsize
    np.testing.assert_array_equal(image_to_numpy(msg), a)


def _padded(a: np.ndarray, enc: str, pad: int, bigendian: bool = False) -> Image:
    msg = Image()
    msg.height, msg.width, msg.encoding = a.shape[0], a.shape[1], enc
    row = a[0].nbytes
    b = a.astype(a.dtype.newbyteorder(">" if bigendian else "<"))
    rows = [b[i].tobytes() + bytes(range(pad)) for i in range(a.shape[0])]
    msg.step, msg.is_bigendian, msg.data = row + pad, int(bigendian), b"".join(rows)
    return msg


def test_row_padding_and_big_endian_depth():
    depth_mm = RNG.integers(300, 4000, (6, 9), dtype=np.uint16)
    msg = _padded(depth_mm, "16UC1", pad=6, bigendian=True)
    np.testing.assert_allclose(depth_from_image(msg), depth_mm / 1000.0, rtol=1e-6)
    rgb = RNG.integers(0, 255, (4, 3, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_from_image(_padded(rgb, "rgb8", pad=3)), rgb)
    np.testing.assert_array_equal(rgb_from_image(_padded(rgb[..., ::-1].copy(), "bgr8", 3)), rgb)


def test_depth_units_and_invalid_values():
    d = np.array([[0.0, 1.2345, np.nan], [np.inf, -1.0, 0.5]], dtype=np.float32)
    m32 = depth_from_image(numpy_to_image(d, "32FC1"))
    np.testing.assert_allclose(m32, [[0, 1.2345, 0], [0, 0, 0.5]], atol=1e-6)
    m16 = depth_from_image(depth_to_image(m32, "16UC1"))
    np.testing.assert_allclose(m16, [[0, 1.234, 0], [0, 0, 0.5]], atol=1e-6)  # mm quantised
    back = depth_from_image(depth_to_image(m32, "32FC1"))
    np.testing.assert_allclose(back, m32, atol=1e-7)


def test_bad_images_are_rejected_with_clear_errors():
    msg = numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(ImageEncodingError, match="yuv422.*not supported"):
        image_to_numpy(msg)
    msg = numpy_to_image(np.zeros((4, 4), np.uint16), "16UC1")
    msg.step = 4  # smaller than 4 px * 2 bytes
    with pytest.raises(ImageEncodingError, match="step"):
        image_to_numpy(msg)
    msg = numpy_to_image(np.zeros((4, 4), np.uint16), "16UC1")
    msg.data = bytes(10)
    with pytest.raises(ImageEncodingError, match="bytes"):
        image_to_numpy(msg)
    with pytest.raises(ImageEncodingError, match="depth encoding 'rgb8'"):
        depth_from_image(numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(ImageEncodingError, match="does not fit"):
        numpy_to_image(np.zeros((2, 2), np.float64), "32FC1")


def test_camera_info_round_trip_and_validation():
    from nol_ros.camera import SMOT_XTION

    info = intrinsics_to_camera_info(SMOT_XTION, frame_id="camera_rgb_optical_frame")
    assert isinstance(info, CameraInfo) and info.header.frame_id == "camera_rgb_optical_frame"
    intr = camera_info_to_intrinsics(info)
    assert intr == SMOT_XTION
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4)[:, :3], SMOT_XTION.K)
    bad = CameraInfo()
    bad.width, bad.height = 640, 480
    with pytest.raises(CameraInfoError, match="focal length"):
        camera_info_to_intrinsics(bad)


def test_pose_and_transform_round_trip():
    from scipy.spatial.transform import Rotation

    for _ in range(5):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=RNG.integers(1 << 30)).as_matrix()
        T[:3, 3] = RNG.normal(size=3)
        np.testing.assert_allclose(matrix_from_pose(pose_from_matrix(T)), T, atol=1e-12)
        np.testing.assert_allclose(matrix_from_transform(transform_from_matrix(T)), T, atol=1e-12)
    p = pose_from_matrix(np.eye(4))
    p.orientation.w = 0.0
    with pytest.raises(Exception, match="quaternion"):
        matrix_from_pose(p)
