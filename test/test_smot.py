"""SMOT layout: fixture writer -> reader round trip (column-major intrinsics, metres, world =
first object of the first image), two sequences, and bad files."""

import json

import numpy as np
import pytest

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.datasets.smot import read_smot, read_smot_intrinsics, write_smot_fixture
from nol_ros.errors import FileFormatError, InputError
from nol_ros.geometry import make_T, so3_exp

SMALL = Intrinsics(60.0, 61.0, 31.0, 23.0, 64, 48)


def _frames(rng, n, obj_ids, intr=SMALL, depth=1.25):
    """n frames looking at objects rigidly placed around the first one."""
    T_first_others = {o: make_T(so3_exp([0, 0, 0.5 * k]), [0.1 * k, 0.05 * k, 0])
                      for k, o in enumerate(obj_ids)}
    T_c_first = [make_T(so3_exp(rng.normal(size=3) * 0.3), [0.0, 0.1, 0.8]) for _ in range(n)]
    frames = [(i, rng.integers(0, 255, (intr.height, intr.width, 3), dtype=np.uint8),
               np.full((intr.height, intr.width), depth, np.float32),
               {o: T @ T_first_others[o] for o in obj_ids}) for i, T in enumerate(T_c_first)]
    return frames, T_c_first, T_first_others


def test_smot_round_trip_two_sequences(tmp_path):
    rng = np.random.default_rng(0)
    f1, T1, rel1 = _frames(rng, 3, [1, 2, 3, 4])
    f2, T2, rel2 = _frames(rng, 2, [5, 6, 7, 8])
    write_smot_fixture(tmp_path, SMALL, "train/seq1", f1)
    write_smot_fixture(tmp_path, SMALL, "train/seq2", f2)
    assert read_smot_intrinsics(tmp_path) == SMALL
    for name, frames, T_c_first, rel, ids in (("train/seq1", f1, T1, rel1, [1, 2, 3, 4]),
                                              ("train/seq2", f2, T2, rel2, [5, 6, 7, 8])):
        seq = read_smot(tmp_path, name)
        assert seq.name == name and seq.intrinsics == SMALL and seq.depth_scale_m == 1e-3
        assert [o.obj_id for o in seq.objects] == ids
        assert seq.objects[0].mesh_path.endswith(f"models/obj_{ids[0]:02d}.ply")
        # world = frame of the first object of the first image
        for k, (fr, T) in enumerate(zip(seq.frames, T_c_first)):
            np.testing.assert_allclose(fr.T_world_camera, np.linalg.inv(T), atol=1e-9)
            np.testing.assert_array_equal(fr.load_rgb(), frames[k][1])
            np.testing.assert_allclose(fr.load_depth(), 1.25, atol=1e-6)
            for o in ids:
                np.testing.assert_allclose(seq.T_camera_object(k, o), frames[k][3][o], atol=1e-12)
        for o in seq.objects:
            np.testing.assert_allclose(o.T_world_object, rel[o.obj_id], atol=1e-9)
        assert seq.frames[1].stamp_ns - seq.frames[0].stamp_ns == 33_333_333


def test_smot_files_are_in_the_smot_conventions(tmp_path):
    rng = np.random.default_rng(1)
    frames, _, _ = _frames(rng, 1, [1], intr=SMOT_XTION, depth=0.9)
    frames[0][2][0, 0] = np.nan
    write_smot_fixture(tmp_path, SMOT_XTION, "train/seq1", frames)
    raw = json.loads((tmp_path / "camera_intrinsic.json").read_text())
    # Open3D stores the matrix column-major: [fx, 0, 0, 0, fy, 0, cx, cy, 1]
    assert raw["intrinsic_matrix"] == [SMOT_XTION.fx, 0.0, 0.0, 0.0, SMOT_XTION.fy, 0.0,
                                       SMOT_XTION.cx, SMOT_XTION.cy, 1.0]
    assert (raw["width"], raw["height"]) == (640, 480)
    gt = json.loads((tmp_path / "train/seq1/scene_gt.json").read_text())["0"][0]
    np.testing.assert_allclose(gt["cam_t_m2c"], frames[0][3][1][:3, 3])  # metres
    import cv2

    d = cv2.imread(str(tmp_path / "train/seq1/depth/000000.png"), cv2.IMREAD_UNCHANGED)
    assert d.dtype == np.uint16 and d[0, 0] == 0 and d[1, 1] == 900  # mm, NaN -> 0


