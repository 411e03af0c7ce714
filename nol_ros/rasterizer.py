"""Exact CPU rasteriser by ray casting (Open3D RaycastingScene, Embree).

One ray per pixel centre (OpenCV convention, see camera.py) with z = 1 in the camera frame, so
the hit distance IS the depth z. Every pixel gets the mesh id, face id, barycentric weights of the
face's three vertices (in face order), depth and the camera-frame normal facing the camera. Several
meshes in one :class:`Scene` occlude each other; per-mesh scenes give the unoccluded (full) masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.mesh import Mesh, sample_texture


@dataclass
class RasterResult:
    depth: np.ndarray       # (H, W) float32 metres, 0 = background
    mesh_id: np.ndarray     # (H, W) int32, -1 = none
    face_id: np.ndarray     # (H, W) int32, -1 = none
    bary: np.ndarray        # (H, W, 3) float32 weights of face vertices 0, 1, 2
    normal_cam: np.ndarray  # (H, W, 3) float32 unit, camera frame, facing the camera

    @property
    def mask(self) -> np.ndarray:
        return self.mesh_id >= 0


def _rays_cam(intr: Intrinsics) -> np.ndarray:
    return intr.ray_directions().reshape(-1, 3)


def _new_scene():
    import open3d as o3d

    return o3d.t.geometry.RaycastingScene()


def _add(scene, mesh: Mesh, T_world_object: np.ndarray) -> int:
    import open3d.core as o3c

    T = np.asarray(T_world_object, dtype=np.float64)
    V = (mesh.vertices @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
    return int(scene.add_triangles(o3c.Tensor(V), o3c.Tensor(mesh.faces.astype(np.uint32))))


class Scene:
    """Static meshes placed in the world; render from any camera pose."""

    def __init__(self, meshes: list[Mesh], T_world_objects: list[np.ndarray]):
        if len(meshes) != len(T_world_objects):
            raise InputError(f"{len(meshes)} meshes but {len(T_world_objects)} poses")
        if not meshes:
            raise InputError("a Scene needs at least one mesh")
        self.meshes = list(meshes)
        self.T_world_objects = [np.asarray(T, dtype=np.float64) for T in T_world_objects]
        self._scene = _new_scene()
        self._gid_to_mesh: dict[int, int] = {}
        for i, (m, T) in enumerate(zip(self.meshes, self.T_world_objects)):
            self._gid_to_mesh[_add(self._scene, m, T)] = i
        lut_size = max(self._gid_to_mesh) + 1
        self._lut = np.full(lut_size, -1, np.int32)
        for g, i in self._gid_to_mesh.items():
            self._lut[g] = i
        self._single: dict[int, object] = {}
        self._ray_cache: dict[Intrinsics, np.ndarray] = {}

    def _cast(self, scene, intr: Intrinsics, T_world_camera: np.ndarray):
        import open3d.core as o3c

        T = np.asarray(T_world_camera, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise InputError("T_world_camera must be a finite 4x4 matrix")
        dirs = self._ray_cache.get(intr)
        if dirs is None:
            dirs = _rays_cam(intr)
            self._ray_cache = {intr: dirs}
        d = dirs @ T[:3, :3].T
        rays = np.empty((len(d), 6), np.float32)
        rays[:, :3] = T[:3, 3]
        rays[:, 3:] = d
        return scene.cast_rays(o3c.Tensor(rays)), d

    def render(self, intr: Intrinsics, T_world_camera: np.ndarray, near: float = 0.05,
               far: float = 20.0) -> RasterResult:
        out, d = self._cast(self._scene, intr, T_world_camera)
        H, W = intr.height, intr.width
        t = out["t_hit"].numpy()
        gid = out["geometry_ids"].numpy().astype(np.int64)
        hit = np.isfinite(t) & (t >= near) & (t <= far) & (gid < len(self._lut))
        mesh_id = np.full(t.shape, -1, np.int32)
        mesh_id[hit] = self._lut[gid[hit]]
        hit &= mesh_id >= 0
        depth = np.where(hit, t, 0).astype(np.float32)
        face = np.where(hit, out["primitive_ids"].numpy().astype(np.int64), -1).astype(np.int32)
        uv = out["primitive_uvs"].numpy()
        bary = np.zeros((len(t), 3), np.float32)
        bary[hit, 0] = 1 - uv[hit, 0] - uv[hit, 1]
        bary[hit, 1] = uv[hit, 0]
        bary[hit, 2] = uv[hit, 1]
        n_w = out["primitive_normals"].numpy()
        R = np.asarray(T_world_camera, dtype=np.float64)[:3, :3]
        n_c = (n_w @ R).astype(np.float32)  # world -> camera: R^T n
        flip = np.sum(n_w * d, axis=1) > 0  # facing away from the ray: flip
        n_c[flip] *= -1
        n_c[~hit] = 0
        mesh_id[~hit] = -1
        return RasterResult(depth.reshape(H, W), mesh_id.reshape(H, W), face.reshape(H, W),
                            bary.reshape(H, W, 3), n_c.reshape(H, W, 3))

    def visible_masks(self, result: RasterResult) -> dict[int, np.ndarray]:
        return {i: result.mesh_id == i for i in range(len(self.meshes))}

    def full_mask(self, mesh_index: int, intr: Intrinsics, T_world_camera: np.ndarray
                  ) -> np.ndarray:
        """(H, W) bool silhouette of one mesh ignoring all others."""
        sc = self._single.get(mesh_index)
        if sc is None:
            sc = _new_scene()
            _add(sc, self.meshes[mesh_index], self.T_world_objects[mesh_index])
            self._single[mesh_index] = sc
        out, _ = self._cast(sc, intr, T_world_camera)
        return np.isfinite(out["t_hit"].numpy()).reshape(intr.height, intr.width)


def render_object(mesh: Mesh, intr: Intrinsics, T_camera_object: np.ndarray) -> RasterResult:
    """Rasterise one mesh at T_camera_object."""
    T = np.asarray(T_camera_object, dtype=np.float64)
    return Scene([mesh], [np.eye(4)]).render(intr, _inv(T))


def render_object_batch(mesh: Mesh, intr: Intrinsics, T_camera_objects: np.ndarray
                        ) -> list[RasterResult]:
    """Rasterise one mesh in many poses (one scene, built once)."""
    sc = Scene([mesh], [np.eye(4)])
    return [sc.render(intr, _inv(T)) for T in np.asarray(T_camera_objects, dtype=np.float64)]


def _inv(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def interpolate_vertex_attribute(result: RasterResult, meshes: list[Mesh],
                                 attr_per_mesh: list[np.ndarray]) -> np.ndarray:
    """Barycentric interpolation of per-vertex attributes (V_i, C) -> (H, W, C) float32."""
    C = np.asarray(attr_per_mesh[0]).reshape(len(meshes[0].vertices), -1).shape[1]
    H, W = result.depth.shape
    out = np.zeros((H, W, C), np.float32)
    for i, (m, a) in enumerate(zip(meshes, attr_per_mesh)):
        sel = result.mesh_id == i
        if not sel.any():
            continue
        a = np.asarray(a, dtype=np.float32).reshape(len(m.vertices), -1)
        f = m.faces[result.face_id[sel]]
        b = result.bary[sel]
        out[sel] = (b[:, 0:1] * a[f[:, 0]] + b[:, 1:2] * a[f[:, 1]] + b[:, 2:3] * a[f[:, 2]])
    return out


def shade(result: RasterResult, meshes: list[Mesh],
          light_dir_cam: tuple[float, float, float] = (0.3, -0.6, -1.0),
          ambient: float = 0.35, diffuse: float = 0.65) -> np.ndarray:
    """Lambertian shading: albedo (vertex colours, or texture at the interpolated UVs; grey when
    the mesh has neither) * (ambient + diffuse * max(0, n . l)). ``light_dir_cam`` points from
    the surface TO the light, camera frame (default: above and behind the camera).
    Returns (H, W, 3) float32 in [0, 1], background 0."""
    H, W = result.depth.shape
    rgb = np.zeros((H, W, 3), np.float32)
    light = np.asarray(light_dir_cam, dtype=np.float32)
    light /= np.linalg.norm(light)
    lam = ambient + diffuse * np.clip(result.normal_cam @ light, 0, None)
    for i, m in enumerate(meshes):
        sel = result.mesh_id == i
        if not sel.any():
            continue
        f = m.faces[result.face_id[sel]]
        b = result.bary[sel]
        if m.is_textured:
            t = m.uvs
            uv = b[:, 0:1] * t[f[:, 0]] + b[:, 1:2] * t[f[:, 1]] + b[:, 2:3] * t[f[:, 2]]
            alb = sample_texture(m.texture, uv)
        elif m.vertex_colors is not None:
            c = m.vertex_colors
            alb = b[:, 0:1] * c[f[:, 0]] + b[:, 1:2] * c[f[:, 1]] + b[:, 2:3] * c[f[:, 2]]
        else:
            alb = np.full((int(sel.sum()), 3), 0.7, np.float32)
        rgb[sel] = alb * lam[sel][:, None]
    return np.clip(rgb, 0, 1)
