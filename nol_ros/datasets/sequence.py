"""The one in-memory form of an RGB-D sequence, whatever the files it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import FileFormatError


@dataclass
class ObjectInfo:
    obj_id: int
    name: str = ""
    mesh_path: str = ""                     # untextured mesh the pipeline gets (metres)
    symmetric: bool = False
    T_world_object: np.ndarray | None = None  # ground truth when known


@dataclass
class FrameRecord:
    index: int
    stamp_ns: int
    depth_stamp_ns: int
    rgb_path: str
    depth_path: str
    T_world_camera: np.ndarray | None = None   # ground truth / self-annotated when known
    depth_scale_m: float = 1e-3                # metres per unit in the depth file
    T_camera_objects: dict = field(default_factory=dict)  # obj_id -> (4, 4) when known

    def load_rgb(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        import cv2

        img = cv2.imread(self.rgb_path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileFormatError(f"cannot read colour image '{self.rgb_path}'")
        return np.ascontiguousarray(img[..., ::-1])

    def load_depth(self) -> np.ndarray:
        """(H, W) float32 metres, 0 = invalid."""
        import cv2

        d = cv2.imread(self.depth_path, cv2.IMREAD_UNCHANGED)
        if d is None:
            raise FileFormatError(f"cannot read depth image '{self.depth_path}'")
        if d.ndim != 2:
            raise FileFormatError(f"depth image '{self.depth_path}' has {d.shape[2]} channels; "
                                  "expected a single-channel 16-bit PNG")
        out = d.astype(np.float32) * np.float32(self.depth_scale_m)
        out[~np.isfinite(out)] = 0
        return out


@dataclass
class Sequence:
    name: str
    intrinsics: Intrinsics
    frames: list[FrameRecord]
    objects: list[ObjectInfo] = field(default_factory=list)
    root: str = ""
    depth_scale_m: float = 1e-3

    def T_camera_object(self, frame_idx: int, obj_id: int) -> np.ndarray | None:
        """Pose of an object in a frame: stored per frame, else from the world poses."""
        fr = self.frames[frame_idx]
        if obj_id in fr.T_camera_objects:
            return fr.T_camera_objects[obj_id]
        obj = next((o for o in self.objects if o.obj_id == obj_id), None)
        if obj is None or obj.T_world_object is None or fr.T_world_camera is None:
            return None
        return np.linalg.inv(fr.T_world_camera) @ obj.T_world_object