def test_anchor_missing_in_a_frame_and_models(tmp_path):
    from nol_ros.mesh import Mesh, load_mesh

    rng = np.random.default_rng(2)
    frames, T_c_first, rel = _frames(rng, 3, [1, 2])
    del frames[1][3][1]  # object 1 (the anchor) not annotated in image 1
    tet = Mesh(vertices=np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]], float),
               faces=np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]), vertex_colors=None,
               uvs=None, texture=None)
    write_smot_fixture(tmp_path, SMALL, "train/seq1", frames, meshes={1: tet})
    seq = read_smot(tmp_path)
    assert seq.frames[1].T_world_camera is None
    np.testing.assert_allclose(seq.frames[2].T_world_camera, np.linalg.inv(T_c_first[2]),
                               atol=1e-9)
    np.testing.assert_allclose(seq.objects[1].T_world_object, rel[2], atol=1e-9)
    np.testing.assert_allclose(load_mesh(seq.objects[0].mesh_path).vertices, tet.vertices,
                               atol=1e-6)


def _fixture(tmp_path):
    frames, _, _ = _frames(np.random.default_rng(3), 2, [1, 2])
    write_smot_fixture(tmp_path, SMALL, "train/seq1", frames)
    return tmp_path / "train/seq1/scene_gt.json"


def _edit(path, fn):
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("edit, pattern", [
    (lambda g: g["0"][0].update(cam_t_m2c=[0, 100, 800]), r"looks like millimetres"),
    (lambda g: g["1"][1].pop("cam_R_m2c"), r"scene_gt.json: image 1, annotation 1 has no "
                                           r"'cam_R_m2c'"),
    (lambda g: g["0"][1].update(cam_t_m2c=[0, float("nan"), 1]), r"NaN"),
    (lambda g: g["0"][0].update(cam_R_m2c=[2, 0, 0, 0, 1, 0, 0, 0, 1]), r"not a rotation"),
    (lambda g: g.update({"0": []}), r"first image \(id 0\) has no annotation"),
])
def test_bad_scene_gt(tmp_path, edit, pattern):
    p = _fixture(tmp_path)
    _edit(p, edit)
    with pytest.raises(FileFormatError, match=pattern):
        read_smot(tmp_path, "train/seq1")


def test_bad_intrinsics_images_and_paths(tmp_path):
    import cv2

    _fixture(tmp_path)
    with pytest.raises(FileFormatError, match="camera_intrinsic.json"):
        read_smot(tmp_path / "train", "seq1")
    with pytest.raises(FileFormatError, match=r"train/seq9/scene_gt.json"):
        read_smot(tmp_path, "train/seq9")
    ip = tmp_path / "camera_intrinsic.json"
    good = ip.read_text()
    # row-major by mistake: [fx, 0, cx, 0, fy, cy, 0, 0, 1]
    _edit(ip, lambda d: d.update(intrinsic_matrix=SMALL.K.reshape(-1).tolist()))
    with pytest.raises(FileFormatError, match="column-major"):
        read_smot(tmp_path)
    _edit(ip, lambda d: d.pop("height"))
    with pytest.raises(FileFormatError, match=r"camera_intrinsic.json has no 'height'"):
        read_smot(tmp_path)
    ip.write_text(good)
    cv2.imwrite(str(tmp_path / "train/seq1/color/000001.png"), np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(FileFormatError, match=r"000001.png' is 20x10 but camera_intrinsic"):
        read_smot(tmp_path)
    cv2.imwrite(str(tmp_path / "train/seq1/color/000001.png"), np.zeros((48, 64, 3), np.uint8))
    read_smot(tmp_path)  # restored
    (tmp_path / "train/seq1/depth/000001.png").unlink()
    with pytest.raises(FileFormatError, match=r"missing depth image"):
        read_smot(tmp_path)
    (tmp_path / "train/seq1/scene_gt.json").write_text("[1, 2")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        read_smot(tmp_path)
    with pytest.raises(InputError, match="rgb must be"):
        write_smot_fixture(tmp_path / "x", SMALL, "train/seq1",
                           [(0, np.zeros((5, 5, 3), np.uint8), np.zeros((48, 64)), {})])
