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
    with pytest.raises(MeshUnitsError, match="millimetres"):
        load_mesh(tmp_path / "mm.ply")
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
