"""Object renderers: anything that draws one object in given poses.

The recognisers are trained on images from an :class:`ObjectRenderer`. This module has the
protocol and the ground-truth-textured renderer (the "textured 3D model" training source of the
paper's comparisons); the NOL and IBR renderers of ``nol_ros.nol.renderer`` implement the same
protocol (``load_object_renderer(object_dir, method="nol"|"ibr", ...)``).

Example::

    mesh = load_mesh("models_textured/obj_000001.obj")
    r = TexturedMeshRenderer(mesh)
    rgb, mask = r.render(T_camera_objects, intr)   # (B, H, W, 3) uint8, (B, H, W) bool
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import invert_T
from nol_ros.mesh import Mesh
from nol_ros.rasterizer import Scene, shade


@runtime_checkable
class ObjectRenderer(Protocol):
    """Renders one object on a black background.

    render(T_camera_objects (B, 4, 4) float64 metres, intr) -> (rgb (B, H, W, 3) uint8,
    mask (B, H, W) bool), H, W = intr.height, intr.width; background pixels are 0.
    """

    def render(self, T_camera_objects: np.ndarray, intr: Intrinsics
               ) -> tuple[np.ndarray, np.ndarray]: ...


def check_poses(T_camera_objects: np.ndarray) -> np.ndarray:
    """(B, 4, 4) or (4, 4) finite poses -> (B, 4, 4) float64; InputError otherwise."""
    T = np.asarray(T_camera_objects, dtype=np.float64)
    if T.shape == (4, 4):
        T = T[None]
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) == 0:
        raise InputError(f"T_camera_objects must be (B, 4, 4) with B >= 1, got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise InputError("T_camera_objects contains NaN or infinity")
    if np.any(T[:, 2, 3] <= 0):
        raise InputError("an object pose has z <= 0 (behind the camera); poses are "
                         "T_camera_object in the optical frame (z forward), metres")
    return T


class TexturedMeshRenderer:
    """The textured (or vertex-coloured) mesh, ray-cast and Lambertian-shaded.

    light: each render gets a light direction drawn around the object's +z axis (objects stand
    upright in the scenes, lit from the ceiling): within ``light_cone_deg`` of +z, in the object
    frame; ambient drawn from ``ambient`` (low, high), diffuse = 1 - ambient. The draw is seeded
    by ``seed`` and the pose, so one pose always gets the same light.
    """

    def __init__(self, mesh: Mesh, light_cone_deg: float = 50.0,
                 ambient: tuple[float, float] = (0.45, 0.65), seed: int = 0):
        if not isinstance(mesh, Mesh):
            raise InputError(f"mesh must be a nol_ros.mesh.Mesh, got {type(mesh).__name__}")
        if not (mesh.is_textured or mesh.vertex_colors is not None):
            raise InputError(f"mesh '{mesh.name}' has neither a texture nor vertex colours; "
                             "a textured renderer needs one (load the OBJ with its MTL/PNG)")
        if not (0 <= ambient[0] <= ambient[1] <= 1):
            raise InputError(f"ambient range {ambient} must satisfy 0 <= low <= high <= 1")
        self.mesh = mesh
        self.light_cone_deg = float(light_cone_deg)
        self.ambient = (float(ambient[0]), float(ambient[1]))
        self.seed = int(seed)
        self._scene = Scene([mesh], [np.eye(4)])

    def _light(self, T: np.ndarray) -> tuple[np.ndarray, float]:
        key = np.round(T[:3, :4].reshape(-1) * 1e4).astype(np.int64) % (2**31)
        rng = np.random.default_rng([self.seed, *key.tolist()])
        a = np.radians(self.light_cone_deg) * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        l_obj = np.array([np.sin(a) * np.cos(phi), np.sin(a) * np.sin(phi), np.cos(a)])
        return T[:3, :3] @ l_obj, float(rng.uniform(*self.ambient))

    def render_raster(self, T_camera_objects: np.ndarray, intr: Intrinsics):
        """Like :meth:`render`, plus the per-pose :class:`~nol_ros.rasterizer.RasterResult`
        (depth, faces, barycentrics) for callers that also need geometry."""
        T = check_poses(T_camera_objects)
        if not isinstance(intr, Intrinsics):
            raise InputError(f"intr must be nol_ros.camera.Intrinsics, got {type(intr).__name__}")
        B, H, W = len(T), intr.height, intr.width
        rgb = np.zeros((B, H, W, 3), np.uint8)
        mask = np.zeros((B, H, W), bool)
        rasters = []
        for b in range(B):
            res = self._scene.render(intr, invert_T(T[b]), near=0.01, far=20.0)
            light, amb = self._light(T[b])
            col = shade(res, [self.mesh], light_dir_cam=tuple(light), ambient=amb,
                        diffuse=1.0 - amb)
            rgb[b] = np.clip(np.round(col * 255), 0, 255).astype(np.uint8)
            mask[b] = res.mask
            rasters.append(res)
        return rgb, mask, rasters

    def render(self, T_camera_objects: np.ndarray, intr: Intrinsics
               ) -> tuple[np.ndarray, np.ndarray]:
        rgb, mask, _ = self.render_raster(T_camera_objects, intr)
        return rgb, mask
