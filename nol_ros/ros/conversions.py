"""Writing ROS messages from numpy and core types (the other way: nol_ros.streaming.messages).

Images: numpy -> ``sensor_msgs/Image`` (rgb8, bgr8, mono8, 16UC1 millimetres, 32FC1 metres);
camera: :class:`nol_ros.camera.Intrinsics` -> ``sensor_msgs/CameraInfo``; poses: 4x4 ``T_a_b``
-> ``geometry_msgs/Transform`` / ``Pose``; stamps: nanoseconds -> ``builtin_interfaces/Time``.
Reading them back: :mod:`nol_ros.streaming.messages`.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform
from sensor_msgs.msg import CameraInfo, Image

from nol_ros.errors import InputError, PoseError
from nol_ros.geometry import quat_xyzw_from_R
from nol_ros.msg import Detection, Keyframe, RecognizerStatus, TrackingStatus
from nol_ros.streaming.messages import ENCODINGS, ImageEncodingError, matrix_from_pose


def numpy_to_image(array: np.ndarray, encoding: str, stamp=None, frame_id: str = ""):
    """Array -> ``sensor_msgs/Image`` (dense rows, little endian).

    ``array``: (H, W, 3) uint8 for rgb8/bgr8, (H, W) uint8 for mono8, (H, W) uint16 for 16UC1,
    (H, W) float32 for 32FC1. ``stamp`` is a ``builtin_interfaces/Time`` or None.
    """
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
    q, t = _quat_t(T)
    msg = Transform()
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in t)
    msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = (float(v) for v in q)
    return msg


def pose_from_matrix(T: np.ndarray):
    """(4, 4) -> ``geometry_msgs/Pose``."""
    q, t = _quat_t(T)
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in t)
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = (
        float(v) for v in q)
    return msg


def ns_to_stamp(ns: int):
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _quat_t(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"expected a finite 4x4 transform, got shape {T.shape}")
    return quat_xyzw_from_R(T[:3, :3]), T[:3, 3]


def views_to_response(response, rgb, masks, stamp, frame_id: str):
    """A RenderViews response holding the rendered views: rgb8 images and mono8 masks (255 on
    the object), ``success`` set."""
    response.images = [numpy_to_image(np.ascontiguousarray(x), "rgb8", stamp, frame_id)
                       for x in rgb]
    response.masks = [numpy_to_image(m.astype(np.uint8) * 255, "mono8", stamp, frame_id)
                      for m in masks]
    response.success = True
    return response


def poses_from_msgs(poses) -> np.ndarray:
    """geometry_msgs/Pose[] -> (B, 4, 4) T_camera_object; PoseError naming a bad pose."""
    out = []
    for i, p in enumerate(poses):
        v = [p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y,
             p.orientation.z, p.orientation.w]
        if not np.all(np.isfinite(v)):
            raise PoseError(f"pose {i} contains NaN/inf ({v}); send finite T_camera_object poses")
        try:
            out.append(matrix_from_pose(p))
        except InputError as e:
            raise PoseError(f"pose {i}: {e}") from e
    return np.stack(out) if out else np.zeros((0, 4, 4))


def detection_msgs(results) -> list:
    """Recognizer results -> [nol_ros/msg/Detection]."""
    out = []
    for r in results:
        d = Detection()
        d.object_id, d.object_name, d.score = int(r.obj_id), str(r.name), float(r.score)
        d.x, d.y, d.width, d.height = (float(v) for v in r.box_xywh)
        d.has_pose = r.T_camera_object is not None
        if d.has_pose:
            d.pose = pose_from_matrix(r.T_camera_object)
            d.pose_score = float(r.pose_score)
        out.append(d)
    return out


def recognizer_status_msg(s, unpaired: int, stamp):
    """RecognitionService.state() -> nol_ros/msg/RecognizerStatus."""
    m = RecognizerStatus()
    m.header.stamp = stamp
    m.models_dir, m.models_loaded, m.object_names = s.models_dir, s.models_loaded, \
        list(s.object_names)
    m.frames_received, m.frames_processed = s.received, s.processed
    m.frames_dropped_busy, m.frames_rejected = s.dropped_busy, s.rejected
    m.messages_unpaired = int(unpaired)
    m.detections_published, m.poses_published = s.detections, s.poses
    m.last_latency_s, m.mean_recognize_s = float(s.last_latency_s), float(s.mean_recognize_s)
    m.error_code, m.message = s.error_code, s.message
    return m


def tracking_status_msg(ingest_status, unpaired: int, live_status, map_frame: str):
    """Ingest + sync + live tracker state -> nol_ros/msg/TrackingStatus."""
    m = TrackingStatus()
    m.header.frame_id = map_frame
    m.header.stamp = ns_to_stamp(live_status.last_stamp_ns)
    m.frames_received = ingest_status.frames_received
    m.frames_rejected = ingest_status.frames_dropped
    m.messages_unpaired = int(unpaired)
    for k in ("frames_tracked", "frames_tracking_failed", "frames_relocalised",
              "frames_tf_withheld", "frames_skipped", "frames_without_odometry",
              "frames_tf_refused", "backlog", "keyframes"):
        setattr(m, k, int(getattr(live_status, k)))
    m.tracking_ok, m.tracking_state = bool(live_status.tracking_ok), live_status.tracking_state
    m.fitness, m.tracking_fps = float(live_status.fitness), float(live_status.tracking_fps)
    m.latency_s, m.tf_mode = float(live_status.latency_s), live_status.tf_mode
    # the most recent problem, whichever stage it came from
    m.error_code = live_status.error_code or ingest_status.error_code
    m.message = live_status.message or ingest_status.message
    return m


def buffer_status_response(response, ingest_status, unpaired: int, tracking):
    """Fill a GetBufferStatus response from the ingest buffer's status (the frames and their
    format), the count of images the synchroniser could not pair, and a TrackingStatus."""
    s = ingest_status
    response.frames_received, response.frames_dropped = s.frames_received, s.frames_dropped
    response.messages_unpaired = unpaired
    response.width, response.height = s.width, s.height
    response.rgb_encoding, response.depth_encoding = s.rgb_encoding, s.depth_encoding
    response.last_valid_depth_fraction = s.last_valid_depth_fraction
    response.last_median_depth_m = s.last_median_depth_m
    response.last_stamp = ns_to_stamp(s.last_stamp_ns)
    response.error_code, response.message = s.error_code, s.message
    response.tracking = tracking
    return response


def mesh_response(response, path, mesh, frames: int):
    """Fill a SaveMesh response: the scene mesh written to ``path`` from ``frames`` frames."""
    response.success, response.path, response.frames_integrated = True, str(path), frames
    response.vertices, response.triangles = len(mesh.vertices), len(mesh.triangles)
    response.message = f"{response.triangles} triangles from {frames} frames -> {path}"
    return response


def export_response(response, summary):
    """Fill an ExportSequence response from the export's summary (folder, frame counts)."""
    s = summary
    response.success, response.path, response.frames = True, s.path, s.frames
    response.frames_tracked, response.unchanged = s.frames_tracked, s.unchanged
    response.message = (f"{s.frames} frames ({s.frames_tracked} tracked) -> {s.path}"
                        + (" (unchanged)" if s.unchanged else ""))
    return response


def keyframe_msg(res, frame, map_frame: str, camera_frame: str, with_images: bool):
    """A live tracker's keyframe result (LiveResult) and its RgbdFrame -> nol_ros/msg/Keyframe
    (images only ``with_images``)."""
    kf = Keyframe()
    kf.header.stamp, kf.header.frame_id = ns_to_stamp(res.stamp_ns), map_frame
    kf.frame_index = int(res.index)
    if with_images:
        kf.rgb = numpy_to_image(frame.rgb, "rgb8", kf.header.stamp, camera_frame)
        kf.depth = depth_to_image(frame.depth_m, "16UC1", ns_to_stamp(frame.depth_stamp_ns),
                                  camera_frame)
    kf.camera_info = intrinsics_to_camera_info(frame.intrinsics, kf.header.stamp, camera_frame)
    kf.t_world_camera = transform_from_matrix(res.track.T_world_camera)
    kf.tracking_ok, kf.tracking_fitness = bool(res.track.ok), float(res.track.fitness)
    return kf
