"""BOP scene writer/reader: round trip within mm rounding, file contents per the BOP format,
and bad files / bad input that name the file, the key and the fix."""

import json

import numpy as np
import pytest

from nol_ros.camera import Intrinsics
from nol_ros.datasets.bop import (
    BopSceneWriter,
    read_bop_scene,
    read_masks,
    read_models_info,
    write_models_info,
)
from nol_ros.errors import FileFormatError, InputError
from nol_ros.geometry import look_at, make_T, so3_exp

INTR = Intrinsics(100.0, 101.0, 31.5, 23.5, 64, 48)


def _scene(tmp_path, n=3, depth_scale=1.0, name="000001", seed=0):
    rng = np.random.default_rng(seed)
    T_wo = make_T(so3_exp([0.1, 0.2, 0.3]), [0.05, -0.02, 0.1])
    poses = [look_at(np.array([0.6 * np.cos(a), 0.6 * np.sin(a), 0.4]), np.zeros(3))
             for a in np.linspace(0, 1, n)]
    d = tmp_path / name
    rgbs, depths = [], []
    with BopSceneWriter(d, INTR, depth_scale=depth_scale) as w:
        for i, T_wc in enumerate(poses):
            rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            depth = rng.uniform(0.5, 2, (48, 64)).astype(np.float32)
            depth[0, 0] = 0
            m = np.zeros((48, 64), bool)
            m[10:20, 10:30] = True
            mv = m.copy()
            mv[10:15] = False
            w.add_frame(i, rgb, depth, T_wc, [(7, np.linalg.inv(T_wc) @ T_wo, m, mv)],
                        stamp_ns=10**9 + i * 33_000_000,
                        depth_stamp_ns=10**9 + i * 33_000_000 + 4_000_000)
            rgbs.append(rgb)
            depths.append(depth)
    return d, poses, T_wo, rgbs, depths


def test_bop_round_trip(tmp_path):
    d, poses, T_wo, rgbs, depths = _scene(tmp_path)
    seq = read_bop_scene(d)
    assert seq.intrinsics == INTR and len(seq.frames) == 3 and seq.depth_scale_m == 1e-3
    for k, (fr, T) in enumerate(zip(seq.frames, poses)):
        np.testing.assert_allclose(fr.T_world_camera, T, atol=1e-9)
        np.testing.assert_allclose(seq.T_camera_object(k, 7), np.linalg.inv(T) @ T_wo,
                                   atol=1e-9)
        np.testing.assert_array_equal(fr.load_rgb(), rgbs[k])
        dep = fr.load_depth()
        assert dep.dtype == np.float32 and dep[0, 0] == 0
        assert np.abs(dep - depths[k]).max() <= 0.5e-3 + 1e-6  # mm rounding
    np.testing.assert_allclose(seq.objects[0].T_world_object, T_wo, atol=1e-9)
    assert seq.frames[1].stamp_ns == 10**9 + 33_000_000
    assert seq.frames[1].depth_stamp_ns == 10**9 + 37_000_000


