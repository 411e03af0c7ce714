"""BOP scene round trip and bad files; SMOT fixture round trip; bag export read back."""

import json

import numpy as np
import pytest

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.datasets.bop import BopSceneWriter, read_bop_scene, read_masks
from nol_ros.datasets.smot import read_smot, write_smot_fixture
from nol_ros.errors import FileFormatError
from nol_ros.geometry import look_at, make_T, so3_exp

INTR = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
RNG = np.random.default_rng(0)


def _scene(tmp_path, n=3):
    T_wo = make_T(so3_exp([0.1, 0.2, 0.3]), [0.05, -0.02, 0.1])
    poses = [look_at(np.array([0.6 * np.cos(a), 0.6 * np.sin(a), 0.4]), np.zeros(3))
             for a in np.linspace(0, 1, n)]
    d = tmp_path / "000001"
    with BopSceneWriter(d, INTR) as w:
        for i, T_wc in enumerate(poses):
            rgb = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            depth = RNG.uniform(0.5, 2, (48, 64)).astype(np.float32)
            depth[0, 0] = 0
            m = np.zeros((48, 64), bool)
            m[10:20, 10:30] = True
            mv = m.copy()
            mv[10:15] = False
            w.add_frame(i, rgb, depth, T_wc, [(7, np.linalg.inv(T_wc) @ T_wo, m, mv)],
                        stamp_ns=10**9 + i * 33_000_000,
                        depth_stamp_ns=10**9 + i * 33_000_000 + 4_000_000)
    return d, poses, T_wo


def test_bop_round_trip(tmp_path):
    d, poses, T_wo = _scene(tmp_path)
    seq = read_bop_scene(d)
    assert seq.intrinsics == INTR and len(seq.frames) == 3
    for fr, T in zip(seq.frames, poses):
        np.testing.assert_allclose(fr.T_world_camera, T, atol=1e-9)
        np.testing.assert_allclose(seq.T_camera_object(fr.index, 7), np.linalg.inv(T) @ T_wo,
                                   atol=1e-9)
    np.testing.assert_allclose(seq.objects[0].T_world_object, T_wo, atol=1e-9)
    assert seq.frames[1].stamp_ns == 10**9 + 33_000_000
    assert seq.frames[1].depth_stamp_ns == 10**9 + 37_000_000
    dep = seq.frames[0].load_depth()
    assert dep.dtype == np.float32 and dep[0, 0] == 0 and 0.5 <= dep[1, 1] <= 2.0
    info = json.loads((d / "scene_gt_info.json").read_text())["0"][0]
    assert info["px_count_all"] == 200 and info["px_count_visib"] == 100
    assert info["visib_fract"] == pytest.approx(0.5) and info["bbox_obj"] == [10, 10, 20, 10]
    cam = json.loads((d / "scene_camera.json").read_text())["0"]
    assert np.allclose(np.array(cam["cam_t_w2c"]) / 1000, np.linalg.inv(poses[0])[:3, 3])
    assert read_masks(d, 0, 1)[0].sum() == 100


def test_bop_bad_files_name_file_and_key(tmp_path):
    d, _, _ = _scene(tmp_path)
    gt = json.loads((d / "scene_gt.json").read_text())
    del gt["1"][0]["cam_t_m2c"]
    (d / "scene_gt.json").write_text(json.dumps(gt))
    with pytest.raises(FileFormatError, match=r"scene_gt.json: image 1, annotation 0 has no "
                                              r"'cam_t_m2c'"):
        read_bop_scene(d)
    (d / "scene_gt.json").write_text("{broken")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        read_bop_scene(d)
    (d / "scene_camera.json").unlink()
    with pytest.raises(FileFormatError, match="missing file.*scene_camera.json"):
        read_bop_scene(d)
    with pytest.raises(FileFormatError, match="does not exist"):
        read_bop_scene(tmp_path / "nope")


