"""Read a self-annotation workspace's selection back, and draw it (no rclpy).

The view_selection node runs :func:`nol_ros.selfannotate.run_self_annotation` and publishes what
it wrote (objects/NAME/object.json, views.json, masks/): this module reads those files into
:class:`ObjectSelection` and draws the annotated image (the selected frames with the object's
visible mask) shown in RViz / Foxglove.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nol_ros.errors import FileFormatError
from nol_ros.workspace import AnnotationFiles

# one colour per object row (RGB)
COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
          (145, 30, 180), (70, 240, 240), (240, 50, 230)]


@dataclass
class SelectedView:
    frame: int                     # BOP image id of the sequence
    T_camera_object: np.ndarray    # (4, 4) metres
    visib_fract: float


@dataclass
class ObjectSelection:
    name: str
    obj_id: int
    workspace: str
    T_world_object: np.ndarray     # (4, 4)
    coverage: float
    stop_reason: str
    views: list[SelectedView] = field(default_factory=list)

    def mask(self, frame: int) -> np.ndarray | None:
        """(H, W) bool visible mask of ``frame`` (None when the object is not seen there)."""
        p = AnnotationFiles(Path(self.workspace)).object(self.name).mask(frame)
        if not p.exists():
            return None
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise FileFormatError(f"cannot read mask '{p}'")
        return m > 127


def load_selection(workspace: str | Path, name: str) -> ObjectSelection:
    """The selection of object ``name`` in a workspace written by run_self_annotation."""
    odir = AnnotationFiles(Path(workspace)).object(name)
    try:
        obj = json.loads(odir.object_json.read_text())
        views = json.loads(odir.views_json.read_text())
    except (OSError, ValueError) as e:
        raise FileFormatError(f"workspace '{workspace}' has no readable selection for '{name}' "
                              f"({e}); did its self-annotation succeed (see report.json)?") from e
    return ObjectSelection(
        name=name, obj_id=int(obj.get("obj_id", 0)), workspace=str(workspace),
        T_world_object=np.asarray(obj["T_world_object"], dtype=np.float64),
        coverage=float(views.get("coverage", 0.0)), stop_reason=str(views.get("stop_reason", "")),
        views=[SelectedView(int(v["frame"]), np.asarray(v["T_camera_object"], np.float64),
                            float(v.get("visib_fract", 0.0))) for v in views["views"]])


def annotated_image(frames_by_id: dict, selections: list[ObjectSelection], tile_h: int = 160,
                    max_views: int = 8) -> np.ndarray:
    """One row per object: its selected frames (at most ``max_views``), each ``tile_h`` px high,
    the visible mask tinted in the object's colour with its outline, the frame id and visible
    fraction written on it, the name and coverage on the left. ``frames_by_id``: BOP image id ->
    FrameRecord (``load_rgb``). Returns (H, W, 3) uint8 RGB."""
    rows = []
    for k, sel in enumerate(selections):
        color = np.array(COLORS[k % len(COLORS)], np.float32)
        tiles = []
        for v in sel.views[:max_views]:
            rgb = frames_by_id[v.frame].load_rgb().astype(np.float32)
            m = sel.mask(v.frame)
            if m is not None:
                rgb[m] = 0.5 * rgb[m] + 0.5 * color
            img = np.clip(rgb, 0, 255).astype(np.uint8)
            if m is not None:
                cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL,
                                         cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(img, cs, -1, tuple(int(c) for c in color), 2)
            s = tile_h / img.shape[0]
            img = cv2.resize(img, (max(1, round(img.shape[1] * s)), tile_h),
                             interpolation=cv2.INTER_AREA)
            cv2.putText(img, f"#{v.frame} v={v.visib_fract:.2f}", (4, tile_h - 6),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(img)
        label = np.zeros((tile_h, 150, 3), np.uint8)
        label[:] = (color * 0.6).astype(np.uint8)
        cv2.putText(label, sel.name[:18], (4, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(label, f"{len(sel.views)} views", (4, 48), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(label, f"cov {sel.coverage:.3f}", (4, 70), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.hstack([label, *tiles]))
    if not rows:
        return np.zeros((tile_h, 150, 3), np.uint8)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.ascontiguousarray(np.vstack(rows))
