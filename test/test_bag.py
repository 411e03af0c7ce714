"""rosbag2 export of a Sequence: read back with rosbags and with rclpy's deserialiser; TF chain
equals ground truth (gt), drifts like planar wheel odometry (odom) or is absent (none); sqlite3
storage; CLI exit codes."""

import subprocess
import sys

import numpy as np
import pytest

from nol_ros.camera import Intrinsics
from nol_ros.datasets.bag import (
    BASE_FRAME,
    CAMERA_FRAME,
    DEPTH_TOPIC,
    INFO_TOPIC,
    ODOM_FRAME,
    RGB_TOPIC,
    OdomDrift,
    export_bag,
    main,
    mount_transform,
    read_bag_custom_data,
    read_bag_frames,
    read_bag_tf,
)
from nol_ros.datasets.bop import BopSceneWriter, read_bop_scene
from nol_ros.errors import InputError
from nol_ros.geometry import look_at, rotation_error_deg

INTR = Intrinsics(100.0, 101.0, 31.5, 23.5, 64, 48)


def _scene(tmp_path, n=6, name="000001"):
    rng = np.random.default_rng(0)
    poses = [look_at(np.array([0.7 * np.cos(a), 0.7 * np.sin(a), 0.5]), np.zeros(3))
             for a in np.linspace(0, 2.5, n)]
    d = tmp_path / name
    with BopSceneWriter(d, INTR) as w:
        for i, T_wc in enumerate(poses):
            depth = rng.uniform(0.5, 2, (48, 64)).astype(np.float32)
            depth[i, i] = 0
            w.add_frame(i, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), depth, T_wc, [],
                        stamp_ns=10**9 + i * 33_333_333,
                        depth_stamp_ns=10**9 + i * 33_333_333 + 5_000_000)
    return d, poses


def _chain(tf, k):
    """T_odom_camera of the k-th /tf message via the static mount."""
    dyn = [r for r in tf if not r[4]]
    static = {(r[1], r[2]): r[3] for r in tf if r[4]}
    stamp, parent, child, T_ob, _ = dyn[k]
    assert (parent, child) == (ODOM_FRAME, BASE_FRAME)
    return stamp, T_ob @ static[(BASE_FRAME, CAMERA_FRAME)]


def test_export_read_back_with_rosbags_and_rclpy(tmp_path):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from nol_ros.datasets.bag import open_bag

    d, poses = _scene(tmp_path)
    seq = read_bop_scene(d)
    out = tmp_path / "bag"
    s = export_bag(seq, out, tf_mode="gt")
    assert s["frames"] == 6 and s["tf_messages"] == 6
    assert (out / "metadata.yaml").exists() and list(out.glob("*.mcap"))
    got = list(read_bag_frames(out))
    assert len(got) == 6
    for (t, rgb, td, depth, info), fr in zip(got, seq.frames):
        np.testing.assert_array_equal(rgb, fr.load_rgb())
        np.testing.assert_array_equal(depth, fr.load_depth())
        assert t == fr.stamp_ns and td == fr.depth_stamp_ns and td - t == 5_000_000
        np.testing.assert_array_equal(info["K"], INTR.K)
        np.testing.assert_array_equal(info["P"], np.c_[INTR.K, np.zeros(3)])
        assert info["distortion_model"] == "plumb_bob" and not info["D"].any()
        assert info["frame_id"] == CAMERA_FRAME and info["stamp_ns"] == t
        assert (info["width"], info["height"]) == (64, 48)
    # the stored bytes are what a ROS 2 node gets: deserialise them with rclpy
    r = open_bag(out)
    by_topic = {}
    for c, _, raw in r.messages():
        by_topic.setdefault(c.topic, bytes(raw))
    meta_qos = {c.topic: c.ext.offered_qos_profiles for c in r.connections}
    r.close()
    dmsg = deserialize_message(by_topic[DEPTH_TOPIC], Image)
    assert dmsg.encoding == "16UC1" and dmsg.step == 128 and dmsg.header.frame_id == CAMERA_FRAME
    mm = np.frombuffer(bytes(dmsg.data), "<u2").reshape(48, 64)
    np.testing.assert_array_equal(mm, np.round(seq.frames[0].load_depth() * 1000))
    assert mm[0, 0] == 0  # invalid stays 0
    cmsg = deserialize_message(by_topic[RGB_TOPIC], Image)
    assert cmsg.encoding == "rgb8"
    np.testing.assert_array_equal(np.frombuffer(bytes(cmsg.data), np.uint8).reshape(48, 64, 3),
                                  seq.frames[0].load_rgb())
    info = deserialize_message(by_topic[INFO_TOPIC], CameraInfo)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), INTR.K)
    assert "TRANSIENT_LOCAL" in str(meta_qos["/tf_static"][0].durability)
    with pytest.raises(InputError, match="exists"):
        export_bag(seq, out)


