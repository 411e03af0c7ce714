"""Export any Sequence (BOP, SMOT, synthetic) as a rosbag2 with the Xtion's topics, no ROS needed.

Topics: /camera/rgb/image_raw (rgb8), /camera/depth_registered/image_raw (16UC1 mm, 0 invalid,
its own stamp), /camera/rgb/camera_info, /tf (odom -> base_link per frame), /tf_static
(base_link -> camera_rgb_optical_frame, a fixed mount). Camera poses become odometry:
``tf_mode`` "gt" publishes them exactly (odom = the dataset's world), "odom" adds wheel-odometry
drift (a random walk in x, y and yaw that grows with the distance travelled), "none" omits /tf.

CLI: python -m nol_ros.datasets.bag --bop SCENE_DIR --out OUT  (or --smot ROOT --seq train/seq1)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from nol_ros.errors import InputError, NolError

RGB_TOPIC = "/camera/rgb/image_raw"
DEPTH_TOPIC = "/camera/depth_registered/image_raw"
INFO_TOPIC = "/camera/rgb/camera_info"
CAMERA_FRAME = "camera_rgb_optical_frame"
BASE_FRAME = "base_link"
ODOM_FRAME = "odom"


def _mount(T_world_camera0: np.ndarray) -> np.ndarray:
    """T_base_camera of a fixed mount: base_link under the first camera pose at world z = 0,
    x along the camera's heading (yaw), camera orientation as in the first frame."""
    R = T_world_camera0[:3, :3]
    z_cam = R[:, 2]
    yaw = np.arctan2(z_cam[1], z_cam[0])
    T_wb = np.eye(4)
    T_wb[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    T_wb[:3, 3] = [T_world_camera0[0, 3], T_world_camera0[1, 3], 0.0]
    return np.linalg.inv(T_wb) @ T_world_camera0


def odometry_poses(T_world_cameras: list[np.ndarray], mode: str = "odom", seed: int = 0,
                   yaw_drift_rad_per_sqrt_m: float = 0.01,
                   xy_drift_m_per_sqrt_m: float = 0.01) -> tuple[list[np.ndarray], np.ndarray]:
    """(T_odom_base per frame, T_base_camera). mode gt: exact; odom: drifting."""
    T_bc = _mount(T_world_cameras[0])
    T_cb = np.linalg.inv(T_bc)
    rng = np.random.default_rng(seed)
    out, D = [], np.eye(4)
    prev = None
    for T_wc in T_world_cameras:
        T_wb = T_wc @ T_cb
        if mode == "odom" and prev is not None:
            ds = float(np.linalg.norm(T_wb[:2, 3] - prev[:2, 3]))
            dyaw = rng.normal(0, yaw_drift_rad_per_sqrt_m * np.sqrt(ds))
            dxy = rng.normal(0, xy_drift_m_per_sqrt_m * np.sqrt(ds), 2)
            step = np.eye(4)
            step[:2, :2] = [[np.cos(dyaw), -np.sin(dyaw)], [np.sin(dyaw), np.cos(dyaw)]]
            step[:2, 3] = dxy
            # the error enters at the robot's current position (rotation about the robot)
            D = D @ (T_wb @ step @ np.linalg.inv(T_wb))
        prev = T_wb
        out.append(D @ T_wb)
    return out, T_bc


def export_bag(seq, out_path: str | Path, tf_mode: str = "odom", storage: str = "mcap",
               seed: int = 0, max_frames: int = 0) -> dict:
    """Write ``seq`` as a rosbag2 folder at ``out_path``; returns a summary."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if tf_mode not in ("gt", "odom", "none"):
        raise InputError(f"tf_mode '{tf_mode}' unknown; use gt, odom or none")
    out = Path(out_path)
    if out.exists():
        raise InputError(f"'{out}' exists; choose a new output path (nothing is overwritten)")
    frames = seq.frames[:max_frames] if max_frames else seq.frames
    if not frames:
        raise InputError("the sequence has no frames")
    if tf_mode != "none" and any(f.T_world_camera is None for f in frames):
        raise InputError("some frames have no camera pose; export with tf_mode='none'")
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Image, CameraInfo = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"]
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    TFMessage, TS = T["tf2_msgs/msg/TFMessage"], T["geometry_msgs/msg/TransformStamped"]
    Transform, Vec, Quat = (T["geometry_msgs/msg/Transform"], T["geometry_msgs/msg/Vector3"],
                            T["geometry_msgs/msg/Quaternion"])
    ROI = T["sensor_msgs/msg/RegionOfInterest"]
    from nol_ros.geometry import quat_xyzw_from_R

    def stamp(ns):
        return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def tf_msg(parent, child, ns, M):
        q = quat_xyzw_from_R(M[:3, :3])
        return TS(header=Header(stamp=stamp(ns), frame_id=parent), child_frame_id=child,
                  transform=Transform(translation=Vec(x=float(M[0, 3]), y=float(M[1, 3]),
                                                     z=float(M[2, 3])),
                                      rotation=Quat(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                    w=float(q[3]))))

    intr = seq.intrinsics
    K = intr.K
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    n_tf = 0
    odom = base_cam = None
    if tf_mode != "none":
        odom, base_cam = odometry_poses([f.T_world_camera for f in frames], tf_mode, seed)
    with Writer(out, version=9, storage_plugin=plugin) as w:
        c_rgb = w.add_connection(RGB_TOPIC, Image.__msgtype__, typestore=ts)
        c_d = w.add_connection(DEPTH_TOPIC, Image.__msgtype__, typestore=ts)
        c_i = w.add_connection(INFO_TOPIC, CameraInfo.__msgtype__, typestore=ts)
        c_tf = c_st = None
        if tf_mode != "none":
            c_tf = w.add_connection("/tf", TFMessage.__msgtype__, typestore=ts)
            c_st = w.add_connection("/tf_static", TFMessage.__msgtype__, typestore=ts)
            t0 = frames[0].stamp_ns
            st = TFMessage(transforms=[tf_msg(BASE_FRAME, CAMERA_FRAME, t0, base_cam)])
            w.write(c_st, t0, bytes(ts.serialize_cdr(st, TFMessage.__msgtype__)))
        for k, fr in enumerate(frames):
            rgb = fr.load_rgb()
            depth = fr.load_depth()
            if rgb.shape[:2] != (intr.height, intr.width) or depth.shape != rgb.shape[:2]:
                raise InputError(f"frame {fr.index}: image size {rgb.shape[:2]} / depth "
                                 f"{depth.shape} differs from the intrinsics "
                                 f"{intr.width}x{intr.height}")
            hdr = Header(stamp=stamp(fr.stamp_ns), frame_id=CAMERA_FRAME)
            img = Image(header=hdr, height=intr.height, width=intr.width, encoding="rgb8",
                        is_bigendian=0, step=intr.width * 3, data=rgb.reshape(-1))
            mm = np.clip(np.round(depth * 1000), 0, 65535).astype("<u2")
            dh = Header(stamp=stamp(fr.depth_stamp_ns), frame_id=CAMERA_FRAME)
            dimg = Image(header=dh, height=intr.height, width=intr.width, encoding="16UC1",
                         is_bigendian=0, step=intr.width * 2,
                         data=mm.reshape(-1).view(np.uint8))
            info = CameraInfo(header=hdr, height=intr.height, width=intr.width,
                              distortion_model="plumb_bob", d=np.zeros(5),
                              k=K.reshape(-1).astype(np.float64),
                              r=np.eye(3).reshape(-1),
                              p=np.c_[K, np.zeros(3)].reshape(-1).astype(np.float64),
                              binning_x=0, binning_y=0,
                              roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            if c_tf is not None:
                m = TFMessage(transforms=[tf_msg(ODOM_FRAME, BASE_FRAME, fr.stamp_ns, odom[k])])
                w.write(c_tf, fr.stamp_ns, bytes(ts.serialize_cdr(m, TFMessage.__msgtype__)))
                n_tf += 1
            w.write(c_i, fr.stamp_ns, bytes(ts.serialize_cdr(info, CameraInfo.__msgtype__)))
            w.write(c_rgb, fr.stamp_ns, bytes(ts.serialize_cdr(img, Image.__msgtype__)))
            w.write(c_d, fr.depth_stamp_ns, bytes(ts.serialize_cdr(dimg, Image.__msgtype__)))
    return {"path": str(out), "frames": len(frames), "tf_messages": n_tf, "tf_mode": tf_mode}


def read_bag_frames(path: str | Path):
    """Iterate (rgb_stamp_ns, rgb uint8, depth_stamp_ns, depth_m float32) in RGB order, pairing
    each RGB image with the depth image closest in time (for tests and tools)."""
    from rosbags.typesys import Stores, get_typestore

    from nol_ros.ros.bag_replay import open_bag
    from nol_ros.ros.conversions import depth_from_image, rgb_from_image, stamp_to_ns

    ts = get_typestore(Stores.ROS2_KILTED)
    reader = open_bag(path)
    rgbs, depths = [], []
    try:
        for conn, _t, raw in reader.messages():
            if conn.topic == RGB_TOPIC:
                m = ts.deserialize_cdr(raw, conn.msgtype)
                rgbs.append((stamp_to_ns(m.header.stamp), rgb_from_image(m)))
            elif conn.topic == DEPTH_TOPIC:
                m = ts.deserialize_cdr(raw, conn.msgtype)
                depths.append((stamp_to_ns(m.header.stamp), depth_from_image(m)))
    finally:
        reader.close()
    dst = np.array([d[0] for d in depths])
    for t, rgb in rgbs:
        j = int(np.argmin(np.abs(dst - t)))
        yield t, rgb, depths[j][0], depths[j][1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m nol_ros.datasets.bag",
        description="Convert a BOP scene or a SMOT sequence into a rosbag2 with Xtion topics "
                    "(replay it with `nol-ros replay`). Example: --bop data/train/000001 "
                    "--out train.bag")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bop", help="BOP scene folder (with scene_camera.json)")
    src.add_argument("--smot", help="SMOT root folder (with camera_intrinsic.json)")
    ap.add_argument("--seq", default="train/seq1", help="SMOT sequence (default train/seq1)")
    ap.add_argument("--out", required=True, help="output bag folder (must not exist)")
    ap.add_argument("--tf", default="gt", choices=["gt", "odom", "none"],
                    help="camera poses as exact odometry (gt), drifting odometry, or no /tf")
    ap.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    args = ap.parse_args(argv)
    try:
        if args.bop:
            from nol_ros.datasets.bop import read_bop_scene

            seq = read_bop_scene(args.bop)
        else:
            from nol_ros.datasets.smot import read_smot

            seq = read_smot(args.smot, args.seq)
        summary = export_bag(seq, args.out, tf_mode=args.tf, storage=args.storage)
    except NolError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['frames']} frames to {summary['path']} (tf: {summary['tf_mode']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
