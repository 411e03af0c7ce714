"""TUM RGB-D layout: read a sequence, read/write trajectories in the TUM text format.

A TUM RGB-D sequence folder (Sturm et al., IROS 2012) holds ``rgb/`` and ``depth/`` images,
``rgb.txt`` / ``depth.txt`` (``timestamp path`` per line), optionally ``associations.txt``
(``t_rgb rgb/... t_depth depth/...``, made by TUM's associate.py) and ``groundtruth.txt``
(``timestamp tx ty tz qx qy qz qw``: T_world_camera of the RGB optical centre, metres, unit
quaternion x y z w). Depth PNGs are uint16 with ``depth_scale`` units per metre (5000 for TUM).

Intrinsics: TUM's files do not carry them. ``intrinsics.json`` next to the images (written for
``../shared/realdata``) is read when present; otherwise the OpenNI/ROS defaults (fx = fy = 525,
cx 319.5, cy 239.5 at 640x480) are used -- what TUM recommends for the registered depth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.datasets.sequence import FrameRecord, Sequence
from nol_ros.enums import TumIntrinsics
from nol_ros.errors import FileFormatError, InputError
from nol_ros.geometry import R_from_quat_xyzw, interpolate_T, quat_xyzw_from_R
from nol_ros.io_utils import atomic_write_text

ROS_DEFAULT = {"fx": 525.0, "fy": 525.0, "cx": 319.5, "cy": 239.5}


def _read_list(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        rows.append(s.split())
    return rows


def read_tum_trajectory(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """TUM trajectory file -> (stamps (N,) float64 s, poses (N, 4, 4) float64 T_world_camera)."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"trajectory file '{p}' does not exist")
    stamps, poses = [], []
    for k, row in enumerate(_read_list(p)):
        if len(row) != 8:
            raise FileFormatError(f"{p}: line {k + 1} has {len(row)} fields; a TUM trajectory "
                                  "line is 'timestamp tx ty tz qx qy qz qw'")
        v = np.array([float(x) for x in row])
        q = v[4:8]
        if not np.all(np.isfinite(v)) or abs(np.linalg.norm(q) - 1) > 1e-2:
            raise FileFormatError(f"{p}: line {k + 1} is not finite or its quaternion is not "
                                  f"unit length ({np.linalg.norm(q):.3f})")
        T = np.eye(4)
        T[:3, :3] = R_from_quat_xyzw(q / np.linalg.norm(q))
        T[:3, 3] = v[1:4]
        stamps.append(v[0])
        poses.append(T)
    if not poses:
        raise FileFormatError(f"trajectory file '{p}' holds no pose")
    return np.array(stamps), np.array(poses)


def format_tum_line(stamp_s: float, T: np.ndarray) -> str:
    q = quat_xyzw_from_R(np.asarray(T)[:3, :3])
    t = np.asarray(T)[:3, 3]
    return (f"{stamp_s:.6f} {t[0]:.6f} {t[1]:.6f} {t[2]:.6f} "
            f"{q[0]:.6f} {q[1]:.6f} {q[2]:.6f} {q[3]:.6f}")


def write_tum_trajectory(path: str | Path, stamps_s, poses, comment: str = "") -> Path:
    """Write poses (N, 4, 4) T_world_camera at stamps (N,) seconds as a TUM trajectory file
    (atomically)."""
    lines = [f"# {c}" for c in comment.splitlines()] if comment else []
    lines.append("# timestamp tx ty tz qx qy qz qw")
    lines += [format_tum_line(float(s), T) for s, T in zip(stamps_s, poses)]
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def interpolate_trajectory(stamps: np.ndarray, poses: np.ndarray, t: float,
                           max_gap_s: float = 0.1) -> np.ndarray | None:
    """Pose at time ``t`` (s): linear + slerp between the two nearest stamps; None when ``t`` is
    outside the trajectory or the two poses are more than ``max_gap_s`` apart."""
    i = int(np.searchsorted(stamps, t))
    if i == 0:
        return poses[0].copy() if abs(stamps[0] - t) < 1e-6 else None
    if i >= len(stamps):
        return poses[-1].copy() if abs(stamps[-1] - t) < 1e-6 else None
    t0, t1 = stamps[i - 1], stamps[i]
    if t1 - t0 > max_gap_s:
        return None
    return interpolate_T(poses[i - 1], poses[i], float((t - t0) / (t1 - t0)))


