"""The one in-memory form of an RGB-D sequence, whatever the files it came from.

Readers (BOP, SMOT, bag import) build a :class:`Sequence`; the pipeline, the bag exporter and the
evaluation only see this. Images stay on disk and are loaded per frame. Units: metres; poses
``T_a_b`` are (4, 4) float64 and map points of frame b into frame a; the camera frame is the
OpenCV optical frame (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import FileFormatError


@dataclass
class ObjectInfo:
    """One object of a sequence.

    mesh_path: the untextured mesh the pipeline receives (metres; "" when unknown).
    T_world_object: (4, 4) float64 ground-truth pose in the sequence's world frame, or None.
    """

    obj_id: int
    name: str = ""
    mesh_path: str = ""
    symmetric: bool = False
    T_world_object: np.ndarray | None = None


@dataclass
class FrameRecord:
    """One RGB-D frame.

    stamp_ns / depth_stamp_ns: acquisition times of the colour and the depth image (ns; they
    differ on a real Xtion). T_world_camera: (4, 4) float64 camera pose (ground truth or
    self-annotated) or None. depth_scale_m: metres per unit of the 16-bit depth file.
    T_camera_objects: obj_id -> (4, 4) float64 per-frame object pose when the files give one.
    """

    index: int
    stamp_ns: int
    depth_stamp_ns: int
    rgb_path: str
    depth_path: str
    T_world_camera: np.ndarray | None = None
    depth_scale_m: float = 1e-3
    T_camera_objects: dict = field(default_factory=dict)

    def load_rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB (grey images are expanded to three channels)."""
        img = cv2.imread(self.rgb_path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileFormatError(f"cannot read colour image '{self.rgb_path}'; check that the "
                                  "file exists and is a PNG/JPEG")
        return np.ascontiguousarray(img[..., ::-1])

    def load_depth(self) -> np.ndarray:
        """(H, W) float32 metres, 0 = invalid (value * depth_scale_m; the file's 0 and 65535
        are both invalid)."""
        d = cv2.imread(self.depth_path, cv2.IMREAD_UNCHANGED)
        if d is None:
            raise FileFormatError(f"cannot read depth image '{self.depth_path}'; check that the "
                                  "file exists and is a 16-bit PNG")
        if d.ndim != 2:
            raise FileFormatError(f"depth image '{self.depth_path}' has {d.shape[2]} channels; "
                                  "expected a single-channel 16-bit PNG")
        if d.dtype != np.uint16:
            # an 8-bit file would be read as 0-255 mm: a wrong encoding, never real depth
            raise FileFormatError(f"depth image '{self.depth_path}' is {d.dtype}, expected "
                                  "uint16 (16UC1, depth units of depth_scale, 0 = invalid); "
                                  "re-export the depth as 16-bit PNG")
        out = d.astype(np.float32) * np.float32(self.depth_scale_m)
        out[d == 65535] = 0  # "no reading" in some drivers, like 0
        out[~np.isfinite(out) | (out < 0)] = 0
        return out


@dataclass
class Sequence:
    """An RGB-D sequence of one static scene seen by one camera.

    intrinsics: the camera (all frames share it). depth_scale_m: metres per depth-file unit
    (BOP ``depth_scale`` * 1e-3). root: the folder it was read from.
    """

    name: str
    intrinsics: Intrinsics
    frames: list[FrameRecord]
    objects: list[ObjectInfo] = field(default_factory=list)
    root: str = ""
    depth_scale_m: float = 1e-3

    def T_camera_object(self, frame_idx: int, obj_id: int) -> np.ndarray | None:
        """(4, 4) pose of object ``obj_id`` in frame number ``frame_idx`` (position in
        ``frames``): stored per frame, else from the world poses; None when unknown."""
        fr = self.frames[frame_idx]
        if obj_id in fr.T_camera_objects:
            return fr.T_camera_objects[obj_id]
        obj = next((o for o in self.objects if o.obj_id == obj_id), None)
        if obj is None or obj.T_world_object is None or fr.T_world_camera is None:
            return None
        return np.linalg.inv(fr.T_world_camera) @ obj.T_world_object
