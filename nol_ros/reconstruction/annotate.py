"""Per-frame object poses, visibility masks and vertex visibility from registered objects.

Given the self-annotated camera poses and the registered objects, every frame gets, per object:
T_camera_object, the full (unoccluded) mask, the visible mask and the visible vertices. The
registered objects are rendered together, so they occlude each other; anything else (clutter,
hands, unregistered objects) is caught by the measured depth: a pixel is visible when the
rendered object depth is within ``depth_tolerance_m`` of the measured depth (paper: 5 cm) or the
measured depth is missing there and nothing rendered is in front.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnnotateConfig:
    depth_tolerance_m: float = 0.05      # paper: rendered depth within 5 cm of the measured depth
    invalid_depth_visible: bool = True   # trust the render where the sensor has no depth
    vertex_depth_eps_m: float = 0.01     # self-occlusion test of vertices against the render
    max_facing_angle_deg: float = 85.0   # vertices seen at grazing angles do not count


@dataclass
class ObjectAnnotation:
    T_camera_object: np.ndarray          # (4, 4)
    mask_full: np.ndarray                # (H, W) bool, unoccluded silhouette
    mask_visib: np.ndarray               # (H, W) bool
    visible_vertices: np.ndarray         # (V,) bool
    visib_fract: float                   # visible / full pixels

    @property
    def px_count_all(self) -> int:
        return int(self.mask_full.sum())


def annotate_frame(scene, meshes, T_world_objects, intr, T_world_camera: np.ndarray,
                   depth_m: np.ndarray | None, cfg: AnnotateConfig = AnnotateConfig()
                   ) -> list[ObjectAnnotation]:
    """Annotate one frame. ``scene`` is a :class:`nol_ros.rasterizer.Scene` built from ``meshes``
    placed at ``T_world_objects``; depth_m: (H, W) float32 metres (0 invalid) or None."""
    res = scene.render(intr, T_world_camera)
    T_camera_world = np.linalg.inv(T_world_camera)
    H, W = res.depth.shape
    if depth_m is not None:
        meas = np.asarray(depth_m, dtype=np.float32)
        valid = meas > 0
        agree = np.abs(res.depth - meas) <= cfg.depth_tolerance_m
        ok_px = np.where(valid, agree, cfg.invalid_depth_visible)
    else:
        ok_px = np.ones((H, W), bool)
    cos_max = np.cos(np.radians(cfg.max_facing_angle_deg))
    out = []
    for i, (mesh, T_wo) in enumerate(zip(meshes, T_world_objects)):
        T_co = T_camera_world @ T_wo
        on = res.mesh_id == i
        visib = on & ok_px
        full = scene.full_mask(i, intr, T_world_camera)
        # vertices: in the image, in front of the render (no self/other occlusion), facing
        V = np.asarray(mesh.vertices)
        Pc = V @ T_co[:3, :3].T + T_co[:3, 3]
        z = Pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(intr.fx * Pc[:, 0] / z + intr.cx).astype(np.int64)
            v = np.round(intr.fy * Pc[:, 1] / z + intr.cy).astype(np.int64)
        inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        vv = np.zeros(len(V), bool)
        ui, vi = u[inside], v[inside]
        rd = res.depth[vi, ui]
        front = (rd > 0) & (z[inside] <= rd + cfg.vertex_depth_eps_m) & visib[vi, ui]
        n_c = np.asarray(mesh.vertex_normals)[inside] @ T_co[:3, :3].T
        view = -Pc[inside] / np.linalg.norm(Pc[inside], axis=1, keepdims=True)
        facing = np.sum(n_c * view, axis=1) > cos_max
        vv[np.flatnonzero(inside)] = front & facing
        n_full = int(full.sum())
        out.append(ObjectAnnotation(T_co, full, visib, vv,
                                    float(visib.sum() / n_full) if n_full else 0.0))
    return out
