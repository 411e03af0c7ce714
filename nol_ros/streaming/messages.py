"""Reading ROS-shaped messages into numpy and core types (no ROS import at all).

The functions take any object with the message's fields -- rclpy's generated messages or the
ones ``rosbags`` deserialises from a bag file -- so the core reads images, camera infos, poses
and transforms from both without depending on a ROS installation. Writing messages (numpy ->
``sensor_msgs/Image`` ...) is ROS's side: :mod:`nol_ros.ros.conversions`.

Images: rgb8, bgr8, mono8, 16UC1 (= mono16, millimetres for depth) and 32FC1 (metres for depth);
row padding (``step`` > width * pixel size) and big-endian data are handled; any other encoding
raises :class:`ImageEncodingError` naming the supported ones. Camera: ``CameraInfo`` ->
:class:`nol_ros.camera.Intrinsics`. Poses: ``Transform`` / ``Pose`` -> 4x4 ``T_a_b``.
"""

from __future__ import annotations

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import R_from_quat_xyzw, make_T

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class ImageEncodingError(InputError):
    """An image message has an unsupported encoding or inconsistent size fields."""

    code = "BAD_ENCODING"


class CameraInfoError(InputError):
    """A CameraInfo message is missing, invalid, or does not match the image."""

    code = "BAD_CAMERA_INFO"


def image_to_numpy(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> array of shape (H, W) or (H, W, C) in the message's own encoding.

    Handles row padding (``step``) and ``is_bigendian``; returns a copy in native byte order.
    Raises :class:`ImageEncodingError` for unsupported encodings or inconsistent sizes.
    """
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageEncodingError(
            f"image encoding '{enc}' is not supported; use one of {sorted(ENCODINGS)} "
            "(e.g. set the camera driver's color format to rgb8 and depth to 16UC1 or 32FC1)")
    dtype, ch = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageEncodingError(f"image has size {w}x{h}; width and height must be > 0")
    row = w * ch * dtype.itemsize
    if step < row:
        raise ImageEncodingError(
            f"image step {step} is smaller than width*channels*bytes = {row} for {enc}; "
            "the publisher filled the message wrongly")
    data = msg.data
    if isinstance(data, (bytes, bytearray, memoryview)):
        buf = data
    else:
        try:  # rclpy gives array.array('B'): read it in place (one copy below, not three)
            buf = memoryview(data).cast("B")
        except TypeError:
            buf = bytes(data)
    if len(buf) < step * h:
        raise ImageEncodingError(
            f"image data has {len(buf)} bytes, expected step*height = {step * h}")
    raw = np.frombuffer(buf, dtype=np.uint8, count=step * h).reshape(h, step)[:, :row]
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    arr = raw.copy()  # contiguous, owned by the array (not by the message)
    arr = arr.view(dt).astype(dtype, copy=False)
    return arr.reshape(h, w, ch) if ch > 1 else arr.reshape(h, w)


def rgb_from_image(msg) -> np.ndarray:
    """Colour image message -> (H, W, 3) uint8 RGB (accepts rgb8, bgr8, mono8)."""
    enc = msg.encoding
    if enc not in ("rgb8", "bgr8", "mono8", "8UC1"):
        raise ImageEncodingError(
            f"colour image encoding '{enc}' is not supported; use rgb8, bgr8 or mono8")
    a = image_to_numpy(msg)
    if enc == "bgr8":
        return np.ascontiguousarray(a[..., ::-1])
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    return a


def depth_from_image(msg) -> np.ndarray:
    """Depth image message -> (H, W) float32 metres, 0 = invalid.

    16UC1/mono16 are millimetres (0 and 65535 invalid); 32FC1 is metres (NaN/inf/<=0 invalid).
    """
    enc = msg.encoding
    if enc not in DEPTH_ENCODINGS:
        raise ImageEncodingError(
            f"depth encoding '{enc}' is not supported; use 16UC1 (millimetres) or 32FC1 (metres), "
            "e.g. camera/depth_registered/image_raw or camera/depth/image")
    a = image_to_numpy(msg)
    if a.dtype == np.uint16:
        d = a.astype(np.float32)
        d *= np.float32(1e-3)
        d[a == 65535] = 0.0  # "no reading" in some drivers, like 0
        return d
    d = a.astype(np.float32, copy=False)
    d[~(d > 0) | ~np.isfinite(d)] = 0.0
    return d


def camera_info_to_intrinsics(info):
    """``sensor_msgs/CameraInfo`` -> :class:`nol_ros.camera.Intrinsics` (from K; distortion must
    be negligible: the pipeline assumes rectified / registered images)."""
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CameraInfoError(
            f"CameraInfo K has fx={k[0, 0]}, fy={k[1, 1]}; it must be a calibrated, positive "
            "focal length (is the camera driver publishing camera_info?)")
    if info.width <= 0 or info.height <= 0:
        raise CameraInfoError(f"CameraInfo size is {info.width}x{info.height}; must be > 0")
    return Intrinsics(fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]),
                      width=int(info.width), height=int(info.height))


def check_image_matches_info(width: int, height: int, info) -> None:
    """Raise :class:`CameraInfoError` if an image's size differs from its CameraInfo."""
    if int(info.width) != int(width) or int(info.height) != int(height):
        raise CameraInfoError(
            f"image is {width}x{height} but CameraInfo says {info.width}x{info.height}; "
            "use the camera_info topic that belongs to this image stream")


def matrix_from_transform(tf) -> np.ndarray:
    """``geometry_msgs/Transform`` -> (4, 4) float64."""
    q = np.array([tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w], dtype=np.float64)
    t = np.array([tf.translation.x, tf.translation.y, tf.translation.z], dtype=np.float64)
    return make_T(R_from_quat_xyzw(_check_quat(q)), t)


def matrix_from_pose(pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> (4, 4) float64."""
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z,
                  pose.orientation.w], dtype=np.float64)
    t = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    return make_T(R_from_quat_xyzw(_check_quat(q)), t)


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _check_quat(q: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(q))
    if not np.isfinite(n) or n < 1e-6:
        raise InputError(f"quaternion {q.tolist()} is zero or not finite; send a unit quaternion")
    return q / n
