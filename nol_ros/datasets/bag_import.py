"""Import an RGB-D rosbag2 (Xtion topics) into a BOP scene folder, without ROS.

RGB and depth are paired by approximate time (the Xtion stamps them a few ms apart), CameraInfo
gives the intrinsics, and /tf + /tf_static (when present) give the odometry pose of the camera
per frame, written to ``odometry.json`` as a prior for tracking (never as ground truth; its
``tf_source`` says what the bag declares /tf to be: ``ground_truth`` for a bag exported with
``--tf gt``, ``simulated_wheel_odometry``, or ``unknown`` for a robot recording).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_typestore

from nol_ros.datasets.bag import open_bag, read_bag_custom_data
from nol_ros.datasets.bop import BopSceneWriter
from nol_ros.errors import FileFormatError, InputError
from nol_ros.io_utils import atomic_write_json
from nol_ros.streaming.messages import (
    camera_info_to_intrinsics,
    depth_from_image,
    matrix_from_transform,
    rgb_from_image,
    stamp_to_ns,
)
from nol_ros.streaming.sync import ApproximateTimeSync
from nol_ros.streaming.tf_buffer import TransformBuffer, TransformError


def bag_to_bop_scene(bag_path: str | Path, scene_dir: str | Path,
                     rgb_topic: str = "/camera/rgb/image_raw",
                     depth_topic: str = "/camera/depth_registered/image_raw",
                     camera_info_topic: str = "/camera/rgb/camera_info",
                     odom_frame: str = "odom", camera_frame: str = "",
                     slop_s: float = 0.02, max_frames: int = 0, step: int = 1) -> dict:
    """Write the synchronised frames of a bag as a BOP scene; returns a summary dict."""
    reader = open_bag(bag_path)
    tf_source = read_bag_custom_data(bag_path).get("nol_ros.tf_source", "unknown")
    store = get_typestore(Stores.ROS2_KILTED)
    topics = {c.topic for c in reader.connections}
    for t in (rgb_topic, depth_topic, camera_info_topic):
        if t not in topics:
            reader.close()
            raise FileFormatError(f"bag '{bag_path}' has no topic '{t}'; it has {sorted(topics)}."
                                  " Pass the right topic names (e.g. --rgb-topic)")
    want = [c for c in reader.connections
            if c.topic in (rgb_topic, depth_topic, camera_info_topic, "/tf", "/tf_static")]
    tf = TransformBuffer(cache_time_s=1e6)
    pairs: list[tuple] = []
    sync = ApproximateTimeSync(2, slop_s, lambda m: pairs.append(tuple(m)), queue_size=30)
    info = None
    for conn, _t, raw in reader.messages(connections=want):
        msg = store.deserialize_cdr(raw, conn.msgtype)
        if conn.topic == camera_info_topic:
            info = msg
        elif conn.topic == rgb_topic:
            sync.add(0, stamp_to_ns(msg.header.stamp), msg)
        elif conn.topic == depth_topic:
            sync.add(1, stamp_to_ns(msg.header.stamp), msg)
        else:
            for ts in msg.transforms:
                tf.set_transform(ts.header.frame_id, ts.child_frame_id,
                                 stamp_to_ns(ts.header.stamp),
                                 matrix_from_transform(ts.transform),
                                 static=conn.topic == "/tf_static")
    reader.close()
    if info is None:
        raise FileFormatError(f"bag '{bag_path}' has no message on {camera_info_topic}")
    if not pairs:
        raise InputError(f"no RGB/depth pair within {slop_s * 1000:.0f} ms in '{bag_path}'; "
                         "check the topics and increase the sync slop")
    intr = camera_info_to_intrinsics(info)
    pairs = pairs[::max(1, step)]
    if max_frames:
        pairs = pairs[:max_frames]
    writer = BopSceneWriter(scene_dir, intr, depth_scale=1.0)
    odom = {}
    cam_frame = camera_frame or (pairs[0][0].header.frame_id or "camera_rgb_optical_frame")
    for im_id, (rgb_msg, depth_msg) in enumerate(pairs):
        rgb = rgb_from_image(rgb_msg)
        depth = depth_from_image(depth_msg)
        if depth.shape != rgb.shape[:2] or rgb.shape[1] != intr.width:
            raise InputError(f"frame {im_id}: rgb {rgb.shape[:2]}, depth {depth.shape} and "
                             f"CameraInfo {intr.width}x{intr.height} differ; use registered depth")
        t_rgb = stamp_to_ns(rgb_msg.header.stamp)
        writer.add_frame(im_id, rgb, depth, None, [], stamp_ns=t_rgb,
                         depth_stamp_ns=stamp_to_ns(depth_msg.header.stamp))
        try:
            odom[str(im_id)] = tf.lookup(odom_frame, cam_frame, t_rgb).tolist()
        except TransformError:
            pass
    writer.close()
    if odom:
        atomic_write_json(Path(scene_dir) / "odometry.json",
                          {"frame": odom_frame, "child": cam_frame, "tf_source": tf_source,
                           "T_odom_camera": odom})
    return {"frames": len(pairs), "dropped": sync.dropped, "odometry_frames": len(odom),
            "tf_source": tf_source,
            "intrinsics": [intr.fx, intr.fy, intr.cx, intr.cy, intr.width, intr.height]}


def load_odometry(scene_dir: str | Path, n_frames: int) -> list[np.ndarray | None] | None:
    """T_odom_camera per frame from odometry.json (None when absent, incomplete or empty; an
    entry is None where the file has null: no prior for that frame)."""
    p = Path(scene_dir) / "odometry.json"
    if not p.exists():
        return None
    d = json.loads(p.read_text())["T_odom_camera"]
    if len(d) != n_frames:
        return None
    out = [None if d[str(i)] is None else np.asarray(d[str(i)], dtype=np.float64)
           for i in range(n_frames)]
    return out if any(T is not None for T in out) else None