def test_tf_gt_is_exact_and_mount_is_fixed(tmp_path):
    d, poses = _scene(tmp_path)
    out = tmp_path / "bag"
    export_bag(read_bop_scene(d), out, tf_mode="gt")
    tf = read_bag_tf(out)
    statics = {(r[1], r[2]): r[3] for r in tf if r[4]}
    np.testing.assert_allclose(statics[("map", "odom")], np.eye(4), atol=1e-12)
    T_bc = statics[(BASE_FRAME, CAMERA_FRAME)]
    assert T_bc[2, 3] == pytest.approx(1.0, abs=1e-9)  # camera 1 m above base_link
    assert np.linalg.norm(T_bc[:2, 3]) < 1e-9
    # camera looks along base x (optical z ~ forward), image y points down (base -z side)
    assert T_bc[0, 2] > 0.5 and T_bc[2, 1] < 0
    for k, T_wc in enumerate(poses):
        stamp, T_oc = _chain(tf, k)
        assert stamp == 10**9 + k * 33_333_333
        np.testing.assert_allclose(T_oc, T_wc, atol=1e-6)  # quaternion round trip
    np.testing.assert_allclose(mount_transform(poses[0]), T_bc, atol=1e-6)
    # the bag says that this /tf is the ground truth
    meta = read_bag_custom_data(out)
    assert meta["nol_ros.tf_mode"] == "gt" and meta["nol_ros.tf_source"] == "ground_truth"
    assert meta["nol_ros.world_frame"] == "map" and "000001" in meta["nol_ros.source"]
    assert "tf_source: ground_truth" in (out / "metadata.yaml").read_text().replace("'", "")


def test_tf_odom_drifts_like_planar_wheel_odometry(tmp_path):
    d, poses = _scene(tmp_path, n=12)
    seq = read_bop_scene(d)
    drift = OdomDrift(xy_m_per_sqrt_m=0.05, yaw_rad_per_sqrt_m=0.05, yaw_rad_per_sqrt_rad=0.02)
    export_bag(seq, tmp_path / "a", tf_mode="odom", odom_drift=drift, seed=1)
    export_bag(seq, tmp_path / "b", tf_mode="odom", odom_drift=drift, seed=1)
    export_bag(seq, tmp_path / "c", tf_mode="odom", odom_drift=drift,
               rng=np.random.default_rng(2))
    ta, tb, tc = (read_bag_tf(tmp_path / x) for x in "abc")
    assert not any(r[1] == "map" for r in ta)  # no map frame when odometry drifts
    assert read_bag_custom_data(tmp_path / "a")["nol_ros.tf_source"] == \
        "simulated_wheel_odometry"
    err = []
    for k, T_wc in enumerate(poses):
        _, A = _chain(ta, k)
        _, B = _chain(tb, k)
        _, C = _chain(tc, k)
        np.testing.assert_allclose(A, B, atol=1e-12)  # same seed, same drift
        # the error D = T_odom_cam @ inv(T_world_cam) is a planar motion (x, y, yaw)
        D = A @ np.linalg.inv(T_wc)
        np.testing.assert_allclose(D[2], [0, 0, 1, 0], atol=1e-6)
        np.testing.assert_allclose(D[:2, 2], 0, atol=1e-6)
        err.append((np.linalg.norm(D[:2, 3]), rotation_error_deg(D[:3, :3], np.eye(3))))
        if k > 0:
            assert np.abs(A - C).max() > 1e-6  # another seed, another drift
    assert err[0][0] < 1e-6 and err[0][1] < 1e-4  # the first frame is exact
    assert max(e[0] for e in err) > 1e-3 and max(e[1] for e in err) > 0.01
    assert max(e[0] for e in err) < 0.5  # bounded for ~1.8 m of motion


