"""The ray-cast rasteriser against a brute-force numpy reference (Moller-Trumbore per pixel),
occlusion between meshes, full vs visible masks, attribute interpolation and shading."""

import numpy as np
import pytest
import trimesh

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import look_at, make_T
from nol_ros.mesh import Mesh, sample_texture
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
    # normals: the hit face's normal in the camera frame, unit, turned towards the camera
    rays = INTR.ray_directions()
    assert np.all(np.sum(res.normal_cam[both] * rays[both], axis=1) < 1e-6)
    A, B, C = (Vc[mesh.faces[face[sel], k]] for k in range(3))
    n_ref = np.cross(B - A, C - A)
    n_ref /= np.linalg.norm(n_ref, axis=1, keepdims=True)
    n_ref *= -np.sign(np.sum(n_ref * rays[sel], axis=1))[:, None]
    np.testing.assert_allclose(res.normal_cam[sel], n_ref, atol=1e-4)


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
    assert len(batch) == 3
    for T, r in zip(Ts, batch):   # one ray cast for all poses: every field as rendered alone
        one = render_object(mesh, INTR, T)
        assert one.mask.sum() > 200
        for f in ("depth", "mesh_id", "face_id", "bary", "normal_cam"):
            np.testing.assert_array_equal(getattr(one, f), getattr(r, f), err_msg=f)
    # without the normal pass: the same fields, no normals
    sc = Scene([mesh], [np.eye(4)])
    for T, r in zip(Ts, sc.render_batch(INTR, [np.linalg.inv(T) for T in Ts], normals=False)):
        assert r.normal_cam is None
        for f in ("depth", "mesh_id", "face_id", "bary"):
            np.testing.assert_array_equal(getattr(render_object(mesh, INTR, T), f),
                                          getattr(r, f), err_msg=f)
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


def test_pixel_centre_convention_matches_intrinsics_project():
    """A triangle whose centroid projects (Intrinsics.project) exactly onto integer pixel
    (30, 20): that pixel's ray hits the centroid, bary = (1/3, 1/3, 1/3)."""
    z = 0.6
    c = INTR.backproject(np.array([[30.0, 20.0]]), np.array([z]))[0]
    off = np.array([[-0.02, -0.015, 0.0], [0.025, -0.01, 0.0], [-0.005, 0.025, 0.0]])
    off -= off.mean(0)
    tri = Mesh(c + off, np.array([[0, 1, 2]]))
    uv, _ = INTR.project(tri.vertices.mean(0)[None])
    np.testing.assert_allclose(uv[0], [30.0, 20.0], atol=1e-9)
    res = render_object(tri, INTR, np.eye(4))
    np.testing.assert_allclose(res.bary[20, 30], [1 / 3] * 3, atol=1e-5)
    assert res.depth[20, 30] == pytest.approx(z, abs=1e-6)
    # every rendered pixel's depth equals the plane depth; vertices' pixels are in the mask
    assert np.allclose(res.depth[res.mask], z, atol=1e-6)
    # a point inside the triangle lands on a pixel whose ray hits it (same convention both ways)
    p = tri.vertices.T @ np.array([0.6, 0.3, 0.1])
    uv, _ = INTR.project(p[None])
    u, v = uv[0]
    assert res.face_id[int(round(v)), int(round(u))] == 0


