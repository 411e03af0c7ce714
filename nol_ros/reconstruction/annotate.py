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

from nol_ros.camera import Intrinsics
from nol_ros.geometry import look_at
from nol_ros.rasterizer import render_object


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
    cos_max = float(np.cos(np.radians(cfg.max_facing_angle_deg)))
    out = []
    for i, (mesh, T_wo) in enumerate(zip(meshes, T_world_objects)):
        T_co = T_camera_world @ T_wo
        on = res.mesh_id == i
        visib = on & ok_px
        full = scene.full_mask(i, intr, T_world_camera)
        vv = vertex_visibility(mesh, intr, T_co, res.depth, visib, cfg.vertex_depth_eps_m,
                               cos_max)
        n_full = int(full.sum())
        out.append(ObjectAnnotation(T_co, full, visib, vv,
                                    float(visib.sum() / n_full) if n_full else 0.0))
    return out


def vertex_visibility(mesh, intr, T_camera_object: np.ndarray, depth_render: np.ndarray,
                      mask: np.ndarray, depth_eps_m: float = 0.01, cos_max: float = 0.087
                      ) -> np.ndarray:
    """(V,) bool: vertex in the image, not behind the rendered surface at its pixel (self- and
    mutual occlusion; ``depth_render`` (H, W) float metres, 0 = nothing), on a pixel of ``mask``
    (H, W) bool, and facing the camera (cos of the angle between its normal and the direction
    to the camera > ``cos_max``)."""
    H, W = depth_render.shape
    V = np.asarray(mesh.vertices)
    Pc = V @ T_camera_object[:3, :3].T + T_camera_object[:3, 3]
    z = Pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(intr.fx * Pc[:, 0] / z + intr.cx)
        v = np.round(intr.fy * Pc[:, 1] / z + intr.cy)
    inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    vv = np.zeros(len(V), bool)
    ui, vi = u[inside].astype(np.int64), v[inside].astype(np.int64)
    rd = depth_render[vi, ui]
    front = (rd > 0) & (z[inside] <= rd + depth_eps_m) & mask[vi, ui]
    n_c = np.asarray(mesh.vertex_normals)[inside] @ T_camera_object[:3, :3].T
    view = -Pc[inside] / np.linalg.norm(Pc[inside], axis=1, keepdims=True)
    facing = np.sum(n_c * view, axis=1) > cos_max
    vv[np.flatnonzero(inside)] = front & facing
    return vv


def visible_vertices_in_pose(mesh, intr, T_camera_object: np.ndarray,
                             cfg: AnnotateConfig = AnnotateConfig()) -> np.ndarray:
    """(V,) bool vertices of ``mesh`` visible when it is rendered alone at T_camera_object
    (4, 4) with camera ``intr`` (self-occlusion and facing only): the target-pose visibility
    that :func:`nol_ros.views.selection.select_for_target` restricts the sources to."""
    res = render_object(mesh, intr, T_camera_object)
    return vertex_visibility(mesh, intr, T_camera_object, res.depth, res.mask,
                             cfg.vertex_depth_eps_m,
                             float(np.cos(np.radians(cfg.max_facing_angle_deg))))


def observable_vertices(mesh, T_world_object: np.ndarray, up: np.ndarray,
                        elevations_deg=(10.0, 35.0, 60.0, 85.0), n_azimuth: int = 12,
                        cfg: AnnotateConfig = AnnotateConfig()) -> np.ndarray:
    """(V,) bool vertices that some camera above the support plane (normal ``up``, world frame)
    could see: the object is rendered alone from ``n_azimuth`` x len(elevations_deg) views on
    a hemisphere around its centre (160 x 120 px). The sequence's coverage of the object is
    measured against this: a sequence that circles only part of the object sees a small part
    of it, even if its selected views cover everything the sequence saw."""
    up = np.asarray(up, float) / np.linalg.norm(up)
    T_wo = np.asarray(T_world_object, float)
    V = np.asarray(mesh.vertices)
    centre = T_wo[:3, :3] @ ((V.min(0) + V.max(0)) / 2) + T_wo[:3, 3]
    diam = float(np.linalg.norm(np.ptp(V, 0)))
    intr = Intrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)
    dist = max(diam * 200.0 / 90.0, 0.1)   # the object spans ~90 px
    a = np.cross(up, [1.0, 0, 0])
    if np.linalg.norm(a) < 0.1:
        a = np.cross(up, [0, 1.0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    seen = np.zeros(len(V), bool)
    for el in np.radians(elevations_deg):
        for az in np.linspace(0, 2 * np.pi, n_azimuth, endpoint=False):
            d = np.cos(el) * (np.cos(az) * a + np.sin(az) * b) + np.sin(el) * up
            T_wc = look_at(centre + dist * d, centre, up=up)
            seen |= visible_vertices_in_pose(mesh, intr, np.linalg.inv(T_wc) @ T_wo, cfg)
    return seen
