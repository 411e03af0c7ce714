"""The nol node over real DDS: bad LearnObject requests are refused or fail with a clear error
code in the job status, progress is published, and the node keeps serving. Its pure parts:
RenderViews' pose checks, the renderer cache (reuse, reload, eviction, idle release) and the
job-wide progress fraction. (LearnObject's render stage and RenderViews on a learnt object:
test_nodes_learn_to_recognize.py.)"""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_learn_object_errors_are_reported_and_node_survives(tmp_path, rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from nol_ros.msg import JobProgress
    from nol_ros.nodes.nol_node import make_node
    from nol_ros.srv import CancelJob, GetJobStatus, LearnObject

    server = make_node("nol", context=rclpy_context,
                       parameter_overrides=[rclpy.parameter.Parameter(
                           "learn.workspace_root", value=str(tmp_path / "ws"))])
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(server)
    client_node = rclpy.create_node("client", context=rclpy_context)
    ex.add_node(client_node)
    progress = []
    client_node.create_subscription(JobProgress, "/nol/progress", progress.append, 50)
    learn = client_node.create_client(LearnObject, "/nol/learn_object")
    status = client_node.create_client(GetJobStatus, "/nol/get_job_status")
    cancel = client_node.create_client(CancelJob, "/nol/cancel_job")
    spin = lambda: ex.spin_once(timeout_sec=0.05)  # noqa: E731
    try:
        t0 = time.monotonic()
        while not (learn.service_is_ready() and status.service_is_ready()):
            spin()
            assert time.monotonic() - t0 < 60, "the nol node's services did not come up"
        # refused at once: empty name
        r = _call_ex(ex, learn, LearnObject.Request(object_name=""))
        assert not r.accepted and r.error_code and "object_name" in r.message
        # refused at once, the reply names the problem: mesh file missing
        r = _call_ex(ex, learn, LearnObject.Request(
            object_name="mug", mesh_path=str(tmp_path / "missing.ply"),
            source=LearnObject.Request.SOURCE_DATASET, source_path=str(tmp_path)))
        assert not r.accepted and r.error_code == "BAD_FILE" and "missing.ply" in r.message
        # a bad dataset path: a clear file error
        mesh = tmp_path / "m.ply"
        mesh.write_text("ply\n")
        r = _call_ex(ex, learn, LearnObject.Request(
            object_name="mug", mesh_path=str(mesh),
            source=LearnObject.Request.SOURCE_DATASET, source_path=str(tmp_path / "nope")))
        assert not r.accepted and r.error_code == "BAD_FILE" and "does not exist" in r.message
        # an unreadable mesh / a missing bag / an unknown object / a bad option
        r = _call_ex(ex, learn, LearnObject.Request(
            object_name="mug", mesh_path=str(mesh), source=LearnObject.Request.SOURCE_BAG,
            source_path=str(tmp_path)))
        assert not r.accepted and r.error_code == "BAD_FILE" and "metadata.yaml" in r.message
        (tmp_path / "scene_camera.json").write_text("{}")
        (tmp_path / "scene_gt.json").write_text("{}")
        r = _call_ex(ex, learn, LearnObject.Request(
            object_name="mug", mesh_path=str(mesh), source=LearnObject.Request.SOURCE_DATASET,
            source_path=str(tmp_path)))
        assert not r.accepted and r.error_code == "BAD_MESH" and "m.ply" in r.message
        r = _call_ex(ex, learn, LearnObject.Request(object_name="teapot"))
        assert not r.accepted and r.error_code == "UNKNOWN_OBJECT" and "teapot" in r.message
        good_mesh = _box_mesh(tmp_path / "box.ply")
        r = _call_ex(ex, learn, LearnObject.Request(
            object_name="box", mesh_path=good_mesh, source=LearnObject.Request.SOURCE_DATASET,
            source_path=str(tmp_path), options_yaml="no_such_option: 1"))
        assert not r.accepted and r.error_code == "BAD_CONFIG" and "no_such_option" in r.message
        # accepted, then fails in the job: the dataset folder holds no images
        r = _call_ex(ex, learn, LearnObject.Request(
            object_name="box", mesh_path=good_mesh, source=LearnObject.Request.SOURCE_DATASET,
            source_path=str(tmp_path), options_yaml="self_annotation:\n  annotate_step: 2\n"))
        assert r.accepted and r.job_id
        st = _wait_done(ex, status, r.job_id)
        assert st.found and st.status.state == JobProgress.STATE_FAILED
        assert st.error_code == "BAD_FILE" and "lists no images" in st.message
        # unknown job
        assert not _call_ex(ex, status, GetJobStatus.Request(job_id="nope")).found
        assert not _call_ex(ex, cancel, CancelJob.Request(job_id="nope")).success
        for _ in range(20):
            spin()
        assert any(p.job_id == r.job_id and p.state == JobProgress.STATE_FAILED
                   for p in progress)
    finally:
        server.destroy_node()
        client_node.destroy_node()


def _box_mesh(path):
    import trimesh

    trimesh.creation.box((0.1, 0.1, 0.1)).export(path)
    return str(path)


def _call_ex(ex, client, req, timeout=20):
    fut = client.call_async(req)
    t0 = time.monotonic()
    while not fut.done() and time.monotonic() - t0 < timeout:
        ex.spin_once(timeout_sec=0.05)
    assert fut.done(), "service call timed out"
    return fut.result()


def _wait_done(ex, status_client, job_id, timeout=20):
    from nol_ros.msg import JobProgress
    from nol_ros.srv import GetJobStatus

    t0 = time.monotonic()
    while True:
        st = _call_ex(ex, status_client, GetJobStatus.Request(job_id=job_id))
        if st.status.state >= JobProgress.STATE_SUCCEEDED:
            return st
        assert time.monotonic() - t0 < timeout, "job did not finish"


def test_render_views_pose_checks():
    from geometry_msgs.msg import Pose

    from nol_ros.nodes.nol_node import PoseError, poses_from_msgs

    p = Pose()
    p.position.x, p.position.z = 0.1, 0.7
    p.orientation.z, p.orientation.w = np.sin(0.2), np.cos(0.2)
    T = poses_from_msgs([p, p], 4)
    assert T.shape == (2, 4, 4) and np.allclose(T[0, :3, 3], [0.1, 0, 0.7])
    assert np.isclose(np.degrees(np.arctan2(T[0, 1, 0], T[0, 0, 0])), np.degrees(0.4))
    for poses, text in [([], "no poses"), ([p] * 5, "at most 4")]:
        with pytest.raises(PoseError, match=text):
            poses_from_msgs(poses, 4)
    bad = Pose()
    bad.position.z = float("inf")
    bad.orientation.w = 1.0
    with pytest.raises(PoseError, match="pose 1 contains NaN/inf"):
        poses_from_msgs([p, bad], 4)


def test_renderer_cache_reuses_reloads_evicts_and_releases_when_idle():
    from nol_ros.nodes.nol_node import RendererCache

    loads = []

    def load(key):
        loads.append(key)
        return object()

    c = RendererCache(load, idle_s=10.0, max_entries=2)
    a = c.acquire("a", 1)
    c.release("a")
    assert c.acquire("a", 1) is a and loads == ["a"]          # cached
    c.release("a")
    assert c.acquire("a", 2) is not a and loads == ["a", "a"]  # learnt again: reloaded
    c.release("a")
    for k in ("b", "c"):
        c.acquire(k, 1)
        c.release(k)
    assert len(c) == 2 and c.acquire("a", 2) is not None and loads[-1] == "a"  # a was evicted
    c.release("a")
    busy = c.acquire("b", 1)
    assert busy is not None
    assert c.release_idle(time.monotonic() + 5) == 0           # not idle long enough
    assert c.release_idle(time.monotonic() + 11) == 1 and len(c) == 1   # b is in use: kept
    c.release("b")
    assert c.release_idle(time.monotonic() + 11) == 1 and len(c) == 0 and c.releases == 2


def test_learn_progress_is_one_monotonic_fraction_and_options_reach_the_render_stage():
    from nol_ros.learn import LearnConfig, OverallProgress
    from nol_ros.nodes.nol_node import learn_config_with_options, learn_progress_spans

    spans = learn_progress_spans(True, True)
    assert spans["export"][0] == 0.0 and spans["render"][1] == 1.0
    ordered = sorted(spans.values())
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(ordered, ordered[1:]))
    assert learn_progress_spans(False, False)["view_selection"][1] == 1.0
    out = []
    p = OverallProgress(lambda s, f, m="": out.append((s, f)), spans)
    for stage, f in [("export", 1.0), ("loading", 0.0), ("tracking", 0.5), ("tracking", 1.0),
                     ("loop_closure", 0.0), ("registration", 0.0), ("annotation", 0.5),
                     ("view_selection", 1.0), ("render_setup", 0.0), ("refine", 1.0),
                     ("render", 0.5), ("render", 1.0)]:
        p(stage, f)
    fr = [f for _, f in out]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0) and out[2][0] == "tracking"
    cfg = learn_config_with_options(LearnConfig(), "render.preset: tiny\nrender:\n  batch: 4\n")
    assert cfg.render.preset == "tiny" and cfg.render.batch == 4 and cfg.render.enabled
    from nol_ros.errors import ConfigError

    with pytest.raises(ConfigError, match="render.preset 'huge' unknown"):
        learn_config_with_options(LearnConfig(), "render.preset: huge")
    with pytest.raises(ConfigError, match="render.method"):
        learn_config_with_options(LearnConfig(), "render.method: raytrace")
