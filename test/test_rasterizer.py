"""The ray-cast rasteriser against a brute-force numpy reference (Moller-Trumbore per pixel),
occlusion between meshes, full vs visible masks, attribute interpolation and shading."""

import numpy as np
import pytest
import trimesh

from nol_ros.camera import Intrinsics
from nol_ros.geometry import look_at, make_T
from nol_ros.mesh import Mesh
from nol_ros.rasterizer import (
    Scene,
    interpolate_vertex_attribute,
    render_object,
    render_object_batch,
    shade,
)

INTR = Intrinsics(60.0, 60.0, 31.7, 23.2, 64, 48)


def brute_force(mesh: Mesh, intr: Intrinsics, T_camera_object: np.ndarray):
    """Per-pixel nearest ray-triangle hit in the camera frame (z = 1 rays)."""
    V = mesh.vertices @ T_camera_object[:3, :3].T + T_camera_object[:3, 3]
    A, B, C = V[mesh.faces[:, 0]], V[mesh.faces[:, 1]], V[mesh.faces[:, 2]]
    e1, e2 = B - A, C - A
    H, W = intr.height, intr.width
    face = np.full((H, W), -1)
    depth = np.zeros((H, W))
    bary = np.zeros((H, W, 3))
    for v in range(H):
        for u in range(W):
            d = np.array([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, 1.0])
            p = np.cross(d, e2)
            det = np.sum(e1 * p, axis=1)
            ok = np.abs(det) > 1e-12
            inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
            s = -A
            bu = np.sum(s * p, axis=1) * inv
            q = np.cross(s, e1)
            bv = (q @ d) * inv
            t = np.sum(e2 * q, axis=1) * inv
            hit = ok & (bu >= 0) & (bv >= 0) & (bu + bv <= 1) & (t > 0)
            if hit.any():
                i = np.flatnonzero(hit)[np.argmin(t[hit])]
                face[v, u], depth[v, u] = i, t[i]
                bary[v, u] = [1 - bu[i] - bv[i], bu[i], bv[i]]
    return face, depth, bary


def test_exact_against_brute_force():
    tm = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    mesh = Mesh(tm.vertices * [1.0, 0.7, 1.3], tm.faces)
    T = look_at(np.array([0.25, -0.2, 0.3]), np.zeros(3))
    T_co = np.linalg.inv(T)
    res = render_object(mesh, INTR, T_co)
    face, depth, bary = brute_force(mesh, INTR, T_co)
    both = (face >= 0) & (res.face_id >= 0)
    assert (face >= 0).sum() > 500
    assert np.mean((face >= 0) != (res.face_id >= 0)) < 0.01  # silhouettes agree
    same = res.face_id[both] == face[both]
    assert same.mean() > 0.99
    np.testing.assert_allclose(res.depth[both], depth[both], atol=1e-4)
    sel = both & (res.face_id == face)
    np.testing.assert_allclose(res.bary[sel], bary[sel], atol=1e-4)
    # the interpolated vertex positions reproduce the hit points
    Vc = mesh.vertices @ T_co[:3, :3].T + T_co[:3, 3]
    P = interpolate_vertex_attribute(res, [mesh], [Vc])
    np.testing.assert_allclose(P[both][:, 2], res.depth[both], atol=1e-5)
    # normals face the camera
    rays = INTR.ray_directions()
    assert np.all(np.sum(res.normal_cam[both] * rays[both], axis=1) < 1e-6)


def test_occlusion_and_masks_in_a_scene():
    front = Mesh(*_box((0.05, 0.05, 0.05)))
    back = Mesh(*_box((0.2, 0.2, 0.02)))
    T_front, T_back = make_T(np.eye(3), [0, 0, 0.5]), make_T(np.eye(3), [0, 0, 0.7])
    sc = Scene([front, back], [T_front, T_back])
    res = sc.render(INTR, np.eye(4))
    vis = sc.visible_masks(res)
    full_back = sc.full_mask(1, INTR, np.eye(4))
    assert vis[0].sum() > 20 and vis[1].sum() > 200
    assert not (vis[0] & vis[1]).any()
    # the back plate's full mask includes the pixels hidden by the front box
    assert np.array_equal(full_back & ~vis[1], vis[0] & full_back) and (full_back & vis[0]).any()
    np.testing.assert_allclose(res.depth[vis[0]], 0.475, atol=1e-5)
    np.testing.assert_allclose(res.depth[vis[1]], 0.69, atol=1e-5)
    assert (res.depth[res.mesh_id < 0] == 0).all()


def test_batch_equals_single_and_shading():
    tm = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    col = np.tile([[1.0, 0.5, 0.25]], (len(tm.vertices), 1)).astype(np.float32)
    mesh = Mesh(tm.vertices, tm.faces, vertex_colors=col)
    Ts = [np.linalg.inv(look_at(np.array([0.3 * np.cos(a), 0.3 * np.sin(a), 0.2]), np.zeros(3)))
          for a in (0.0, 1.0, 2.0)]
    batch = render_object_batch(mesh, INTR, np.array(Ts))
    for T, r in zip(Ts, batch):
        np.testing.assert_array_equal(render_object(mesh, INTR, T).face_id, r.face_id)
    img = shade(batch[0], [mesh], ambient=1.0, diffuse=0.0)
    m = batch[0].mask
    np.testing.assert_allclose(img[m], np.broadcast_to([1.0, 0.5, 0.25], img[m].shape),
                               atol=1e-5)
    lit = shade(batch[0], [mesh])
    assert lit[m].max() <= 1.0 and lit[~m].max() == 0


def test_bad_pose_rejected():
    mesh = Mesh(*_box((0.1, 0.1, 0.1)))
    with pytest.raises(Exception, match="finite 4x4"):
        Scene([mesh], [np.eye(4)]).render(INTR, np.full((4, 4), np.nan))


def _box(ext):
    tm = trimesh.creation.box(extents=ext)
    return tm.vertices, tm.faces
