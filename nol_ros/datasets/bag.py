"""Export any Sequence (BOP, SMOT, synthetic) as a rosbag2 with the Xtion's topics, no ROS needed.

Topics (as an ASUS Xtion driver with registered depth publishes them):

    /camera/rgb/image_raw              sensor_msgs/Image rgb8, frame camera_rgb_optical_frame
    /camera/depth_registered/image_raw sensor_msgs/Image 16UC1 millimetres (0 = invalid), stamped
                                       with the frame's depth_stamp_ns (its own clock tick)
    /camera/rgb/camera_info            sensor_msgs/CameraInfo: K, P = [K | 0], R = I,
                                       D = 5 zeros, plumb_bob (images are rectified/registered)
    /tf                                tf2_msgs/TFMessage: odom -> base_link, one per frame
    /tf_static                         base_link -> camera_rgb_optical_frame (fixed mount);
                                       in tf_mode "gt" also map -> odom (identity)

Robot model: the camera sits on a fixed mount ``CameraMount.height_m`` (1.0 m) above
base_link. base_link is placed under the FIRST camera pose (world z is taken as up), its x axis
along the camera's viewing direction projected on the ground plane; T_base_camera is constant,
so base_link follows the camera with T_world_base = T_world_camera @ inv(T_base_camera).

tf_mode:
  "gt"   odom -> base_link is exact: the odom frame is the dataset's world frame (a static
         map -> odom identity is added), so odom -> camera_rgb_optical_frame is the ground truth.
  "odom" like wheel odometry: base increments are corrupted by a random walk in x, y and yaw
         (``OdomDrift``, std growing with the square root of the distance travelled and of the
         angle turned); the first frame is exact, the error then accumulates.
  "none" no /tf and no /tf_static (frames without poses can then be exported).

The bag says which it is: its metadata.yaml ``custom_data`` holds ``nol_ros.tf_mode`` (gt |
odom | none), ``nol_ros.tf_source`` (``ground_truth``: the sequence's camera poses, exact;
``simulated_wheel_odometry``: those poses with drift; ``none``), ``nol_ros.source`` (the
sequence's name and folder) and ``nol_ros.world_frame`` (the frame the poses are in: ``map`` =
``odom`` for gt). :func:`read_bag_custom_data` reads it back (``ros2 bag info`` shows it too).

The bag is a rosbag2 FOLDER (metadata.yaml + one .mcap or .db3 file), as ``ros2 bag record -o``
writes it; ``storage`` picks MCAP (default) or sqlite3.

CLI: python -m nol_ros.datasets.bag --bop SCENE_DIR --out OUT [--tf gt|odom|none]
     python -m nol_ros.datasets.bag --smot ROOT --seq train/seq1 --out OUT
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from nol_ros.datasets.bop import read_bop_scene
from nol_ros.datasets.smot import read_smot
from nol_ros.enums import BagStorage, TfMode
from nol_ros.errors import FileFormatError, InputError, NolError
from nol_ros.geometry import quat_xyzw_from_R
from nol_ros.streaming.messages import (
    depth_from_image,
    matrix_from_transform,
    rgb_from_image,
    stamp_to_ns,
)

RGB_TOPIC = "/camera/rgb/image_raw"
DEPTH_TOPIC = "/camera/depth_registered/image_raw"
INFO_TOPIC = "/camera/rgb/camera_info"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
CAMERA_FRAME = "camera_rgb_optical_frame"
BASE_FRAME = "base_link"
ODOM_FRAME = "odom"
MAP_FRAME = "map"
TF_SOURCES = {TfMode.GT: "ground_truth", TfMode.ODOM: "simulated_wheel_odometry",
              TfMode.NONE: "none"}


@dataclass(frozen=True)
class OdomDrift:
    """Wheel-odometry error model: each base increment gets a planar error (x, y, yaw in the base
    frame) with these standard deviations per square root of the motion of that increment."""

    xy_m_per_sqrt_m: float = 0.01        # position error per sqrt(metre travelled)
    yaw_rad_per_sqrt_m: float = 0.01     # heading error per sqrt(metre travelled)
    yaw_rad_per_sqrt_rad: float = 0.0    # heading error per sqrt(radian turned)

    def __post_init__(self):
        if min(self.xy_m_per_sqrt_m, self.yaw_rad_per_sqrt_m, self.yaw_rad_per_sqrt_rad) < 0:
            raise InputError(f"OdomDrift values must be >= 0, got {self}")


@dataclass(frozen=True)
class CameraMount:
    """Fixed camera mount: the optical frame is ``height_m`` above base_link (see module doc)."""

    height_m: float = 1.0


def mount_transform(T_world_camera0: np.ndarray, mount: CameraMount = CameraMount()
                    ) -> np.ndarray:
    """T_base_camera (4, 4) of the fixed mount, from the first camera pose: base_link lies
    ``mount.height_m`` below the camera along world z, x along the camera's heading."""
    T0 = np.asarray(T_world_camera0, dtype=np.float64)
    R = T0[:3, :3]
    fwd = R[:, 2][:2]                 # optical z projected on the ground
    if np.linalg.norm(fwd) < 1e-6:    # looking straight down/up: use image "up" (-y)
        fwd = -R[:, 1][:2]
    yaw = float(np.arctan2(fwd[1], fwd[0]))
    T_wb = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    T_wb[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T_wb[:3, 3] = T0[:3, 3] - [0.0, 0.0, mount.height_m]
    return np.linalg.inv(T_wb) @ T0


def _planar(dx: float, dy: float, dyaw: float) -> np.ndarray:
    E = np.eye(4)
    c, s = np.cos(dyaw), np.sin(dyaw)
    E[:2, :2] = [[c, -s], [s, c]]
    E[:2, 3] = [dx, dy]
    return E


def odometry_poses(T_world_cameras: list[np.ndarray], mode: str = "odom",
                   drift: OdomDrift = OdomDrift(), rng: np.random.Generator | None = None,
                   mount: CameraMount = CameraMount()) -> tuple[list[np.ndarray], np.ndarray]:
    """(T_odom_base per frame (4, 4), T_base_camera (4, 4)).

    mode "gt": T_odom_base = T_world_base exactly. mode "odom": T_odom_base[0] = T_world_base[0]
    and T_odom_base[k] = T_odom_base[k-1] @ inc_k @ E_k with the true increment inc_k =
    inv(T_world_base[k-1]) @ T_world_base[k] and a planar error E_k (``drift``)."""
    mode = TfMode.parse(mode, "odometry mode", InputError)
    if mode == TfMode.NONE:
        raise InputError("odometry mode 'none' has no odometry poses; use gt or odom")
    rng = np.random.default_rng(0) if rng is None else rng
    T_bc = mount_transform(T_world_cameras[0], mount)
    T_cb = np.linalg.inv(T_bc)
    T_wbs = [np.asarray(T, dtype=np.float64) @ T_cb for T in T_world_cameras]
    if mode == TfMode.GT:
        return T_wbs, T_bc
    out = [T_wbs[0].copy()]
    for k in range(1, len(T_wbs)):
        inc = np.linalg.inv(T_wbs[k - 1]) @ T_wbs[k]
        ds = float(np.linalg.norm(T_wbs[k][:2, 3] - T_wbs[k - 1][:2, 3]))
        dyaw = rng.normal(0, drift.yaw_rad_per_sqrt_m * np.sqrt(ds))
        dxy = rng.normal(0, drift.xy_m_per_sqrt_m * np.sqrt(ds), 2)
        if drift.yaw_rad_per_sqrt_rad > 0:
            turned = abs(float(np.arctan2(inc[1, 0], inc[0, 0])))
            dyaw += rng.normal(0, drift.yaw_rad_per_sqrt_rad * np.sqrt(turned))
        out.append(out[-1] @ inc @ _planar(dxy[0], dxy[1], dyaw))
    return out, T_bc


def _check_pose(T, what: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"{what} must be a finite (4, 4) matrix")
    return T


def export_bag(seq, out_path: str | Path, tf_mode: str = "odom",
               odom_drift: OdomDrift = OdomDrift(), rng: np.random.Generator | None = None,
               seed: int = 0, storage: str = "mcap", max_frames: int = 0,
               mount: CameraMount = CameraMount()) -> dict:
    """Write ``seq`` (a :class:`nol_ros.datasets.sequence.Sequence`) as a rosbag2 folder at
    ``out_path`` (must not exist). tf_mode: "gt" | "odom" | "none" (module docstring). rng:
    the drift's random generator (default: ``np.random.default_rng(seed)``). storage: "mcap"
    | "sqlite3". max_frames: 0 = all. Returns {path, frames, tf_messages, tf_mode, storage}."""
    tf_mode = TfMode.parse(tf_mode, "tf_mode", InputError)
    storage = BagStorage.parse(storage, "storage", InputError)
    out = Path(out_path)
    if out.exists():
        raise InputError(f"'{out}' exists; choose a new output path (nothing is overwritten)")
    frames = seq.frames[:max_frames] if max_frames else seq.frames
    if not frames:
        raise InputError(f"sequence '{seq.name}' has no frames")
    odom = base_cam = None
    if tf_mode != "none":
        missing = [f.index for f in frames if f.T_world_camera is None]
        if missing:
            raise InputError(f"frames {missing[:5]} of '{seq.name}' have no camera pose; export "
                             "with tf_mode='none' (or self-annotate the sequence first)")
        poses = [_check_pose(f.T_world_camera, f"frame {f.index}: T_world_camera")
                 for f in frames]
        rng = np.random.default_rng(seed) if rng is None else rng
        odom, base_cam = odometry_poses(poses, tf_mode, odom_drift, rng, mount)

    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    Image, CameraInfo = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CameraInfo"]
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    TFMessage, TS = T["tf2_msgs/msg/TFMessage"], T["geometry_msgs/msg/TransformStamped"]
    Transform, Vec, Quat = (T["geometry_msgs/msg/Transform"], T["geometry_msgs/msg/Vector3"],
                            T["geometry_msgs/msg/Quaternion"])
    ROI = T["sensor_msgs/msg/RegionOfInterest"]

    def stamp(ns):
        return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def tf_msg(parent, child, ns, M):
        q = quat_xyzw_from_R(M[:3, :3])
        return TS(header=Header(stamp=stamp(ns), frame_id=parent), child_frame_id=child,
                  transform=Transform(translation=Vec(x=float(M[0, 3]), y=float(M[1, 3]),
                                                     z=float(M[2, 3])),
                                      rotation=Quat(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                    w=float(q[3]))))

    def ser(msg, typ):
        return bytes(ts.serialize_cdr(msg, typ.__msgtype__))

    zero = QosTime(sec=0, nsec=0)
    latched = Qos(history=QosHistory.KEEP_LAST, depth=100, reliability=QosReliability.RELIABLE,
                  durability=QosDurability.TRANSIENT_LOCAL, deadline=zero, lifespan=zero,
                  liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
                  avoid_ros_namespace_conventions=False)
    intr = seq.intrinsics
    K = intr.K
    plugin = StoragePlugin.MCAP if storage == BagStorage.MCAP else StoragePlugin.SQLITE3
    n_tf = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with Writer(out, version=9, storage_plugin=plugin) as w:
        w.set_custom_data("nol_ros.tf_mode", tf_mode.value)
        w.set_custom_data("nol_ros.tf_source", TF_SOURCES[tf_mode])
        w.set_custom_data("nol_ros.source", f"{seq.name} ({getattr(seq, 'root', '')})")
        if tf_mode == "gt":
            w.set_custom_data("nol_ros.world_frame", MAP_FRAME)
        c_rgb = w.add_connection(RGB_TOPIC, Image.__msgtype__, typestore=ts)
        c_d = w.add_connection(DEPTH_TOPIC, Image.__msgtype__, typestore=ts)
        c_i = w.add_connection(INFO_TOPIC, CameraInfo.__msgtype__, typestore=ts)
        c_tf = None
        if tf_mode != "none":
            c_tf = w.add_connection(TF_TOPIC, TFMessage.__msgtype__, typestore=ts)
            c_st = w.add_connection(TF_STATIC_TOPIC, TFMessage.__msgtype__, typestore=ts,
                                    offered_qos_profiles=[latched])
            t0 = min(frames[0].stamp_ns, frames[0].depth_stamp_ns)
            statics = [tf_msg(BASE_FRAME, CAMERA_FRAME, t0, base_cam)]
            if tf_mode == "gt":
                statics.append(tf_msg(MAP_FRAME, ODOM_FRAME, t0, np.eye(4)))
            w.write(c_st, t0, ser(TFMessage(transforms=statics), TFMessage))
        for k, fr in enumerate(frames):
            rgb = fr.load_rgb()
            depth = fr.load_depth()
            if rgb.shape[:2] != (intr.height, intr.width) or depth.shape != rgb.shape[:2]:
                raise InputError(f"frame {fr.index}: rgb {rgb.shape[:2]} / depth {depth.shape} "
                                 f"differ from the intrinsics' {intr.height}x{intr.width} "
                                 "(height x width); fix the images or the intrinsics")
            hdr = Header(stamp=stamp(fr.stamp_ns), frame_id=CAMERA_FRAME)
            img = Image(header=hdr, height=intr.height, width=intr.width, encoding="rgb8",
                        is_bigendian=0, step=intr.width * 3, data=rgb.reshape(-1))
            ok = np.isfinite(depth) & (depth > 0)
            mm = np.clip(np.round(np.where(ok, depth, 0) * 1000), 0, 65535).astype("<u2")
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
                w.write(c_tf, fr.stamp_ns, ser(m, TFMessage))
                n_tf += 1
            w.write(c_i, fr.stamp_ns, ser(info, CameraInfo))
            w.write(c_rgb, fr.stamp_ns, ser(img, Image))
            w.write(c_d, fr.depth_stamp_ns, ser(dimg, Image))
    return {"path": str(out), "frames": len(frames), "tf_messages": n_tf,
            "tf_mode": tf_mode.value, "tf_source": TF_SOURCES[tf_mode], "storage": storage.value}


def read_bag_custom_data(path: str | Path) -> dict[str, str]:
    """The ``custom_data`` of a rosbag2's metadata.yaml ({} when it has none): for bags written
    by :func:`export_bag`, ``nol_ros.tf_mode`` / ``nol_ros.tf_source`` say whether /tf is the
    ground truth, drifting odometry or absent."""
    p = Path(path)
    meta = (p.parent if p.is_file() else p) / "metadata.yaml"
    if not meta.is_file():
        raise FileFormatError(f"'{path}' is not a rosbag2 directory (no metadata.yaml)")
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise FileFormatError(f"'{meta}' is not a rosbag2 metadata file: {e}") from e
    return {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}


def _camera_info_dict(m, stamp_ns: int) -> dict:
    return {"stamp_ns": stamp_ns, "frame_id": m.header.frame_id, "width": int(m.width),
            "height": int(m.height), "distortion_model": m.distortion_model,
            "K": np.asarray(m.k, dtype=np.float64).reshape(3, 3),
            "D": np.asarray(m.d, dtype=np.float64).copy(),
            "R": np.asarray(m.r, dtype=np.float64).reshape(3, 3),
            "P": np.asarray(m.p, dtype=np.float64).reshape(3, 4)}


def read_bag_frames(path: str | Path, rgb_topic: str = RGB_TOPIC, depth_topic: str = DEPTH_TOPIC,
                    info_topic: str = INFO_TOPIC):
    """Iterate (rgb_stamp_ns, rgb (H, W, 3) uint8, depth_stamp_ns, depth_m (H, W) float32 metres
    with 0 = invalid, camera_info dict) in RGB order; each RGB image is paired with the depth
    image and the CameraInfo closest in time (for tests and tools; loads the bag's images).
    camera_info dict: stamp_ns, frame_id, width, height, distortion_model, K (3, 3), D (n,),
    R (3, 3), P (3, 4); None when the bag has no CameraInfo."""
    ts = get_typestore(Stores.ROS2_KILTED)
    reader = open_bag(path)
    rgbs, depths, infos = [], [], []
    try:
        for conn, _t, raw in reader.messages():
            if conn.topic not in (rgb_topic, depth_topic, info_topic):
                continue
            m = ts.deserialize_cdr(raw, conn.msgtype)
            t = stamp_to_ns(m.header.stamp)
            if conn.topic == rgb_topic:
                rgbs.append((t, rgb_from_image(m)))
            elif conn.topic == depth_topic:
                depths.append((t, depth_from_image(m)))
            else:
                infos.append(_camera_info_dict(m, t))
    finally:
        reader.close()
    if rgbs and not depths:
        raise InputError(f"bag '{path}' has colour images but no depth on '{depth_topic}'")
    dst = np.array([d[0] for d in depths], dtype=np.int64)
    ist = np.array([i["stamp_ns"] for i in infos], dtype=np.int64)
    for t, rgb in sorted(rgbs, key=lambda x: x[0]):
        j = int(np.argmin(np.abs(dst - t)))
        info = infos[int(np.argmin(np.abs(ist - t)))] if infos else None
        yield t, rgb, int(depths[j][0]), depths[j][1], info


def read_bag_tf(path: str | Path) -> list[tuple[int, str, str, np.ndarray, bool]]:
    """All transforms of /tf and /tf_static, in bag order: (stamp_ns, parent_frame,
    child_frame, T_parent_child (4, 4) float64, is_static)."""
    ts = get_typestore(Stores.ROS2_KILTED)
    reader = open_bag(path)
    out = []
    try:
        conns = [c for c in reader.connections if c.topic in (TF_TOPIC, TF_STATIC_TOPIC)]
        # (rosbags reads ALL messages for an empty connection list)
        for conn, _t, raw in reader.messages(connections=conns) if conns else ():
            m = ts.deserialize_cdr(raw, conn.msgtype)
            for tr in m.transforms:
                out.append((stamp_to_ns(tr.header.stamp), tr.header.frame_id, tr.child_frame_id,
                            matrix_from_transform(tr.transform), conn.topic == TF_STATIC_TOPIC))
    finally:
        reader.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI; returns the exit code (0 ok, 2 bad arguments or input, with a message)."""
    ap = argparse.ArgumentParser(
        prog="python -m nol_ros.datasets.bag",
        description="Convert a BOP scene or a SMOT sequence into a rosbag2 folder with ASUS Xtion "
                    "topics (/camera/rgb/image_raw, /camera/depth_registered/image_raw, "
                    "/camera/rgb/camera_info, /tf, /tf_static). Examples: "
                    "--bop data/train/000001 --out bags/train_000001 ; "
                    "--smot SMOT --seq train/seq1 --out bags/seq1 --tf odom")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bop", metavar="SCENE_DIR", help="BOP scene folder (with "
                     "scene_camera.json)")
    src.add_argument("--smot", metavar="ROOT", help="SMOT root folder (with "
                     "camera_intrinsic.json)")
    ap.add_argument("--seq", default=None, help="SMOT sequence below ROOT (default train/seq1)")
    ap.add_argument("--out", required=True, help="output bag folder (must not exist)")
    ap.add_argument("--tf", default="gt", choices=list(TfMode),
                    help="camera poses as exact odometry, marked as ground truth in the bag's "
                         "metadata (gt, default), drifting wheel odometry (odom), or no /tf "
                         "(none)")
    ap.add_argument("--storage", default="mcap", choices=list(BagStorage),
                    help="rosbag2 storage plugin (default mcap)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the odometry drift")
    ap.add_argument("--max-frames", type=int, default=0, help="export only the first N frames")
    args = ap.parse_args(argv)
    if args.bop and args.seq is not None:
        ap.error("--seq belongs to --smot; a BOP scene folder is one sequence")
    if args.max_frames < 0:
        ap.error("--max-frames must be >= 0")
    try:
        if args.bop:
            seq = read_bop_scene(args.bop)
        else:
            seq = read_smot(args.smot, args.seq or "train/seq1")
        summary = export_bag(seq, args.out, tf_mode=args.tf, storage=args.storage,
                             seed=args.seed, max_frames=args.max_frames)
    except NolError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['frames']} frames to {summary['path']} ({summary['storage']}, "
          f"tf: {summary['tf_mode']} = {summary['tf_source']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def open_bag(path: str | Path):
    """Open a rosbag2 directory (or a single .mcap/.db3 file's directory) with rosbags."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not (p / "metadata.yaml").exists():
        raise FileFormatError(
            f"'{path}' is not a rosbag2 directory (no metadata.yaml); pass the bag folder written "
            "by ros2 bag record / nol-ros record, not a ROS 1 .bag")
    try:
        reader = Reader(p)
        reader.open()
    except Exception as e:  # rosbags raises its own error types
        raise FileFormatError(
            f"cannot open bag '{path}': {e}. The bag file is damaged or truncated (a recording "
            "that was cut off?): recover the messages before the damage with `mcap recover "
            "IN.mcap -o OUT.mcap` (the mcap CLI) for MCAP, or `ros2 bag reindex` for sqlite3, "
            "then pass the recovered bag") from e
    return reader


def nol_typestore():
    """rosbags Kilted type store plus nol_ros's and tf2_msgs's own message definitions."""
    store = get_typestore(Stores.ROS2_KILTED)
    msg_dir = Path(__file__).resolve().parents[2] / "msg"
    types = {}
    for f in sorted(msg_dir.glob("*.msg")) if msg_dir.is_dir() else []:
        types.update(get_types_from_msg(f.read_text(), f"nol_ros/msg/{f.stem}"))
    if types:
        store.register(types)
    return store