def _associate(rgb: list[tuple[float, str]], depth: list[tuple[float, str]],
               max_dt_s: float = 0.02) -> list[tuple[float, str, float, str]]:
    """TUM's associate.py rule: greedy by smallest time difference, each image used once."""
    cands = []
    dt = np.array([d[0] for d in depth])
    for i, (t, _) in enumerate(rgb):
        for j in np.nonzero(np.abs(dt - t) < max_dt_s)[0]:
            cands.append((abs(dt[j] - t), i, int(j)))
    cands.sort()
    used_r, used_d, out = set(), set(), []
    for _, i, j in cands:
        if i in used_r or j in used_d:
            continue
        used_r.add(i)
        used_d.add(j)
        out.append((rgb[i][0], rgb[i][1], depth[j][0], depth[j][1]))
    out.sort()
    return out


def tum_intrinsics(root: str | Path, which: str = "auto", width: int = 640,
                   height: int = 480) -> tuple[Intrinsics, np.ndarray | None]:
    """(pinhole intrinsics, distortion (5,) k1 k2 p1 p2 k3 or None) for a TUM folder.

    which: ``auto`` (intrinsics.json's pinhole ``intrinsics`` when it has one, else its RGB
    calibration when it has one -- images then undistorted --, else the OpenNI/ROS defaults),
    ``ros_default`` (the registered depth's pinhole model, no distortion),
    ``calibrated`` (the RGB camera's calibration with its distortion, from intrinsics.json)."""
    which = TumIntrinsics.parse(which, "intrinsics", InputError)
    p = Path(root) / "intrinsics.json"
    meta = json.loads(p.read_text()) if p.is_file() else {}
    width, height = int(meta.get("width", width)), int(meta.get("height", height))
    if which == TumIntrinsics.AUTO and "intrinsics" in meta:  # pinhole (images undistorted)
        d = meta["intrinsics"]
        return Intrinsics(d["fx"], d["fy"], d["cx"], d["cy"], width, height), None
    if which == TumIntrinsics.AUTO and any(k.startswith("rgb_intrinsics") for k in meta):
        # measured on fr1/desk: 3.5 cm ATE against 4.4 with the defaults
        which = TumIntrinsics.CALIBRATED
    if which in (TumIntrinsics.AUTO, TumIntrinsics.ROS_DEFAULT):
        d = meta.get("ros_default_intrinsics", ROS_DEFAULT)
        return Intrinsics(d["fx"], d["fy"], d["cx"], d["cy"], width, height), None
    keys = [k for k in meta if k.startswith("rgb_intrinsics")]  # CALIBRATED
    if not keys:
        raise InputError(f"{p} has no 'rgb_intrinsics_*' entry; use intrinsics 'ros_default'")
    d = meta[keys[0]]
    dist = d.get("distortion_plumb_bob_k1_k2_p1_p2_k3")
    return (Intrinsics(d["fx"], d["fy"], d["cx"], d["cy"], width, height),
            None if dist is None else np.asarray(dist, float))


@dataclass
class UndistortedFrameRecord(FrameRecord):
    """A frame whose images are undistorted on loading (colour bilinear, depth nearest: no
    depth is interpolated across an edge) with maps shared by the whole sequence."""

    maps: tuple | None = None

    def load_rgb(self) -> np.ndarray:
        return cv2.remap(super().load_rgb(), *self.maps, cv2.INTER_LINEAR)

    def load_depth(self) -> np.ndarray:
        return cv2.remap(super().load_depth(), *self.maps, cv2.INTER_NEAREST)


