"""The reconstruction node with real rclpy nodes over localhost DDS.

1. (slow) The small synthetic bag replayed over DDS into the reconstruction and nol nodes,
   paced by the reconstruction node's status (every frame arrives and is tracked, whatever the
   machine's load): the self-annotated pose on /tf (map -> odom composed with the bag's
   odometry) is close to the ground truth, keyframes and status arrive, the scene mesh and the
   export work, and LearnObject from the live buffer (source 0: the nol node exports) learns
   two objects close to the truth, the first with the numbers the offline core gets on the same
   export, each with the tiny preset's pose grid rendered; a request while one runs is queued
   (FIFO) and a queued one can be cancelled.
2. Bad input (wrong encoding, no CameraInfo, mismatched sizes, TF missing with odometry
   required, export/mesh errors): each is counted and reported with its code, the node keeps
   serving and tracks again once the input is good.
3. The pure parts: interpolated poses of untracked frames, the export folder rules, bag-loop
   detection, the error reporter.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _graph_helpers import Graph, gt_by_stamp, params, workspace_errors

ROOT = Path(__file__).resolve().parents[1]


def _tf_errors(tf_samples, bag, scene):
    """T_map_camera from /tf (map -> odom, composed with the bag's odom -> camera) vs truth."""
    from nol_ros.datasets.bag import read_bag_tf
    from nol_ros.geometry import rotation_error_deg
    from nol_ros.streaming.tf_buffer import TransformBuffer

    buf = TransformBuffer(cache_time_s=1e9)
    for st, parent, child, T, static in read_bag_tf(bag):
        buf.set_transform(parent, child, st, T, static=static)
    gt = gt_by_stamp(scene)
    et, er, eo = [], [], []
    for st, child, T in tf_samples:
        assert child == "odom"
        T_oc = buf.lookup("odom", "camera_rgb_optical_frame", st)
        T_mc = T @ T_oc
        et.append(np.linalg.norm(T_mc[:3, 3] - gt[st][:3, 3]))
        er.append(rotation_error_deg(T_mc[:3, :3], gt[st][:3, :3]))
        eo.append(np.linalg.norm(T_oc[:3, 3] - gt[st][:3, 3]))
    return np.array(et), np.array(er), np.array(eo)


@pytest.mark.ros
@pytest.mark.slow
def test_replay_tracks_publishes_tf_exports_and_learns_from_the_live_buffer(
        small_world, tmp_path, rclpy_context):
    from tf2_msgs.msg import TFMessage

    from nol_ros.datasets.bag_import import load_odometry
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.learn import SOURCE_LIVE_BUFFER, annotate_object
    from nol_ros.msg import JobProgress, Keyframe, TrackingStatus
    from nol_ros.nodes.nol_node import NolNode
    from nol_ros.nodes.reconstruction_node import ReconstructionNode
    from nol_ros.recognition.pipeline import recognition_preset
    from nol_ros.streaming.messages import matrix_from_transform, stamp_to_ns
    from nol_ros.workspace import Workspace

    root, _ = small_world
    bag, scene, models = root / "bags" / "train_000001", root / "train" / "000001", root / "models"
    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig, receiver_pace

    g = Graph(rclpy_context)
    try:
        # generous deadlines for the odometry on /tf: a frame whose transform is late is not
        # tracked, and under load "late" must not happen by chance
        g.add(ReconstructionNode("reconstruction", context=rclpy_context,
                                 parameter_overrides=params(
            export_root=str(tmp_path), export_dir="default_export", tracking__tf_timeout_s=30.0,
            tracking__first_tf_timeout_s=30.0)))
        nol = g.add(NolNode("nol", context=rclpy_context, parameter_overrides=params(
            data_root=str(root), learn__render__preset="tiny",
            learn__workspace_root=str(tmp_path / "ws"), max_queued=2)))
        cli = g.client_node()
        tfs, kfs, statuses, progress = [], [], [], []
        cli.create_subscription(TFMessage, "/tf", lambda m: tfs.extend(
            (stamp_to_ns(t.header.stamp), t.child_frame_id, matrix_from_transform(t.transform))
            for t in m.transforms if t.header.frame_id == "map"), 100)
        cli.create_subscription(Keyframe, "/reconstruction/keyframes", kfs.append, 10)
        cli.create_subscription(TrackingStatus, "/reconstruction/status", statuses.append, 10)
        cli.create_subscription(JobProgress, "/nol/progress", progress.append, 100)
        c = g.client
        c.wait_for_nodes(["reconstruction"], 60)

        def done():   # frames the node has finished with (tracked or not)
            s = c.buffer_status()
            t = s.tracking
            return min(s.frames_received, t.frames_tracked + t.frames_skipped
                       + t.frames_without_odometry + t.frames_tf_refused)

        player_node = g.client_node("bag_player")
        player = BagPlayer(player_node, ReplayConfig(
            bag=str(bag), wait_for_subscribers_s=30.0, pace_topic="/camera/rgb/image_raw"),
            receiver_pace(done, g.wait, lag=1, timeout_s=120))
        stats = player.run()
        player.close()
        g.wait(lambda: done() == 30, 120, "the tracker to finish the 30 frames")
        st = c.buffer_status()
        tr = st.tracking
        print(f"replayed {stats.messages} messages; received {st.frames_received}/30, unpaired "
              f"{st.messages_unpaired}, tracked {tr.frames_tracked}, skipped "
              f"{tr.frames_skipped}, failed {tr.frames_tracking_failed}, fps "
              f"{tr.tracking_fps:.1f}")
        assert (st.frames_received, st.frames_dropped, st.messages_unpaired) == (30, 0, 0), st
        assert (tr.frames_tracked, tr.frames_skipped, tr.frames_without_odometry,
                tr.frames_tf_refused, tr.frames_tracking_failed) == (30, 0, 0, 0, 0), tr
        assert tr.tf_mode == "map->odom" and tr.error_code == "", tr

        # the pose on /tf: bar 1 cm median / 3 cm max / 2 deg (measured ~0.1-0.3 cm, while the
        # bag's odometry alone is off by up to ~2.7 cm)
        g.wait(lambda: len(tfs) >= tr.frames_tracked, 5, "all poses on /tf")
        et, er, eo = _tf_errors(tfs, bag, scene)
        print(f"/tf: {len(et)} poses, error median {np.median(et) * 100:.2f} cm max "
              f"{et.max() * 100:.2f} cm, {er.max():.2f} deg; odometry max {eo.max() * 100:.2f} cm")
        assert np.median(et) < 0.01 and et.max() < 0.03 and er.max() < 2.0
        assert len(kfs) >= 2 and kfs[0].rgb.encoding == "rgb8" and kfs[0].depth.width == 640
        assert kfs[0].header.frame_id == "map" and kfs[-1].tracking_ok
        assert statuses and statuses[-1].frames_received > 0

        r = c.save_mesh(tmp_path / "scene.ply")      # RequestRefused if not
        assert r.success and r.triangles > 1000 and Path(r.path).stat().st_size > 0, r

        r = c.export_sequence(tmp_path / "exp")      # RequestRefused if not
        assert r.success and r.frames == st.frames_received, r
        assert r.frames_tracked == tr.frames_tracked
        seq = read_bop_scene(r.path)
        odom = load_odometry(r.path, len(seq.frames))
        assert len(seq.frames) == r.frames and odom is not None
        again = c.export_sequence(tmp_path / "exp")
        assert again.success and again.unchanged

        # LearnObject for two objects from the live buffer (the nol node asks for the export
        # itself): the second request while the first runs is queued (FIFO), not refused; a
        # third is queued and cancelled before it starts
        names = {"cracker_box": 1, "tomato_soup_can": 3}
        jobs = {}
        for name, oid in names.items():
            r = c.learn_object(name, models / f"obj_{oid:06d}.ply", SOURCE_LIVE_BUFFER)
            assert r.job_id, r
            jobs[name] = r
        assert jobs["tomato_soup_can"].message == "queued", jobs["tomato_soup_can"]
        # the third is queued once the first has left the queue for the job thread (on a loaded
        # machine that thread can take it after the third request arrives: two are then
        # waiting, and max_queued=2 refuses the third with QUEUE_FULL)
        c.wait_until(lambda: c.job_status(jobs["cracker_box"]).status.state
                     != JobProgress.STATE_QUEUED, 120, "the first learn to leave the queue")
        r3 = c.learn_object("mustard_bottle", models / "obj_000004.ply", SOURCE_LIVE_BUFFER)
        assert r3.message == "queued", r3
        q = c.job_status(r3)
        assert q.status.state == JobProgress.STATE_QUEUED
        assert c.cancel(r3)
        export_dir = tmp_path / "ws" / "_live_buffer"
        offline_cfg = replace(nol.cfg.learn, workspace_root=str(tmp_path / "offline"),
                              render=replace(nol.cfg.learn.render, enabled=False))
        # both jobs first: the offline runs below must not share the process's OpenMP pool with
        # a job (a registration's one-thread limit is process-wide and changes the last digits
        # of the other's Open3D sums)
        dones = {name: c.wait(jobs[name], 600) for name in names}
        for name, oid in names.items():
            done = dones[name]
            assert done.status.state == JobProgress.STATE_SUCCEEDED, done
            ws = Path(done.result_path)
            e = workspace_errors(ws, name, scene, models, oid)
            print(f"{name} learnt through the graph: {e}")
            # against the truth with the offline tests' bounds
            assert e["ate_m"] < 0.01 and e["t_err_m"] < 0.01 and e["r_err_deg"] < 2.0, e
            assert 1 <= e["views"] <= 16 and e["coverage"] >= 0.9, e
            # the render stage wrote the node's preset's pose grid, every pose rendered
            rs = json.loads((ws / "renders" / "render_set.json").read_text())
            grid = recognition_preset(nol.cfg.learn.render.preset).grid
            n_grid = len(grid.azimuths_deg) * len(grid.elevations_deg) * len(grid.inplane_deg)
            assert next(iter(rs["objects"].values()))["images"] == n_grid, rs
            if name != "cracker_box":
                continue    # the second learn shows the FIFO queue; one parity check is enough
            # the same data (the export the node learnt from) through the offline core
            off = Path(annotate_object(name, str(models / f"obj_{oid:06d}.ply"),
                                       SOURCE_LIVE_BUFFER, str(export_dir), offline_cfg,
                                       obj_id=Workspace(tmp_path / "ws").object_id(name)))
            o = workspace_errors(off, name, scene, models, oid)
            print(f"{name} offline, same export: {o}")
            # the graph computes what the offline core computes on the same data, up to the
            # last bits of Open3D's sums: registration's random draws are seeded and
            # single-threaded even while the node registers the next object in this process
            # (they differed by up to 2 views, 0.04 coverage and 0.64 deg before: Open3D's shared
            # random generator), but Open3D 0.19's RGB-D odometry rounds differently with where
            # its buffers lie in memory (tools/open3d_heap_determinism.py), so two offline runs
            # on this export differ too. Measured on the export of a run that differed (graph
            # and six offline runs, 2026-12-03): ATE spread 6.5 um, object 0.074 mm and 0.073
            # deg, views 5 or 6, coverage 0.998-1.0. Bars: about 7x those, two views.
            assert abs(e["ate_m"] - o["ate_m"]) < 5e-5 and e["frames"] == o["frames"], (e, o)
            assert abs(e["t_err_m"] - o["t_err_m"]) < 5e-4, (e, o)
            assert abs(e["r_err_deg"] - o["r_err_deg"]) < 0.5, (e, o)
            assert abs(e["views"] - o["views"]) <= 2, (e, o)
            assert abs(e["coverage"] - o["coverage"]) < 0.02, (e, o)
        stages = [p.stage for p in progress if p.job_id == jobs["cracker_box"].job_id]
        assert "export" in stages and "tracking" in stages, stages
        cancelled = c.job_status(r3)
        assert cancelled.status.state == JobProgress.STATE_CANCELLED
        assert not (tmp_path / "ws" / "mustard_bottle" / "objects").exists()
        marker = json.loads((export_dir / "nol_export.json").read_text())
        assert marker["frames"] == st.frames_received
    finally:
        g.close()


def _scene_frames(scene, n):
    from nol_ros.datasets.bop import read_bop_scene

    seq = read_bop_scene(scene)
    return seq, [(f.stamp_ns, f.load_rgb(), f.load_depth()) for f in seq.frames[:n]]


@pytest.mark.ros
def test_bad_input_is_reported_and_the_node_keeps_serving(small_world, tmp_path, rclpy_context):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from nol_ros.nodes.reconstruction_node import ReconstructionNode
    from nol_ros.ros.conversions import (
        depth_to_image,
        intrinsics_to_camera_info,
        ns_to_stamp,
        numpy_to_image,
    )
    from nol_ros.ros.qos import sensor_qos
    from nol_ros.ros.tf import _qos_static, transform_stamped
    from nol_ros.srv import ExportSequence, SaveMesh

    root, _ = small_world
    # pairs 0-4 are refused (bad input, no TF); 5-7 are consecutive frames, tracked
    seq, frames = _scene_frames(root / "train" / "000001", 8)
    g = Graph(rclpy_context)
    try:
        # short waits: the TF asked for below never comes, and the pairs without CameraInfo are
        # meant to give up; where the data does come, the test waits until the node has it
        node = g.add(ReconstructionNode(
            "reconstruction", namespace="/bad", context=rclpy_context,
            parameter_overrides=params(tracking__odometry_mode="required",
                                       tracking__first_tf_timeout_s=0.2,
                                       tracking__tf_timeout_s=0.05, camera_info_wait_s=0.3,
                                       export_root=str(tmp_path))))
        cam = g.client_node("bad_camera")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        p_rgb = cam.create_publisher(Image, "/bad/camera/rgb/image_raw", qos)
        p_depth = cam.create_publisher(Image, "/bad/camera/depth_registered/image_raw", qos)
        p_info = cam.create_publisher(CameraInfo, "/bad/camera/rgb/camera_info", sensor_qos())
        p_static = cam.create_publisher(TFMessage, "/tf_static", _qos_static())
        c = g.client_in("/bad")
        # bad requests on purpose: raw replies through c.call
        export, mesh = (c.path("reconstruction", "export_sequence"),
                        c.path("reconstruction", "save_mesh"))
        c.wait_for_nodes(["reconstruction"], 60)
        g.wait(lambda: all(p.get_subscription_count() > 0 for p in (p_rgb, p_depth, p_info)), 20,
               "the subscriptions")

        def st():
            return c.buffer_status()

        def pair(k, rgb_msg=None, depth_msg=None, info=True):
            t, rgb, depth = frames[k % len(frames)]
            stamp = ns_to_stamp(t)
            if info:   # the node uses the latest CameraInfo: the pair goes once it has this one
                p_info.publish(intrinsics_to_camera_info(seq.intrinsics, stamp,
                                                         "camera_rgb_optical_frame"))
                g.wait(lambda: node.recon.info is not None
                       and node.recon.info.header.stamp == stamp, 60,
                       "the node to receive the CameraInfo")
            m_rgb = rgb_msg or numpy_to_image(rgb, "rgb8", stamp, "camera_rgb_optical_frame")
            m_depth = depth_msg or depth_to_image(depth, "16UC1", ns_to_stamp(t + 4_000_000),
                                                  "camera_rgb_optical_frame")
            m_rgb.header.stamp, m_depth.header.stamp = stamp, ns_to_stamp(t + 4_000_000)
            p_rgb.publish(m_rgb)
            p_depth.publish(m_depth)

        # nothing buffered yet: export and mesh answer with NO_FRAMES
        r = c.call(export, ExportSequence.Request(output_dir=str(tmp_path / "e0")))
        assert not r.success and r.error_code == "NO_FRAMES" and "no frames" in r.message
        r = c.call(mesh, SaveMesh.Request(path=str(tmp_path / "m.ply")))
        assert not r.success and r.error_code == "NO_FRAMES"
        # missing CameraInfo: pairs wait camera_info_wait_s, then are rejected
        pair(0, info=False)
        pair(1, info=False)
        g.wait(lambda: st().frames_dropped >= 2, 10, "the pairs without CameraInfo to be rejected")
        s = st()
        assert s.error_code == "BAD_INPUT" and "CameraInfo" in s.message, s
        # wrong encoding
        yuv = Image(height=480, width=640, encoding="yuv422", step=1280,
                    data=bytes(640 * 480 * 2))
        pair(2, rgb_msg=yuv)
        g.wait(lambda: st().error_code == "BAD_ENCODING", 10, "BAD_ENCODING")
        assert "yuv422" in st().message
        # mismatched sizes: depth not registered to the colour image
        small = depth_to_image(np.full((240, 320), 1.0, np.float32), "16UC1")
        pair(3, depth_msg=small)
        g.wait(lambda: "registered" in st().message, 10, "the size mismatch error")
        assert st().frames_received == 0 and st().error_code == "BAD_INPUT"
        # good frames, but odometry is required and there is no TF: counted, not tracked
        pair(4)
        g.wait(lambda: st().tracking.frames_tf_refused >= 1, 10, "the TF refusal")
        s = st()
        assert s.frames_received == 1 and s.tracking.frames_tracked == 0
        assert s.tracking.error_code == "TF_LOOKUP", s.tracking
        assert "odom" in s.tracking.message and "required" in s.tracking.message
        # export/mesh errors that name the problem
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        (foreign / "keep.txt").write_text("mine")
        r = c.call(export, ExportSequence.Request(output_dir=str(foreign)))
        assert not r.success and r.error_code == "BAD_INPUT"
        assert "not a previous export" in r.message
        assert (foreign / "keep.txt").read_text() == "mine"
        r = c.call(mesh, SaveMesh.Request(path=str(tmp_path / "mesh.txt")))
        assert not r.success and r.error_code in ("BAD_INPUT", "NO_FRAMES")
        # outputs stay inside export_root, whatever the request says
        outside = {p.name for p in tmp_path.parent.iterdir()}
        for p in ("/etc/passwd.ply", "../escape.ply", str(tmp_path.parent / "x.ply")):
            r = c.call(mesh, SaveMesh.Request(path=p))
            assert not r.success and r.error_code == "BAD_PATH" and "is not under" in r.message
        r = c.call(export, ExportSequence.Request(output_dir="../../escaped"))
        assert not r.success and r.error_code == "BAD_PATH" and "is not under" in r.message, r
        # nothing written outside, nothing lost in the buffer
        assert {p.name for p in tmp_path.parent.iterdir()} == outside
        assert not Path("/etc/passwd.ply").exists()
        assert st().frames_received == 1 and len(node.ingest.snapshot()) == 1
        # ... and the node keeps serving: with odometry on TF, frames are tracked
        T_odom_cam = np.eye(4)
        p_static.publish(TFMessage(transforms=[transform_stamped(
            "odom", "camera_rgb_optical_frame", 0, T_odom_cam)]))
        g.wait(lambda: node.tf.can_transform("odom", "camera_rgb_optical_frame"), 60,
               "the node to receive the static transform")
        for n, k in enumerate(range(5, 8)):
            pair(k)
            g.wait(lambda n=n: st().tracking.frames_tracked == n + 1, 60, f"frame {k} tracked")
        s = st()
        assert s.tracking.tf_mode == "map->odom" and s.tracking.tracking_ok
        assert s.frames_received == 4 and s.tracking.frames_tracked == 3, s
        r = c.export_sequence(tmp_path / "e1")       # RequestRefused if not
        assert r.success and r.frames == s.frames_received and r.frames_tracked == 3, r
    finally:
        g.close()


# -- pure parts ----------------------------------------------------------------------------------
def _frame(i, stamp_ns, intr):
    from nol_ros.streaming.ingest import RgbdFrame

    return RgbdFrame(index=i, stamp_ns=stamp_ns, depth_stamp_ns=stamp_ns,
                     rgb=np.full((intr.height, intr.width, 3), i, np.uint8),
                     depth_m=np.full((intr.height, intr.width), 1.0, np.float32),
                     intrinsics=intr, frame_id="cam")


def _result(i, stamp_ns, T, tf_mode="map->odom"):
    from nol_ros.reconstruction.tracking import TrackResult
    from nol_ros.streaming.live import LiveResult

    return LiveResult(index=i, stamp_ns=stamp_ns, frame_id="cam",
                      track=TrackResult(i, T, True, 1.0, 0.0, False), T_odom_camera=None,
                      tf_mode=tf_mode, received_s=0.0, done_s=0.0)


def test_untracked_frames_get_interpolated_poses_and_exports_are_safe(tmp_path):
    from nol_ros.camera import Intrinsics
    from nol_ros.datasets.bag_import import load_odometry
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.errors import InputError
    from nol_ros.geometry import make_T
    from nol_ros.streaming.live import NoFramesError, export_sequence, poses_for_frames

    intr = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    frames = [_frame(i, 1000 + 100 * i, intr) for i in range(5)]
    results = {0: _result(0, 1000, make_T(np.eye(3), [0, 0, 0])),
               2: _result(2, 1200, make_T(np.eye(3), [0.2, 0, 0]))}
    poses, tracked = poses_for_frames(frames, results)
    assert tracked == [True, False, True, False, False]
    np.testing.assert_allclose(poses[1][:3, 3], [0.1, 0, 0], atol=1e-12)  # halfway
    np.testing.assert_allclose(poses[4][:3, 3], [0.2, 0, 0], atol=1e-12)  # last known
    with pytest.raises(NoFramesError):
        poses_for_frames(frames, {})
    s = export_sequence(frames, results, tmp_path / "exp", version="v1")
    seq = read_bop_scene(s.path)
    assert (s.frames, s.frames_tracked, len(seq.frames)) == (5, 2, 5)
    assert [f.stamp_ns for f in seq.frames] == [f.stamp_ns for f in frames]
    odom = load_odometry(s.path, 5)
    np.testing.assert_allclose(odom[1][:3, 3], [0.1, 0, 0], atol=1e-9)
    # the prior: no guess after the last trusted frame, nor across a gap the live node lost
    assert odom[3] is None and odom[4] is None
    slow = [_frame(i, 10**9 + i * 50_000_000, intr) for i in range(6)]    # 20 Hz
    known = {k: _result(k, slow[k].stamp_ns, make_T(np.eye(3), [0.1 * k, 0, 0]))
             for k in (0, 2, 5)}
    s = export_sequence(slow, known, tmp_path / "gap")
    odom = load_odometry(s.path, 6)
    assert [T is not None for T in odom] == [True, True, True, False, False, True]
    np.testing.assert_allclose(odom[1][:3, 3], [0.1, 0, 0], atol=1e-9)   # 0.1 s bracket
    # vision alone (map->camera): the live poses are no prior, the chain re-tracks the images
    alone = {k: _result(k, slow[k].stamp_ns, r.track.T_world_camera, "map->camera")
             for k, r in known.items()}
    s = export_sequence(slow, alone, tmp_path / "alone")
    assert load_odometry(s.path, 6) is None and s.frames_tracked == 3
    assert export_sequence(frames, results, tmp_path / "exp", version="v1").unchanged
    assert not export_sequence(frames, results, tmp_path / "exp", version="v2").unchanged
    assert export_sequence(frames, results, tmp_path / "exp2", step=2).frames == 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(InputError, match="not a previous export"):
        export_sequence(frames, results, tmp_path / "other")
    with pytest.raises(NoFramesError):
        export_sequence([], results, tmp_path / "exp3")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def test_buffered_frames_live_in_their_own_pages_and_go_back_when_dropped():
    """The ring buffer's arrays are each an anonymous memory map of their own: a dropped frame
    gives its pages back to the system at once. From the heap, glibc kept the pages of dropped
    frames, so the node's resident memory stayed at the highest it had been (the whole-graph
    soak, bench/soak_all.py: 2.45-2.74 GB against 2.23 GB, see nol_ros.streaming.ingest)."""
    import mmap

    from nol_ros.camera import Intrinsics
    from nol_ros.ros.conversions import (
        depth_to_image,
        intrinsics_to_camera_info,
        ns_to_stamp,
        numpy_to_image,
    )
    from nol_ros.streaming.ingest import IngestConfig, RgbdIngest

    intr = Intrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    depth = np.full((480, 640), 1.5, np.float32)
    depth[:10] = 9.0   # beyond depth_max_m: set invalid in the buffered copy
    ing = RgbdIngest(IngestConfig(max_frames=60))
    before = _rss_mb()
    for k in range(60):
        st = ns_to_stamp(10**9 + k * 33_000_000)
        f = ing.add(numpy_to_image(rgb, "rgb8", st, "cam"),
                    depth_to_image(depth, "16UC1", st, "cam"),
                    intrinsics_to_camera_info(intr, st, "cam"))
    for a in (f.rgb, f.depth_m):
        owner = a
        while isinstance(owner, np.ndarray):
            owner = owner.base
        assert isinstance(owner, memoryview) and isinstance(owner.obj, mmap.mmap), owner
        assert a.flags.writeable and a.flags.c_contiguous
    assert np.array_equal(f.rgb, rgb) and f.depth_m.dtype == np.float32
    assert (f.depth_m[:10] == 0).all() and np.allclose(f.depth_m[10:], 1.5)
    del f
    held = _rss_mb() - before          # 60 frames x 2.1 MB
    assert held > 0.8 * 60 * 2.1, held
    ing.clear()
    assert _rss_mb() - before < 0.2 * held   # measured: ~0 MB left of ~126 MB


def test_an_export_lets_each_frame_go_once_it_is_written(tmp_path, monkeypatch):
    """The live node's export holds a snapshot of the ring buffer; while it writes, the buffer
    replaces those frames with new ones. Held until the export ended, a long export of a full
    buffer kept up to twice the buffer's memory, and the process kept the heap it had grown
    (the whole-graph soak, bench/soak_all.py: +14 % RSS of the reconstruction node after two
    exports). With consume, a frame is referenced by nobody once written (or, skipped by step,
    at once)."""
    import gc
    import weakref

    from nol_ros.camera import Intrinsics
    from nol_ros.datasets.bop import BopSceneWriter, read_bop_scene
    from nol_ros.geometry import make_T
    from nol_ros.streaming.live import export_sequence

    intr = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    frames = [_frame(i, 1000 + 100 * i, intr) for i in range(6)]
    results = {i: _result(i, 1000 + 100 * i, make_T(np.eye(3), [0.01 * i, 0, 0]))
               for i in range(6)}
    alive = [weakref.ref(f.rgb) for f in frames]
    original = BopSceneWriter.add_frame
    seen = []

    def add_frame(self, im_id, rgb, *a, **kw):
        gc.collect()
        seen.append([w() is not None for w in alive])
        return original(self, im_id, rgb, *a, **kw)

    monkeypatch.setattr(BopSceneWriter, "add_frame", add_frame)
    given = list(frames)
    del frames
    s = export_sequence(given, results, tmp_path / "exp", step=2, consume=True)
    assert given == [] and s.frames == 3
    # writing frame 2*k: the frames written before it and the ones step skipped are gone
    assert seen == [[True, False, True, False, True, False],
                    [False, False, True, False, True, False],
                    [False, False, False, False, True, False]]
    gc.collect()
    assert not any(w() for w in alive)
    seq = read_bop_scene(s.path)   # and the export is complete and right
    assert [f.stamp_ns for f in seq.frames] == [1000, 1200, 1400]
    assert int(seq.frames[1].load_rgb()[0, 0, 0]) == 2
    traj = json.loads((Path(s.path) / "live_trajectory.json").read_text())
    assert [t["buffer_index"] for t in traj] == [0, 2, 4] and all(t["tracked"] for t in traj)


def test_a_glitched_stamp_is_dropped_and_a_new_timeline_starts_a_new_sequence():
    from nol_ros.services.reconstruction import StampGuard
    from nol_ros.streaming.live import LiveTrackingConfig

    S = 10**9
    g = StampGuard(jump_s=1.0, future_s=10.0, frames=3)
    assert g.check(100 * S) == ("ok", [])
    assert g.check(100 * S + S // 30) == ("ok", [])
    assert g.check(int(99.6 * S)) == ("ok", [])               # a small reorder: fine
    # one frame far back, then the old timeline again: the glitched one is dropped
    assert g.check(5 * S) == ("hold", [])
    assert g.check(100 * S + 2 * S // 30) == ("drop", [5 * S])
    # one frame far in the future, then the old timeline: dropped too
    assert g.check(500 * S) == ("hold", [])
    assert g.check(100 * S + 3 * S // 30) == ("drop", [500 * S])
    # a bag that loops: three frames in a row on the new timeline -> a new sequence
    assert g.check(2 * S) == ("hold", [])
    assert g.check(2 * S + S // 30) == ("hold", [])
    assert g.check(2 * S + 2 * S // 30) == ("reset", [2 * S, 2 * S + S // 30,
                                                       2 * S + 2 * S // 30])
    assert g.check(2 * S + 3 * S // 30) == ("ok", [])
    # two glitches that disagree with each other do not make a timeline
    assert g.check(50 * S) == ("hold", []) and g.check(900 * S) == ("hold", [50 * S])
    assert g.check(2 * S + 4 * S // 30) == ("drop", [900 * S])
    with pytest.raises(Exception, match="odometry_mode"):
        LiveTrackingConfig(odometry_mode="sometimes")


def test_the_live_buffer_survives_a_glitched_stamp_and_restarts_on_a_bag_loop(small_world):
    """LiveReconstruction with tracking off, fed real image messages: a single bad stamp is
    dropped and counted (BAD_STAMP), the buffer keeps its frames; a loop resets it."""
    from nol_ros.ros.conversions import (
        depth_to_image,
        intrinsics_to_camera_info,
        ns_to_stamp,
        numpy_to_image,
    )
    from nol_ros.services.reconstruction import LiveReconstruction, ReconstructionConfig
    from nol_ros.streaming.live import LiveTrackingConfig

    root, _ = small_world
    seq, frames = _scene_frames(root / "train" / "000001", 3)
    errors = []
    rec = LiveReconstruction(ReconstructionConfig(tracking=LiveTrackingConfig(enabled=False)),
                             on_error=lambda code, msg: errors.append(code))
    try:
        rgb, depth = frames[0][1], frames[0][2]

        def pair(t):
            st = ns_to_stamp(t)
            return numpy_to_image(rgb, "rgb8", st, "cam"), depth_to_image(depth, "16UC1", st,
                                                                          "cam")

        rec.set_camera_info(intrinsics_to_camera_info(seq.intrinsics, ns_to_stamp(0), "cam"))
        t0, dt = frames[0][0], 500_000_000               # 2 Hz: the loop below jumps back 2 s
        for k in range(4):
            rec.add_pair(*pair(t0 + k * dt))
        rec.add_pair(*pair(t0 - 3600 * 10**9))           # one glitched stamp
        rec.add_pair(*pair(t0 + 4 * dt))
        s = rec.ingest.status
        assert s.frames_received == 5 and s.frames_dropped == 1 and errors == ["BAD_STAMP"]
        assert len(rec.ingest.snapshot()) == 5
        for k in range(3):                               # the bag starts again
            rec.add_pair(*pair(t0 + k * dt))
        assert rec.generation == 1 and len(rec.ingest.snapshot()) == 3
    finally:
        rec.shutdown()


def test_one_error_per_code():
    from nol_ros.ros.runtime import ErrorReporter

    class Log:
        def __init__(self):
            self.errors, self.warnings = [], []

        def error(self, m):
            self.errors.append(m)

        def warning(self, m):
            self.warnings.append(m)

    log = Log()
    rep = ErrorReporter(log, every_s=3600)
    for _ in range(50):
        rep.report("BAD_ENCODING", "encoding 'yuv422' is not supported")
    rep.report("BAD_INPUT", "no CameraInfo")
    assert len(log.errors) == 2 and not log.warnings
    assert "BAD_ENCODING" in log.errors[0] and "yuv422" in log.errors[0]


def test_live_tracker_skips_the_oldest_frames_when_it_cannot_keep_up(small_world):
    """A tracker held busy (its TF prior blocks until the test releases it) with a backlog of
    2: submitting never waits for it, the oldest waiting frames are skipped and counted, the
    newest are tracked."""
    import threading

    from nol_ros.streaming.ingest import RgbdFrame
    from nol_ros.streaming.live import LiveTracker, LiveTrackingConfig

    root, _ = small_world
    seq, frames = _scene_frames(root / "train" / "000001", 8)
    done, asked = [], []
    release = threading.Event()

    def blocking_prior(frame, timeout):
        asked.append(frame.index)
        assert release.wait(120), "the test never released the prior"
        return seq.frames[frame.index].T_world_camera

    live = LiveTracker(LiveTrackingConfig(max_backlog=2), lookup_prior=blocking_prior,
                       on_result=lambda r, f: done.append(r.index))
    try:
        submitted = threading.Event()

        def submit_all():
            for i, (t, rgb, depth) in enumerate(frames):
                live.submit(RgbdFrame(index=i, stamp_ns=t, depth_stamp_ns=t, rgb=rgb,
                                      depth_m=depth, intrinsics=seq.intrinsics, frame_id="cam"))
                if i == 0:  # the worker takes the first frame and blocks in its prior
                    Graph.wait(lambda: asked == [0], 60, "the worker to take frame 0")
            submitted.set()

        # submit never waits for the tracker: all 8 go in while the worker is still blocked
        th = threading.Thread(target=submit_all, daemon=True)
        th.start()
        assert submitted.wait(60), "submit blocked while the tracker was busy"
        assert asked == [0] and live.status().backlog == 2
        release.set()
        assert live.wait_idle(60)
        s = live.status()
        # frame 0 tracked, of 1..7 only the last two waited (6 and 7): 5 skipped
        assert (s.frames_tracked, s.frames_skipped) == (3, 5), s
        assert done == [0, 6, 7]   # in order, the newest tracked
        assert s.tf_mode == "map->odom"
        # map anchored at odom: the first pose is the first prior
        np.testing.assert_allclose(live.snapshot()[0].track.T_world_camera,
                                   seq.frames[0].T_world_camera, atol=1e-9)
    finally:
        live.shutdown()


@pytest.mark.parametrize("late", [True, False])
def test_late_first_odometry_does_not_switch_the_run_to_vision_alone(small_world, late):
    """odometry_mode auto: a first frame whose odometry chain is known but whose transform is
    late (ExtrapolationError) is not tracked and the next frame decides, so the run stays in
    map -> odom; only a chain that does not exist (LookupError) means vision alone."""
    from nol_ros.streaming.ingest import RgbdFrame
    from nol_ros.streaming.live import LiveTracker, LiveTrackingConfig
    from nol_ros.streaming.tf_buffer import ExtrapolationError, FrameLookupError

    root, _ = small_world
    seq, frames = _scene_frames(root / "train" / "000001", 3)

    def prior(frame, timeout):
        if frame.index == 0:
            raise (ExtrapolationError if late else FrameLookupError)("no odom at this stamp")
        return seq.frames[frame.index].T_world_camera

    live = LiveTracker(LiveTrackingConfig(first_tf_timeout_s=0.0), lookup_prior=prior)
    try:
        for i, (t, rgb, depth) in enumerate(frames):
            live.submit(RgbdFrame(index=i, stamp_ns=t, depth_stamp_ns=t, rgb=rgb, depth_m=depth,
                                  intrinsics=seq.intrinsics, frame_id="cam"))
            assert live.wait_idle(60)
        s = live.status()
        if late:
            assert (s.tf_mode, s.frames_without_odometry, s.frames_tracked) == \
                ("map->odom", 1, 2), s
            assert sorted(live.snapshot()) == [1, 2]
            assert s.errors_by_code == {"TF_EXTRAPOLATION": 1}, s
        else:
            assert (s.tf_mode, s.frames_without_odometry, s.frames_tracked) == \
                ("map->camera", 0, 3), s
    finally:
        live.shutdown()
