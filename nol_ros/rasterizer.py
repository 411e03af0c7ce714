"""Exact CPU rasteriser by ray casting (Open3D RaycastingScene, Embree).

One ray per pixel centre (OpenCV convention, see camera.py) with z = 1 in the camera frame, so
the hit distance IS the depth z. Every pixel gets the mesh id, face id, barycentric weights of the
face's three vertices (in face order), depth and the camera-frame normal facing the camera. Several
meshes in one :class:`Scene` occlude each other; per-mesh scenes give the unoccluded (full) masks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import invert_T
from nol_ros.mesh import Mesh, sample_texture


@dataclass
class RasterResult:
    depth: np.ndarray       # (H, W) float32 metres, 0 = background
    mesh_id: np.ndarray     # (H, W) int32, -1 = none
    face_id: np.ndarray     # (H, W) int32, -1 = none
    bary: np.ndarray        # (H, W, 3) float32 weights of face vertices 0, 1, 2
    normal_cam: np.ndarray | None  # (H, W, 3) float32 unit, camera frame, facing the camera
    #                                (None: rendered with normals=False)

    @property
    def mask(self) -> np.ndarray:
        return self.mesh_id >= 0


def _new_scene():
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    return o3d.t.geometry.RaycastingScene()


def _commit(scene) -> None:
    """Build the scene's ray-casting structure now, with one ray: Open3D builds it at the
    first cast, unguarded, and a scene shared by threads (posing detections side by side)
    must not have two threads build it at once."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d.core as o3c

    scene.cast_rays(o3c.Tensor(np.array([[0, 0, 0, 0, 0, 1]], np.float32)))