def test_smot_fixture_round_trip(tmp_path):
    T_c_o1 = [make_T(so3_exp(RNG.normal(size=3) * 0.3), [0.0, 0.1, 0.8]) for _ in range(3)]
    T_o1_o2 = make_T(so3_exp([0, 0, 0.5]), [0.2, 0, 0])
    frames = [(i, RNG.integers(0, 255, (480, 640, 3), dtype=np.uint8),
               np.full((480, 640), 1.25, np.float32), {1: T, 2: T @ T_o1_o2})
              for i, T in enumerate(T_c_o1)]
    write_smot_fixture(tmp_path, SMOT_XTION, "train/seq1", frames)
    raw = json.loads((tmp_path / "camera_intrinsic.json").read_text())
    assert raw["intrinsic_matrix"][2] == 0.0 and raw["intrinsic_matrix"][6] == SMOT_XTION.cx
    seq = read_smot(tmp_path, "train/seq1")
    assert seq.intrinsics == SMOT_XTION
    # world = object 1's frame: camera poses are its inverse poses; object 2 sits at T_o1_o2
    for fr, T in zip(seq.frames, T_c_o1):
        np.testing.assert_allclose(fr.T_world_camera, np.linalg.inv(T), atol=1e-9)
    o2 = next(o for o in seq.objects if o.obj_id == 2)
    np.testing.assert_allclose(o2.T_world_object, T_o1_o2, atol=1e-9)
    np.testing.assert_allclose(seq.frames[0].load_depth(), 1.25, atol=1e-6)
    # millimetres where metres are expected is rejected
    gt = json.loads((tmp_path / "train/seq1/scene_gt.json").read_text())
    gt["0"][0]["cam_t_m2c"] = [0, 100, 800]
    (tmp_path / "train/seq1/scene_gt.json").write_text(json.dumps(gt))
    with pytest.raises(FileFormatError, match="millimetres"):
        read_smot(tmp_path, "train/seq1")
    with pytest.raises(FileFormatError, match="camera_intrinsic.json"):
        read_smot(tmp_path / "train", "seq1")


def test_bag_export_read_back_two_ways(tmp_path):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from nol_ros.datasets.bag import export_bag, main, read_bag_frames
    from nol_ros.ros.bag_replay import open_bag

    d, poses, _ = _scene(tmp_path, n=4)
    seq = read_bop_scene(d)
    out = tmp_path / "bag"
    s = export_bag(seq, out, tf_mode="odom")
    assert s["frames"] == 4 and s["tf_messages"] == 4
    got = list(read_bag_frames(out))
    assert len(got) == 4
    for (t, rgb, td, depth), fr in zip(got, seq.frames):
        np.testing.assert_array_equal(rgb, fr.load_rgb())
        np.testing.assert_allclose(depth, fr.load_depth(), atol=1e-6)
        assert t == fr.stamp_ns and td == fr.depth_stamp_ns
    r = open_bag(out)
    conn = next(c for c in r.connections if c.topic == "/camera/depth_registered/image_raw")
    raw = next(raw for c, _, raw in r.messages(connections=[conn]))
    msg = deserialize_message(bytes(raw), Image)
    assert msg.encoding == "16UC1" and msg.width == 64
    topics = {c.topic for c in r.connections}
    r.close()
    assert {"/tf", "/tf_static", "/camera/rgb/camera_info"} <= topics
    # CLI: exit code 2 and a message for a bad input, 0 for a good one
    assert main(["--bop", str(tmp_path / "nope"), "--out", str(tmp_path / "b2")]) == 2
    assert main(["--bop", str(d), "--out", str(tmp_path / "b3"), "--tf", "gt"]) == 0
    with pytest.raises(Exception, match="exists"):
        export_bag(seq, out)


def test_nan_depth_is_written_as_invalid(tmp_path):
    d = np.full((48, 64), 1.5, np.float32)
    d[3, 4], d[5, 6] = np.nan, np.inf
    with BopSceneWriter(tmp_path / "s", INTR) as w:
        w.add_frame(0, np.zeros((48, 64, 3), np.uint8), d, np.eye(4), [])
    back = read_bop_scene(tmp_path / "s").frames[0].load_depth()
    assert back[3, 4] == 0 and back[5, 6] == 0 and back[0, 0] == pytest.approx(1.5)
    with pytest.raises(Exception, match="rgb must be"):
        with BopSceneWriter(tmp_path / "t", INTR) as w:
            w.add_frame(0, np.zeros((10, 10, 3), np.uint8), d, np.eye(4), [])