def undistortion_maps(intr: Intrinsics, dist: np.ndarray) -> tuple:
    """cv2.remap maps that turn images of the distorted camera into images of the pinhole
    camera ``intr`` (same K)."""
    return cv2.initUndistortRectifyMap(intr.K, np.asarray(dist, float), None, intr.K,
                                       (intr.width, intr.height), cv2.CV_32FC1)


def read_tum_sequence(root: str | Path, intrinsics: str = "auto", start: int = 0,
                      max_frames: int = 0, step: int = 1, depth_scale: float | None = None
                      ) -> Sequence:
    """A TUM RGB-D folder as a :class:`Sequence` (frames = associated RGB-D pairs; the ground
    truth, when given, interpolated to each RGB stamp: frames it does not cover get None).

    intrinsics: see :func:`tum_intrinsics`; with ``calibrated`` the frames load undistorted
    (the registered depth with the colour camera's distortion model, which the OpenNI
    registration maps it into), so the sequence's intrinsics are an exact pinhole model.
    start/max_frames/step pick a stretch of the associated pairs (0 = to the end)."""
    r = Path(root)
    if not r.is_dir():
        raise FileFormatError(f"TUM sequence folder '{r}' does not exist")
    if (r / "associations.txt").is_file():
        pairs = []
        for k, row in enumerate(_read_list(r / "associations.txt")):
            if len(row) < 4:
                raise FileFormatError(f"{r / 'associations.txt'}: line {k + 1} needs "
                                      "'t_rgb rgb/... t_depth depth/...'")
            a, b = (row[0], row[1], row[2], row[3]), None
            # both orders occur in the wild: rgb first (TUM's tools) or depth first
            if "depth" in a[1] and "rgb" in a[3]:
                b = (float(a[2]), a[3], float(a[0]), a[1])
            else:
                b = (float(a[0]), a[1], float(a[2]), a[3])
            pairs.append(b)
    elif (r / "rgb.txt").is_file() and (r / "depth.txt").is_file():
        def lst(name):
            return [(float(row[0]), row[1]) for row in _read_list(r / name)]
        pairs = _associate(lst("rgb.txt"), lst("depth.txt"))
    else:
        raise FileFormatError(f"'{r}' is not a TUM RGB-D folder: it needs associations.txt or "
                              "rgb.txt + depth.txt")
    if not pairs:
        raise FileFormatError(f"'{r}': no associated RGB-D pair")
    pairs = pairs[start:]
    if max_frames > 0:
        pairs = pairs[: max_frames * max(1, step)]
    pairs = pairs[:: max(1, step)]
    meta = {}
    if (r / "intrinsics.json").is_file():
        meta = json.loads((r / "intrinsics.json").read_text())
    scale = float(depth_scale or meta.get("depth_scale", 5000.0))
    first = cv2.imread(str(r / pairs[0][1]), cv2.IMREAD_UNCHANGED)
    if first is None:
        raise FileFormatError(f"cannot read '{r / pairs[0][1]}'")
    h, w = first.shape[:2]
    intr, dist = tum_intrinsics(r, intrinsics, w, h)
    maps = undistortion_maps(intr, dist) if dist is not None and np.any(dist) else None
    gt = None
    if (r / "groundtruth.txt").is_file():
        gt = read_tum_trajectory(r / "groundtruth.txt")
    frames = []
    for k, (t_rgb, p_rgb, t_d, p_d) in enumerate(pairs):
        T = None if gt is None else interpolate_trajectory(gt[0], gt[1], t_rgb)
        kw = dict(index=k, stamp_ns=int(round(t_rgb * 1e9)), depth_stamp_ns=int(round(t_d * 1e9)),
                  rgb_path=str(r / p_rgb), depth_path=str(r / p_d), T_world_camera=T,
                  depth_scale_m=1.0 / scale)
        frames.append(FrameRecord(**kw) if maps is None else UndistortedFrameRecord(**kw,
                                                                                    maps=maps))
    return Sequence(name=r.name, intrinsics=intr, frames=frames, root=str(r),
                    depth_scale_m=1.0 / scale)