def _add(scene, mesh: Mesh, T_world_object: np.ndarray) -> int:
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d.core as o3c

    T = np.asarray(T_world_object, dtype=np.float64)
    V = (mesh.vertices @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
    return int(scene.add_triangles(o3c.Tensor(V), o3c.Tensor(mesh.faces.astype(np.uint32))))


def _check_poses(Ts, what: str) -> np.ndarray:
    """B rigid 4x4 transforms (B, 4, 4) -> float64, or InputError naming ``what``."""
    T = np.asarray(Ts, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"{what} must be a finite 4x4 matrix, got shape {T.shape[1:]}")
    R = T[:, :3, :3]
    if (not np.allclose(np.einsum("bji,bjk->bik", R, R), np.eye(3), atol=1e-4)
            or np.any(np.linalg.det(R) < 0)):
        raise InputError(f"{what} is not a rigid transform (its 3x3 block is not a rotation); "
                         "orthonormalise it")
    return T


def _check_pose(T: np.ndarray, what: str) -> np.ndarray:
    """One rigid 4x4 transform -> float64 (4, 4), or InputError naming ``what``."""
    return _check_poses(np.asarray(T, dtype=np.float64)[None], what)[0]


class Scene:
    """Static meshes placed in the world; render from any camera pose.

    The ray-casting structure (Embree BVH) is built once here; every render casts one ray per
    pixel centre. Camera-frame rays have z = 1, so the hit parameter is the depth z (not the
    ray length). Rays start on the near plane: geometry closer than ``near`` is clipped and
    whatever lies behind it is seen, as with a z-buffer's near plane.
    """

    def __init__(self, meshes: list[Mesh], T_world_objects: list[np.ndarray]):
        if len(meshes) != len(T_world_objects):
            raise InputError(f"{len(meshes)} meshes but {len(T_world_objects)} poses; give one "
                             "T_world_object per mesh")
        if not meshes:
            raise InputError("a Scene needs at least one mesh")
        self.meshes = list(meshes)
        self.T_world_objects = [_check_pose(T, f"T_world_objects[{i}]")
                                for i, T in enumerate(T_world_objects)]
        self._scene = _new_scene()
        gids = [_add(self._scene, m, T) for m, T in zip(self.meshes, self.T_world_objects)]
        self._lut = np.full(max(gids) + 1, -1, np.int32)  # Open3D geometry id -> mesh index
        self._lut[gids] = np.arange(len(gids), dtype=np.int32)
        _commit(self._scene)
        self._single: dict[int, object] = {}
        self._ray_cache: dict[Intrinsics, np.ndarray] = {}  # a few recent cameras (LRU)
        self._lock = threading.Lock()   # the caches; renders may run on several threads

    def _dirs(self, intr: Intrinsics) -> np.ndarray:
        if not isinstance(intr, Intrinsics):
            raise InputError(f"intr must be nol_ros.camera.Intrinsics, got {type(intr).__name__}")
        with self._lock:
            dirs = self._ray_cache.pop(intr, None)
            if dirs is None:  # (H W, 3) float32, z = 1, through pixel centres (row-major)
                dirs = intr.ray_directions().reshape(-1, 3).astype(np.float32)
                if len(self._ray_cache) >= 4:
                    self._ray_cache.pop(next(iter(self._ray_cache)))
            self._ray_cache[intr] = dirs  # most recent last
            return dirs

    def _cast(self, scene, intr: Intrinsics, T_world_cameras: np.ndarray, near: float,
              far: float):
        """Cast the pixel rays from every camera pose (checked, (B, 4, 4): one Embree call for
        all); returns Open3D's result dict and (B H W,) bool hit within [near, far]. t_hit in
        the result is measured from the near plane."""
        # lazy: open3d (~3 s) to import, loaded only when this runs
        import open3d.core as o3c

        if not (0.0 <= near < far):
            raise InputError(f"near={near}, far={far}: need 0 <= near < far (metres)")
        Ts = T_world_cameras.astype(np.float32)
        dirs = self._dirs(intr)
        d = np.matmul(dirs[None], Ts[:, :3, :3].transpose(0, 2, 1))          # (B, N, 3)
        rays = np.empty(d.shape[:2] + (6,), np.float32)
        rays[..., 3:] = d
        rays[..., :3] = Ts[:, None, :3, 3]
        if near > 0:
            rays[..., :3] += np.float32(near) * d
        out = scene.cast_rays(o3c.Tensor.from_numpy(rays.reshape(-1, 6)))
        t = out["t_hit"].numpy()
        return out, t <= (far - near)  # misses are inf

    def render(self, intr: Intrinsics, T_world_camera: np.ndarray, near: float = 0.05,
               far: float = 20.0, normals: bool = True) -> RasterResult:
        """Rasterise all meshes (with mutual occlusion) seen from ``T_world_camera`` (4, 4),
        optical frame; near/far clip planes in metres (depth z). ``normals=False``: no
        normal pass (``normal_cam`` is None), for callers that use none."""
        return self.render_batch(intr, [T_world_camera], near, far, normals)[0]

    def render_batch(self, intr: Intrinsics, T_world_cameras: list[np.ndarray],
                     near: float = 0.05, far: float = 20.0,
                     normals: bool = True) -> list[RasterResult]:
        """:meth:`render` from B camera poses (B, 4, 4) with one ray cast for all of them (a
        few dozen small windows cost a few renders' worth of Python overhead, not B)."""
        if len(T_world_cameras) == 0:
            return []
        Ts = _check_poses(T_world_cameras, "T_world_camera")
        out, hit = self._cast(self._scene, intr, Ts, near, far)
        H, W = intr.height, intr.width
        N = H * W
        B = len(Ts)
        idx = np.flatnonzero(hit)
        depth = np.zeros(B * N, np.float32)
        depth[idx] = out["t_hit"].numpy()[idx] + np.float32(near)
        mesh_id = np.full(B * N, -1, np.int32)
        mesh_id[idx] = self._lut[out["geometry_ids"].numpy()[idx].astype(np.int64)]
        face = np.full(B * N, -1, np.int32)
        face[idx] = out["primitive_ids"].numpy()[idx]
        # Open3D's (u, v) are the weights of the face's vertices 1 and 2
        uv = out["primitive_uvs"].numpy()[idx]
        bary = np.zeros((B * N, 3), np.float32)
        bary[idx, 0] = 1.0 - uv[:, 0] - uv[:, 1]
        bary[idx, 1:] = uv
        normal = None
        if normals:
            # world-frame geometric normals -> camera frame (R^T n), flipped to face the camera
            n_world = out["primitive_normals"].numpy()
            normal = np.zeros((B * N, 3), np.float32)
            dirs = self._dirs(intr)
            cut = np.searchsorted(idx, np.arange(B + 1) * N)
            R = Ts[:, :3, :3].astype(np.float32)
            for b in range(B):
                ib = idx[cut[b]:cut[b + 1]]
                n = n_world[ib] @ R[b]
                n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
                n[np.sum(n * dirs[ib - b * N], axis=1) > 0] *= -1
                normal[ib] = n
        return [RasterResult(depth[b * N:(b + 1) * N].reshape(H, W),
                             mesh_id[b * N:(b + 1) * N].reshape(H, W),
                             face[b * N:(b + 1) * N].reshape(H, W),
                             bary[b * N:(b + 1) * N].reshape(H, W, 3),
                             None if normal is None else
                             normal[b * N:(b + 1) * N].reshape(H, W, 3)) for b in range(B)]

    def visible_masks(self, result: RasterResult) -> dict[int, np.ndarray]:
        """mesh index -> (H, W) bool pixels where that mesh is the nearest surface."""
        return {i: result.mesh_id == i for i in range(len(self.meshes))}

    def full_mask(self, mesh_index: int, intr: Intrinsics, T_world_camera: np.ndarray,
                  near: float = 0.05, far: float = 20.0) -> np.ndarray:
        """(H, W) bool silhouette of one mesh ignoring all others (its own scene, built on
        first use and kept). Rays are cast only inside the bounding box of the mesh's projected
        vertices (the same pixel rays as a full render, so the same result; an object covering a
        few percent of the image costs a few percent of a render)."""
        if not 0 <= mesh_index < len(self.meshes):
            raise InputError(f"mesh_index {mesh_index} out of range [0, {len(self.meshes)})")
        with self._lock:
            sc = self._single.get(mesh_index)
            if sc is None:
                sc = _new_scene()
                _add(sc, self.meshes[mesh_index], self.T_world_objects[mesh_index])
                _commit(sc)
                self._single[mesh_index] = sc
        H, W = intr.height, intr.width
        T_wc = _check_pose(T_world_camera, "T_world_camera")
        T_cw = invert_T(T_wc)
        T_co = T_cw @ self.T_world_objects[mesh_index]
        P = self.meshes[mesh_index].vertices @ T_co[:3, :3].T + T_co[:3, 3]
        out = np.zeros((H, W), bool)
        if np.all(P[:, 2] <= near) or np.all(P[:, 2] >= far):
            return out
        if np.any(P[:, 2] <= near):  # straddles the near plane: no safe box, cast everything
            _, hit = self._cast(sc, intr, T_wc[None], near, far)
            return hit.reshape(H, W)
        uv, _ = intr.project(P)
        x0, y0 = np.floor(uv.min(0)).astype(int) - 2
        x1, y1 = np.ceil(uv.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if x1 <= x0 or y1 <= y0:
            return out
        sub = intr.crop_resize(x0, y0, x1 - x0, y1 - y0, x1 - x0, y1 - y0)
        _, hit = self._cast(sc, sub, T_wc[None], near, far)
        out[y0:y1, x0:x1] = hit.reshape(y1 - y0, x1 - x0)
        return out


def render_object(mesh: Mesh, intr: Intrinsics, T_camera_object: np.ndarray, near: float = 0.05,
                  far: float = 20.0) -> RasterResult:
    """Rasterise one mesh at T_camera_object (4, 4); mesh_id is 0 on the object."""
    T = _check_pose(T_camera_object, "T_camera_object")
    return Scene([mesh], [np.eye(4)]).render(intr, invert_T(T), near, far)


def render_object_batch(mesh: Mesh, intr: Intrinsics, T_camera_objects: np.ndarray,
                        near: float = 0.05, far: float = 20.0) -> list[RasterResult]:
    """Rasterise one mesh in B poses T_camera_objects (B, 4, 4): one scene in the object frame,
    one ray cast for all poses (:meth:`Scene.render_batch`)."""
    Ts = np.asarray(T_camera_objects, dtype=np.float64).reshape(-1, 4, 4)
    sc = Scene([mesh], [np.eye(4)])
    return sc.render_batch(intr, [invert_T(_check_pose(T, f"T_camera_objects[{b}]"))
                                  for b, T in enumerate(Ts)], near, far)


def _interp(result: RasterResult, sel: np.ndarray, faces: np.ndarray, attr: np.ndarray
            ) -> np.ndarray:
    """(n, C) attribute interpolated at the n selected pixels (bary of the faces hit)."""
    f = faces[result.face_id[sel]]
    b = result.bary[sel]
    return b[:, 0:1] * attr[f[:, 0]] + b[:, 1:2] * attr[f[:, 1]] + b[:, 2:3] * attr[f[:, 2]]


def interpolate_vertex_attribute(result: RasterResult, meshes: list[Mesh],
                                 attr_per_mesh: list[np.ndarray]) -> np.ndarray:
    """Barycentric interpolation of per-vertex attributes: attr_per_mesh[i] is (V_i, C) for
    meshes[i] (the meshes of the Scene, in order) -> (H, W, C) float32, 0 on background."""
    if len(attr_per_mesh) != len(meshes):
        raise InputError(f"{len(attr_per_mesh)} attribute arrays for {len(meshes)} meshes")
    attrs = []
    for i, (m, a) in enumerate(zip(meshes, attr_per_mesh)):
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or len(a) != len(m.vertices):
            raise InputError(f"attribute {i} has shape {a.shape}; mesh {i} has "
                             f"{len(m.vertices)} vertices, give ({len(m.vertices)}, C)")
        attrs.append(a)
    C = {a.shape[1] for a in attrs}
    if len(C) != 1:
        raise InputError(f"attributes have different channel counts {sorted(C)}")
    H, W = result.depth.shape
    out = np.zeros((H, W, C.pop()), np.float32)
    for i, (m, a) in enumerate(zip(meshes, attrs)):
        sel = result.mesh_id == i
        if sel.any():
            out[sel] = _interp(result, sel, m.faces, a)
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
    light = np.asarray(light_dir_cam, dtype=np.float32).reshape(3)
    if not np.all(np.isfinite(light)) or np.linalg.norm(light) == 0:
        raise InputError(f"light_dir_cam {light.tolist()} has no direction")
    light /= np.linalg.norm(light)
    for i, m in enumerate(meshes):
        sel = result.mesh_id == i
        if not sel.any():
            continue
        if m.is_textured:
            alb = sample_texture(m.texture, _interp(result, sel, m.faces, m.uvs))
        elif m.vertex_colors is not None:
            alb = _interp(result, sel, m.faces, m.vertex_colors)
        else:
            alb = np.full((int(sel.sum()), 3), 0.7, np.float32)
        lam = ambient + diffuse * np.clip(result.normal_cam[sel] @ light, 0, None)
        rgb[sel] = alb * lam[:, None]
    return np.clip(rgb, 0, 1)


_MESH_SCENES: dict[int, tuple] = {}


def mesh_scene(mesh: Mesh) -> Scene:
    """The Scene of one mesh in its own frame, built once per mesh object and kept (up to 64
    meshes): the recogniser renders the same model and learnt appearance in every frame, and
    building the ray-casting structure costs more than a small render. Safe to share between
    threads (the structure is built before any ray is cast)."""
    hit = _MESH_SCENES.get(id(mesh))
    if hit is None or hit[0] is not mesh:
        if len(_MESH_SCENES) > 64:
            _MESH_SCENES.clear()
        hit = (mesh, Scene([mesh], [np.eye(4)]))
        _MESH_SCENES[id(mesh)] = hit
    return hit[1]