def test_scene_equals_z_buffer_of_single_renders():
    """Objects on a table: the joint render equals the per-pixel nearest of the objects rendered
    alone; full masks equal the lone silhouettes; visible masks partition the covered pixels."""
    rng = np.random.default_rng(3)
    table = Mesh(*_box((1.0, 1.0, 0.02)))
    objs = [Mesh(*_box(rng.uniform(0.04, 0.12, 3))) for _ in range(3)]
    sph = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    objs.append(Mesh(sph.vertices, sph.faces))
    T_tab = make_T(np.eye(3), [0, 0, -0.01])
    T_objs = [make_T(np.eye(3), [x, y, 0.06]) for x, y in
              [(0.0, 0.0), (0.06, 0.05), (-0.07, 0.04), (0.02, -0.08)]]
    meshes, Ts = [table, *objs], [T_tab, *T_objs]
    sc = Scene(meshes, Ts)
    T_wc = look_at(np.array([0.45, 0.3, 0.35]), np.array([0.0, 0.0, 0.05]))
    res = sc.render(INTR, T_wc)
    T_cw = np.linalg.inv(T_wc)
    alone = [render_object(m, INTR, T_cw @ T) for m, T in zip(meshes, Ts)]
    D = np.stack([np.where(a.mask, a.depth, np.inf) for a in alone])
    zbuf_id = np.where(np.isfinite(D.min(0)), D.argmin(0), -1)
    gap = np.sort(D, axis=0)
    with np.errstate(invalid="ignore"):
        clear = (gap[1] - gap[0] > 1e-4) | ~np.isfinite(gap[1])  # no depth ties
    assert all((zbuf_id == i).sum() > 30 for i in range(5))  # every object shows
    assert np.mean(res.mesh_id[clear] == zbuf_id[clear]) > 0.999
    np.testing.assert_allclose(res.depth[clear & (zbuf_id >= 0)],
                               D.min(0)[clear & (zbuf_id >= 0)], atol=1e-5)
    vis = sc.visible_masks(res)
    covered = np.zeros(res.depth.shape, int)
    for i, a in enumerate(alone):
        full = sc.full_mask(i, INTR, T_wc)
        assert np.array_equal(full, a.mask)
        assert not (vis[i] & ~full).any()
        covered += vis[i]
    assert np.array_equal(covered, res.mask.astype(int))
    assert sum(vis[i].sum() < sc.full_mask(i, INTR, T_wc).sum() for i in range(5)) >= 2


def test_near_and_far_planes_clip_like_a_z_buffer():
    near_plate = Mesh(*_box((2.0, 2.0, 0.001)))
    far_plate = Mesh(*_box((2.0, 2.0, 0.001)))
    sc = Scene([near_plate, far_plate], [make_T(np.eye(3), [0, 0, 0.3]),
                                         make_T(np.eye(3), [0, 0, 0.5])])
    r = sc.render(INTR, np.eye(4))
    assert (r.mesh_id == 0).all() and np.allclose(r.depth, 0.2995, atol=1e-5)
    r = sc.render(INTR, np.eye(4), near=0.4)  # the near plate is clipped: see what is behind
    assert (r.mesh_id == 1).all() and np.allclose(r.depth, 0.4995, atol=1e-5)
    r = sc.render(INTR, np.eye(4), near=0.05, far=0.2)
    assert (r.mesh_id == -1).all() and (r.depth == 0).all() and (r.face_id == -1).all()
    assert not sc.full_mask(1, INTR, np.eye(4), near=0.05, far=0.45).any()
    with pytest.raises(InputError, match="near"):
        sc.render(INTR, np.eye(4), near=1.0, far=0.5)


def test_texture_shading_and_lambert_against_analytic_plane():
    """A textured quad facing the camera: colour = texture at the uv of the hit point (uv is a
    linear function of x, y) times ambient + diffuse cos(60 deg)."""
    z, h = 0.5, 0.4
    V = np.array([[-h, -h, z], [h, -h, z], [h, h, z], [-h, h, z]])
    UV = (V[:, :2] + h) / (2 * h)  # u = f(x), v = f(y) (v up = +y here, just a mapping)
    tex = np.random.default_rng(9).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    quad = Mesh(V, np.array([[0, 1, 2], [0, 2, 3]]), uvs=UV, texture=tex)
    res = render_object(quad, INTR, np.eye(4))
    assert res.mask.all()
    th = np.radians(60)
    img = shade(res, [quad], light_dir_cam=(np.sin(th), 0.0, -np.cos(th)), ambient=0.2,
                diffuse=0.8)
    rays = INTR.ray_directions() * z  # hit points on the plane
    uv_ref = (rays[..., :2] + h) / (2 * h)
    expected = np.clip(sample_texture(tex, uv_ref) * (0.2 + 0.8 * 0.5), 0, 1)
    np.testing.assert_allclose(img, expected, atol=2e-5)
    np.testing.assert_allclose(res.normal_cam, np.broadcast_to([0, 0, -1.0], img.shape),
                               atol=1e-6)
    # a light from behind the surface leaves only the ambient term
    dark = shade(res, [quad], light_dir_cam=(0, 0, 1.0), ambient=0.2, diffuse=0.8)
    np.testing.assert_allclose(dark, sample_texture(tex, uv_ref) * 0.2, atol=2e-5)


def _box(ext):
    tm = trimesh.creation.box(extents=ext)
    return tm.vertices, tm.faces