def test_bop_files_follow_the_format(tmp_path):
    d, poses, T_wo, _, depths = _scene(tmp_path)
    cam = json.loads((d / "scene_camera.json").read_text())["0"]
    assert cam["cam_K"] == [100.0, 0.0, 31.5, 0.0, 101.0, 23.5, 0.0, 0.0, 1.0]  # row-major
    assert cam["depth_scale"] == 1.0
    T_cw = np.linalg.inv(poses[0])
    np.testing.assert_allclose(np.array(cam["cam_t_w2c"]), T_cw[:3, 3] * 1000, atol=1e-9)
    np.testing.assert_allclose(np.reshape(cam["cam_R_w2c"], (3, 3)), T_cw[:3, :3], atol=1e-12)
    gt = json.loads((d / "scene_gt.json").read_text())["2"][0]
    T_co = np.linalg.inv(poses[2]) @ T_wo
    assert gt["obj_id"] == 7
    np.testing.assert_allclose(np.array(gt["cam_t_m2c"]), T_co[:3, 3] * 1000, atol=1e-9)
    np.testing.assert_allclose(np.reshape(gt["cam_R_m2c"], (3, 3)), T_co[:3, :3], atol=1e-12)
    info = json.loads((d / "scene_gt_info.json").read_text())["0"][0]
    assert info["px_count_all"] == 200 and info["px_count_visib"] == 100
    assert info["px_count_valid"] == 200  # depth[0, 0] = 0 is outside the mask
    assert info["visib_fract"] == pytest.approx(0.5)
    assert info["bbox_obj"] == [10, 10, 20, 10] and info["bbox_visib"] == [10, 15, 20, 5]
    import cv2

    raw = cv2.imread(str(d / "depth" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, np.round(depths[1].astype(np.float64) * 1000))
    assert read_masks(d, 0, 1)[0].sum() == 100 and read_masks(d, 0, 1, visib=False)[0].sum() == 200
    stamps = json.loads((d / "scene_stamps.json").read_text())
    assert stamps["2"] == {"rgb_ns": 10**9 + 66_000_000, "depth_ns": 10**9 + 70_000_000}


def test_depth_scale_and_jpg_and_no_gt(tmp_path):
    d, _, _, _, depths = _scene(tmp_path, depth_scale=0.1)
    import cv2

    raw = cv2.imread(str(d / "depth" / "000000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(raw, np.round(depths[0].astype(np.float64) * 10000))
    seq = read_bop_scene(d)
    assert seq.depth_scale_m == pytest.approx(1e-4)
    assert np.abs(seq.frames[0].load_depth() - depths[0]).max() <= 0.05e-3 + 1e-6
    # .jpg colour images are read too (BOP's rgb/%06d.jpg)
    for p in sorted((d / "rgb").glob("*.png")):
        cv2.imwrite(str(p.with_suffix(".jpg")), cv2.imread(str(p)))
        p.unlink()
    assert read_bop_scene(d).frames[0].rgb_path.endswith("000000.jpg")
    # a scene without scene_gt.json (e.g. from a bag) has no objects
    (d / "scene_gt.json").unlink()
    seq = read_bop_scene(d)
    assert seq.objects == [] and seq.frames[0].T_camera_objects == {}


def _edit(path, fn):
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("edit, pattern", [
    (lambda g: g["1"][0].pop("cam_t_m2c"),
     r"scene_gt.json: image 1, annotation 0 has no 'cam_t_m2c'"),
    (lambda g: g["2"][0].pop("obj_id"), r"scene_gt.json: image 2, annotation 0 has no 'obj_id'"),
    (lambda g: g["0"][0].update(cam_t_m2c=[float("nan"), 0, 500]),
     r"image 0, annotation 0: 'cam_t_m2c' contains NaN"),
    (lambda g: g["0"][0].update(cam_R_m2c=[1, 2, 3, 4, 5, 6, 7, 8, 9]),
     r"'cam_R_m2c' is not a rotation matrix"),
    (lambda g: g["0"][0].update(cam_R_m2c=[1, 0, 0]), r"'cam_R_m2c' must be 9 numbers"),
    (lambda g: [a.update(cam_t_m2c=[x / 1000 for x in a["cam_t_m2c"]])
                for v in g.values() for a in v], r"look like metres.*millimetres"),
    (lambda g: g.update({"99": []}), r"annotates images \['99'\]"),
])
def test_bad_scene_gt(tmp_path, edit, pattern):
    d, *_ = _scene(tmp_path)
    _edit(d / "scene_gt.json", edit)
    with pytest.raises(FileFormatError, match=pattern):
        read_bop_scene(d)


@pytest.mark.parametrize("edit, pattern", [
    (lambda c: c["1"].pop("depth_scale"), r"scene_camera.json: image 1 has no 'depth_scale'"),
    (lambda c: c["0"].pop("cam_K"), r"scene_camera.json: image 0 has no 'cam_K'"),
    (lambda c: c["2"].pop("cam_t_w2c"), r"image 2 has no 'cam_t_w2c'"),
    (lambda c: c["1"].update(cam_K=[200, 0, 31.5, 0, 101, 23.5, 0, 0, 1]), r"differs"),
    (lambda c: c["1"].update(depth_scale=0), r"'depth_scale' must be > 0"),
])
def test_bad_scene_camera(tmp_path, edit, pattern):
    d, *_ = _scene(tmp_path)
    _edit(d / "scene_camera.json", edit)
    with pytest.raises(FileFormatError, match=pattern):
        read_bop_scene(d)


def test_missing_and_broken_files(tmp_path):
    d, *_ = _scene(tmp_path)
    (d / "depth" / "000002.png").unlink()
    with pytest.raises(FileFormatError, match=r"missing depth image .*000002.png"):
        read_bop_scene(d)
    (d / "rgb" / "000001.png").unlink()
    with pytest.raises(FileFormatError, match=r"missing colour image for image 1"):
        read_bop_scene(d)
    (d / "scene_gt.json").write_text("{broken")
    with pytest.raises(FileFormatError, match=r"scene_gt.json' is not valid JSON"):
        read_bop_scene(d)
    (d / "scene_camera.json").unlink()
    with pytest.raises(FileFormatError, match=r"missing file.*scene_camera.json"):
        read_bop_scene(d)
    with pytest.raises(FileFormatError, match="does not exist"):
        read_bop_scene(tmp_path / "nope")


def test_images_of_wrong_size_are_rejected(tmp_path):
    import cv2

    d, *_ = _scene(tmp_path)
    cv2.imwrite(str(d / "depth" / "000001.png"), np.zeros((24, 32), np.uint16))
    with pytest.raises(FileFormatError, match=r"000001.png' is 32x24 but image 0 is 64x48"):
        read_bop_scene(d)


def test_writer_rejects_bad_input_and_writes_nan_depth_as_invalid(tmp_path):
    d = np.full((48, 64), 1.5, np.float32)
    d[3, 4], d[5, 6], d[7, 8] = np.nan, np.inf, -1.0
    rgb = np.zeros((48, 64, 3), np.uint8)
    with BopSceneWriter(tmp_path / "s", INTR) as w:
        w.add_frame(0, rgb, d, np.eye(4), [])
        with pytest.raises(InputError, match="already added"):
            w.add_frame(0, rgb, d, np.eye(4), [])
    back = read_bop_scene(tmp_path / "s").frames[0].load_depth()
    assert back[3, 4] == 0 and back[5, 6] == 0 and back[7, 8] == 0
    assert back[0, 0] == pytest.approx(1.5)
    w = BopSceneWriter(tmp_path / "t", INTR)
    with pytest.raises(InputError, match=r"rgb must be \(48, 64, 3\) uint8"):
        w.add_frame(0, np.zeros((10, 10, 3), np.uint8), d, np.eye(4), [])
    with pytest.raises(InputError, match=r"depth is \(47, 64\)"):
        w.add_frame(0, rgb, d[:-1], np.eye(4), [])
    with pytest.raises(InputError, match="masks are"):
        w.add_frame(0, rgb, d, np.eye(4), [(1, np.eye(4), np.zeros((4, 4), bool),
                                            np.zeros((48, 64), bool))])
    with pytest.raises(InputError, match="does not fit 16 bits"):
        w.add_frame(0, rgb, np.full((48, 64), 70.0), np.eye(4), [])
    with pytest.raises(InputError, match="T_world_camera"):
        w.add_frame(0, rgb, d, np.full((4, 4), np.nan), [])
    assert not (tmp_path / "t" / "rgb").exists()  # nothing written for refused frames
    with pytest.raises(InputError, match="depth_scale"):
        BopSceneWriter(tmp_path / "u", INTR, depth_scale=-1)


def test_models_info_round_trip_and_symmetry_flags(tmp_path):
    info = {1: {"diameter": 123.4, "min_x": -5.0, "size_x": 10.0},
            2: {"diameter": 80.0, "symmetries_continuous": [{"axis": [0, 0, 1],
                                                             "offset": [0, 0, 0]}]}}
    mdir = tmp_path / "models"
    write_models_info(mdir / "models_info.json", info)
    assert read_models_info(mdir / "models_info.json") == info
    raw = json.loads((mdir / "models_info.json").read_text())
    assert set(raw) == {"1", "2"}
    d, *_ = _scene(tmp_path)
    _edit(d / "scene_gt.json", lambda g: [a.update(obj_id=2) for v in g.values() for a in v])
    seq = read_bop_scene(d, mdir)
    assert seq.objects[0].symmetric and seq.objects[0].mesh_path.endswith("obj_000002.ply")
    (mdir / "models_info.json").write_text(json.dumps({"3": {"size_x": 1}}))
    with pytest.raises(FileFormatError, match=r"models_info.json: model 3 has no 'diameter'"):
        read_models_info(mdir / "models_info.json")
    with pytest.raises(InputError, match="diameter"):
        write_models_info(mdir / "x.json", {4: {}})
