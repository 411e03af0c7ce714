"""Writing ROS messages from numpy and core types (the other way: nol_ros.streaming.messages).

Images: numpy -> ``sensor_msgs/Image`` (rgb8, bgr8, mono8, 16UC1 millimetres, 32FC1 metres);
camera: :class:`nol_ros.camera.Intrinsics` -> ``sensor_msgs/CameraInfo``; poses: 4x4 ``T_a_b``
-> ``geometry_msgs/Transform`` / ``Pose``; stamps: nanoseconds -> ``builtin_interfaces/Time``.
Reading them back: :mod:`nol_ros.streaming.messages`.
"""

from __future__ import annotations

import numpy as np

from nol_ros.errors import InputError
from nol_ros.streaming.messages import ENCODINGS, ImageEncodingError


def numpy_to_image(array: np.ndarray, encoding: str, stamp=None, frame_id: str = ""):
    """Array -> ``sensor_msgs/Image`` (dense rows, little endian).

    ``array``: (H, W, 3) uint8 for rgb8/bgr8, (H, W) uint8 for mono8, (H, W) uint16 for 16UC1,
    (H, W) float32 for 32FC1. ``stamp`` is a ``builtin_interfaces/Time`` or None.
    """
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ImageEncodingError(f"cannot encode '{encoding}'; supported: {sorted(ENCODINGS)}")
    dtype, ch = ENCODINGS[encoding]
    a = np.asarray(array)
    expect = (a.shape[0], a.shape[1], ch) if ch > 1 else None
    if a.dtype != dtype or (ch > 1 and a.shape != expect) or (ch == 1 and a.ndim != 2):
        raise ImageEncodingError(
            f"array of shape {a.shape} and dtype {a.dtype} does not fit encoding {encoding} "
            f"(needs dtype {dtype} and {ch} channel(s))")
    a = np.ascontiguousarray(a.astype(dtype.newbyteorder("<"), copy=False))
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * ch * dtype.itemsize)
    msg.data = a.tobytes()
    return msg


def depth_to_image(depth_m: np.ndarray, encoding: str = "16UC1", stamp=None, frame_id: str = ""):
    """(H, W) float32 metres (0 invalid) -> depth Image in 16UC1 (mm) or 32FC1 (m, NaN invalid)."""
    d = np.asarray(depth_m, dtype=np.float32)
    if encoding in ("16UC1", "mono16"):
        mm = np.where(np.isfinite(d) & (d > 0), np.round(d * 1000.0), 0)
        return numpy_to_image(np.clip(mm, 0, 65535).astype(np.uint16), encoding, stamp, frame_id)
    if encoding == "32FC1":
        out = np.where(np.isfinite(d) & (d > 0), d, np.nan).astype(np.float32)
        return numpy_to_image(out, "32FC1", stamp, frame_id)
    raise ImageEncodingError(f"depth encoding '{encoding}' not supported; use 16UC1 or 32FC1")


def intrinsics_to_camera_info(intr, stamp=None, frame_id: str = ""):
    """:class:`Intrinsics` -> ``sensor_msgs/CameraInfo`` (plumb_bob, zero distortion)."""
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def transform_from_matrix(T: np.ndarray):
    """(4, 4) -> ``geometry_msgs/Transform``."""
    from geometry_msgs.msg import Transform

    q, t = _quat_t(T)
    msg = Transform()
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in t)
    msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = (float(v) for v in q)
    return msg


def pose_from_matrix(T: np.ndarray):
    """(4, 4) -> ``geometry_msgs/Pose``."""
    from geometry_msgs.msg import Pose

    q, t = _quat_t(T)
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in t)
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = (
        float(v) for v in q)
    return msg


def ns_to_stamp(ns: int):
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _quat_t(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from nol_ros.geometry import quat_xyzw_from_R

    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"expected a finite 4x4 transform, got shape {T.shape}")
    return quat_xyzw_from_R(T[:3, :3]), T[:3, 3]