def test_tf_none_sqlite3_and_frames_without_poses(tmp_path):
    d, _ = _scene(tmp_path, n=3)
    seq = read_bop_scene(d)
    seq.frames[1].T_world_camera = None
    with pytest.raises(InputError, match=r"frames \[1\].*tf_mode='none'"):
        export_bag(seq, tmp_path / "x", tf_mode="gt")
    s = export_bag(seq, tmp_path / "db", tf_mode="none", storage="sqlite3", max_frames=2)
    assert s["frames"] == 2 and s["tf_messages"] == 0
    assert list((tmp_path / "db").glob("*.db3"))
    assert read_bag_tf(tmp_path / "db") == []
    assert read_bag_custom_data(tmp_path / "db")["nol_ros.tf_source"] == "none"
    got = list(read_bag_frames(tmp_path / "db"))
    assert len(got) == 2
    np.testing.assert_array_equal(got[1][1], seq.frames[1].load_rgb())
    with pytest.raises(InputError, match="tf_mode"):
        export_bag(seq, tmp_path / "y", tf_mode="map")
    with pytest.raises(InputError, match="storage"):
        export_bag(seq, tmp_path / "y", storage="rosbag1")


def test_export_a_smot_sequence(tmp_path):
    from nol_ros.datasets.smot import read_smot, write_smot_fixture
    from nol_ros.geometry import make_T, so3_exp

    rng = np.random.default_rng(5)
    T_c_o = [make_T(so3_exp(rng.normal(size=3) * 0.2), [0, 0, 0.7]) for _ in range(3)]
    frames = [(i, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
               rng.uniform(0.4, 1.0, (48, 64)), {3: T}) for i, T in enumerate(T_c_o)]
    write_smot_fixture(tmp_path / "smot", INTR, "train/seq1", frames)
    seq = read_smot(tmp_path / "smot")
    export_bag(seq, tmp_path / "bag", tf_mode="gt")
    tf = read_bag_tf(tmp_path / "bag")
    for k, T in enumerate(T_c_o):
        np.testing.assert_allclose(_chain(tf, k)[1], np.linalg.inv(T), atol=1e-6)
    assert main(["--smot", str(tmp_path / "smot"), "--seq", "train/seq1",
                 "--out", str(tmp_path / "cli"), "--tf", "odom"]) == 0
    assert len(list(read_bag_frames(tmp_path / "cli"))) == 3


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    d, _ = _scene(tmp_path, n=2)
    assert main(["--bop", str(d), "--out", str(tmp_path / "b1"), "--tf", "none",
                 "--storage", "sqlite3"]) == 0
    assert "wrote 2 frames" in capsys.readouterr().out
    assert main(["--bop", str(tmp_path / "nope"), "--out", str(tmp_path / "b2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--bop", str(d), "--out", str(tmp_path / "b1")]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    for bad in (["--out", "x"],                                   # no source
                ["--bop", str(d), "--smot", str(d), "--out", "x"],  # two sources
                ["--bop", str(d), "--seq", "train/seq1", "--out", "x"],
                ["--bop", str(d), "--out", "x", "--tf", "map"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2
    # a real process: exit code 2 and the message on stderr
    p = subprocess.run([sys.executable, "-m", "nol_ros.datasets.bag", "--bop",
                        str(tmp_path / "nope"), "--out", str(tmp_path / "b3")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "BOP scene folder" in p.stderr
