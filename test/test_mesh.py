"""Mesh loading/saving (PLY colours, OBJ texture), units check, normals, diameter, models_info."""

import numpy as np
import pytest
import trimesh

from nol_ros.mesh import (
    EmptyMeshError,
    Mesh,
    MeshLoadError,
    MeshUnitsError,
    load_mesh,
    models_info,
    sample_surface_points,
    sample_texture,
    sample_vertices,
    save_mesh,
)


def box_mesh(size=(0.1, 0.2, 0.3)):
    tm = trimesh.creation.box(extents=size)
    return Mesh(tm.vertices, tm.faces, name="box")


def test_normals_diameter_models_info():
    m = box_mesh()
    assert m.diameter == pytest.approx(np.linalg.norm([0.1, 0.2, 0.3]))
    # outward normals of a closed box centred at the origin
    c = m.vertices[m.faces].mean(1)
    assert np.all(np.sum(m.face_normals * c, axis=1) > 0)
    assert np.all(np.sum(m.vertex_normals * m.vertices, axis=1) > 0)
    info = models_info(m, symmetric=True)
    assert info["size_z"] == pytest.approx(300.0) and info["min_x"] == pytest.approx(-50.0)
    assert info["diameter"] == pytest.approx(m.diameter * 1000)
    assert info["symmetries_continuous"][0]["axis"] == [0, 0, 1]
    assert "symmetries_continuous" not in models_info(m)
    pts = sample_surface_points(m, 2000, np.random.default_rng(0))
    assert np.all(np.abs(pts) <= np.array([0.05, 0.1, 0.15]) + 1e-9)
    on_face = np.isclose(np.abs(pts), [0.05, 0.1, 0.15], atol=1e-9).any(1)
    assert on_face.all()


def test_ply_round_trip_with_colours(tmp_path):
    m = box_mesh()
    m.vertex_colors = np.random.default_rng(1).random((len(m.vertices), 3)).astype(np.float32)
    save_mesh(m, tmp_path / "b.ply")
    back = load_mesh(tmp_path / "b.ply")
    np.testing.assert_allclose(back.vertices, m.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, m.faces)
    np.testing.assert_allclose(back.vertex_colors, m.vertex_colors, atol=1 / 255)


def test_obj_round_trip_with_texture(tmp_path):
    tm = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    uvs = np.random.default_rng(2).random((len(tm.vertices), 2)).astype(np.float32)
    tex = np.random.default_rng(3).integers(0, 255, (64, 32, 3), dtype=np.uint8)
    m = Mesh(tm.vertices, tm.faces, uvs=uvs, texture=tex, name="tex")
    save_mesh(m, tmp_path / "t.obj")
    back = load_mesh(tmp_path / "t.obj")
    assert back.is_textured
    np.testing.assert_array_equal(back.texture, tex)
    # same colours at the vertices (vertex order may be kept by trimesh with process=False)
    np.testing.assert_allclose(sample_texture(back.texture, back.uvs),
                               sample_texture(tex, uvs), atol=2 / 255)
    # texture image missing: loaded untextured with a warning that names the fix
    (tmp_path / "t.png").unlink()
    with pytest.warns(UserWarning, match="texture image was not found"):
        assert not load_mesh(tmp_path / "t.obj").is_textured


def test_texture_lookup_is_bilinear_with_gl_v_axis():
    tex = np.zeros((2, 2, 3), np.uint8)
    tex[0, 0] = 255  # top-left texel = v near 1
    c = sample_texture(tex, np.array([[0.25, 0.75], [0.25, 0.25], [0.5, 0.75]]))
    np.testing.assert_allclose(c[0], 1.0)
    np.testing.assert_allclose(c[1], 0.0)
    np.testing.assert_allclose(c[2], 0.5)


def test_units_and_bad_meshes(tmp_path):
    big = box_mesh((100.0, 200.0, 300.0))  # millimetres
    save_mesh(big, tmp_path / "mm.ply")
    # 300 units across (its longest side): as millimetres a 0.3 m object (the likely one,
    # said first), as centimetres 3 m; both with their exact scale factor
    with pytest.raises(MeshUnitsError, match=r"in mm it is 0.3 m across: scale by 0.001 "
                                             r"\(units='mm'\); in cm it is 3 m across: "
                                             r"scale by 0.01"):
        load_mesh(tmp_path / "mm.ply")
    cm = box_mesh((8.0, 6.0, 20.0))   # centimetres: 20 units across
    save_mesh(cm, tmp_path / "cm.ply")
    with pytest.raises(MeshUnitsError, match=r"in cm it is 0.2 m across: scale by 0.01 "
                                             r"\(units='cm'\)"):
        load_mesh(tmp_path / "cm.ply")
    assert load_mesh(tmp_path / "cm.ply", units="cm").extent.max() == pytest.approx(0.2)
    with pytest.warns(UserWarning, match="scaled by 0.001"):
        conv = load_mesh(tmp_path / "mm.ply", on_millimetres="convert")
    assert conv.extent.max() == pytest.approx(0.3)
    assert load_mesh(tmp_path / "mm.ply", units="mm").extent.max() == pytest.approx(0.3)
    with pytest.raises(MeshLoadError, match="does not exist"):
        load_mesh(tmp_path / "nope.ply")
    (tmp_path / "junk.ply").write_text("not a ply")
    with pytest.raises(MeshLoadError):
        load_mesh(tmp_path / "junk.ply")
    with pytest.raises(EmptyMeshError):
        Mesh(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(MeshLoadError, match="NaN"):
        Mesh(np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))


def test_diameter_is_exact_on_hull_and_degenerate_sets():
    from scipy.spatial.distance import pdist

    from nol_ros.mesh import max_pairwise_distance

    rng = np.random.default_rng(5)
    for P in (rng.normal(size=(3000, 3)) * [0.1, 0.05, 0.02],       # solid blob
              np.c_[rng.random((500, 2)), np.zeros(500)],            # flat
              np.outer(rng.random(50), [0.1, 0.2, 0.3]),             # collinear
              rng.random((4, 3))):
        assert max_pairwise_distance(P, block=64) == pytest.approx(pdist(P).max(), rel=1e-12)
    tm = trimesh.creation.icosphere(subdivisions=3, radius=0.07)
    m = Mesh(tm.vertices * [1.0, 1.5, 0.5], tm.faces)
    assert m.diameter == pytest.approx(pdist(m.vertices).max(), rel=1e-12)


def test_sphere_vertex_normals_are_radial_and_sampling_is_area_uniform():
    tm = trimesh.creation.icosphere(subdivisions=3, radius=0.05)
    m = Mesh(tm.vertices, tm.faces)
    radial = m.vertices / np.linalg.norm(m.vertices, axis=1, keepdims=True)
    assert np.min(np.sum(m.vertex_normals * radial, axis=1)) > 0.995
    # a 0.1 x 0.2 x 0.3 box: the share of samples on each pair of faces follows the areas
    b = box_mesh()
    pts = sample_surface_points(b, 30000, np.random.default_rng(1))
    half = np.array([0.05, 0.1, 0.15])
    share = [np.mean(np.isclose(np.abs(pts[:, k]), half[k], atol=1e-9)) for k in range(3)]
    areas = np.array([0.2 * 0.3, 0.1 * 0.3, 0.1 * 0.2])
    np.testing.assert_allclose(share, areas / areas.sum(), atol=0.01)
    sub = sample_vertices(b, 5, np.random.default_rng(0))
    assert len(sub) == 5 and len(np.unique(sub, axis=0)) == 5
    assert all(any(np.allclose(s, v) for v in b.vertices) for s in sub)
    assert len(sample_vertices(b, 1000, np.random.default_rng(0))) == len(b.vertices)


def test_bop_style_textured_ply_in_millimetres(tmp_path):
    """BOP models: PLY in mm with 'comment TextureFile' and per-vertex texture_u/texture_v."""
    from PIL import Image

    tex = np.random.default_rng(4).integers(0, 255, (16, 8, 3), dtype=np.uint8)
    Image.fromarray(tex).save(tmp_path / "obj_000001.png")
    V = np.array([[0, 0, 0], [100.0, 0, 0], [0, 100.0, 0], [0, 0, 100.0]])
    UV = np.array([[0.1, 0.2], [0.9, 0.2], [0.1, 0.8], [0.5, 0.5]])
    F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    head = ["ply", "format ascii 1.0", "comment TextureFile obj_000001.png",
            "element vertex 4", "property float x", "property float y", "property float z",
            "property float texture_u", "property float texture_v", "element face 4",
            "property list uchar int vertex_indices", "end_header"]
    rows = [" ".join(map(str, [*v, *t])) for v, t in zip(V, UV)]
    rows += ["3 " + " ".join(map(str, f)) for f in F]
    (tmp_path / "obj_000001.ply").write_text("\n".join(head + rows) + "\n")
    with pytest.raises(MeshUnitsError, match="units='mm'"):
        load_mesh(tmp_path / "obj_000001.ply")  # 100 units across: millimetres
    m = load_mesh(tmp_path / "obj_000001.ply", units="mm")
    assert m.is_textured
    np.testing.assert_array_equal(m.texture, tex)
    np.testing.assert_allclose(m.vertices, V * 1e-3, atol=1e-9)
    np.testing.assert_allclose(m.uvs, UV, atol=1e-6)
    np.testing.assert_array_equal(m.faces, F)


def test_bad_files_name_the_problem(tmp_path):
    (tmp_path / "nan.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n")
    with pytest.raises(MeshLoadError, match=r"nan\.ply.*1 vertices with NaN"):
        load_mesh(tmp_path / "nan.ply")
    (tmp_path / "cloud.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(EmptyMeshError, match="no triangles"):
        load_mesh(tmp_path / "cloud.ply")
    with pytest.raises(MeshLoadError, match="outside"):
        Mesh(np.eye(3), np.array([[0, 1, 3]]))
    with pytest.raises(MeshLoadError, match="vertex colours"):
        Mesh(np.eye(3), np.array([[0, 1, 2]]), vertex_colors=np.zeros((2, 3)))
    save_mesh(box_mesh(), tmp_path / "ok.ply")
    with pytest.raises(MeshLoadError, match="on_millimetres"):
        load_mesh(tmp_path / "ok.ply", on_millimetres="ignore")
    with pytest.raises(MeshLoadError, match="units"):
        load_mesh(tmp_path / "ok.ply", units="inch")


def test_transformed_untextured_copy():
    from scipy.spatial.transform import Rotation

    m = box_mesh()
    m.vertex_colors = np.full((len(m.vertices), 3), 0.5, np.float32)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix()
    T[:3, 3] = [0.1, 0.2, 0.3]
    mt = m.transformed(T)
    np.testing.assert_allclose(mt.vertices, m.vertices @ T[:3, :3].T + T[:3, 3])
    np.testing.assert_allclose(mt.face_normals, m.face_normals @ T[:3, :3].T, atol=1e-12)
    assert mt.diameter == pytest.approx(m.diameter)
    assert m.untextured().vertex_colors is None and m.untextured().uvs is None
    c = m.copy()
    c.vertices[0] += 1.0
    assert not np.allclose(c.vertices[0], m.vertices[0])
