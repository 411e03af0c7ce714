"""The nol node's service (nol_ros.services.learning) without ROS: every bad or hostile
LearnObject request is refused before it is queued with its code and a message that names the
problem (names and paths confined: one message for "outside the root" and "missing"), options
text is bounded, a request that fails in its job reports the code; RenderViews' limits; the
renderer cache; the job-wide progress fraction. Then the node over real DDS: the same refusals
come back in the replies, progress is published, parameters are described and the dynamic
ones take effect. (LearnObject's render stage and RenderViews on a learnt object:
test_nodes_learn_to_recognize.py.)"""

import os
import time

import numpy as np
import pytest

from nol_ros.camera import Intrinsics
from nol_ros.errors import NolError
from nol_ros.learn import SOURCE_BAG, SOURCE_DATASET, SOURCE_LIVE_BUFFER, LearnConfig
from nol_ros.services.learning import (
    LearningConfig,
    LearningService,
    LearnRequest,
    RendererCache,
    RenderViewsConfig,
    RenderViewsService,
    check_poses,
    learn_config_with_options,
    learn_progress_spans,
)


def _box_mesh(path):
    import trimesh

    trimesh.creation.box((0.1, 0.1, 0.1)).export(path)
    return str(path)


@pytest.fixture
def data(tmp_path):
    """A data root with a good mesh, an unreadable one, a BOP-looking folder without images, a
    folder that is nothing, and a symlink out of the root; the workspace root beside it."""
    d = tmp_path / "data"
    d.mkdir()
    _box_mesh(d / "box.ply")
    (d / "junk.ply").write_text("ply\n")
    (d / "seq").mkdir()
    (d / "seq" / "scene_camera.json").write_text("{}")
    (d / "seq" / "scene_gt.json").write_text("{}")
    (d / "nothing").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    _box_mesh(outside / "secret.ply")
    os.symlink(outside, d / "link")
    return d, LearningConfig(data_root=str(d), learn=LearnConfig(
        workspace_root=str(tmp_path / "ws")))


def _refused(service, code, text, **req):
    with pytest.raises(NolError) as e:
        service.submit(LearnRequest(**{"object_name": "box", **req}))
    assert e.value.code == code and text in str(e.value), (req, e.value.code, str(e.value))
    return str(e.value)


def test_bad_and_hostile_learn_requests_are_refused_before_they_queue(data, tmp_path):
    d, cfg = data

    def files():   # the data root and the folder outside it (nothing lost, nothing written)
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")
                if p.is_file()}

    before = files()
    s = LearningService(cfg, "cpu")
    try:
        box = str(d / "box.ply")
        ds = dict(source=SOURCE_DATASET, source_path="seq")
        # names: empty, traversal, absolute, hidden, reserved, too long
        for name in ("", "..", ".", "a/b", "../x", "/etc/passwd", ".hidden", "_models",
                     "x" * 65):
            _refused(s, "BAD_PATH", "object name", object_name=name, mesh_path=box, **ds)
        # paths outside the data root or missing: one message, nothing revealed
        outside = [str(tmp_path / "outside" / "secret.ply"), "../outside/secret.ply",
                   "link/secret.ply"]
        msgs = {_refused(s, "BAD_PATH", "is not an existing path under", mesh_path=m, **ds)
                .replace(m, "P") for m in outside + ["missing.ply"]}
        assert len(msgs) == 1, msgs
        _refused(s, "BAD_PATH", "source_path", mesh_path=box, source=SOURCE_DATASET,
                 source_path="../outside")
        _refused(s, "BAD_PATH", "source_path", mesh_path=box, source=SOURCE_BAG,
                 source_path="/tmp")
        # sources and meshes that are not what they claim
        _refused(s, "BAD_FILE", "metadata.yaml", mesh_path=box, source=SOURCE_BAG,
                 source_path="nothing")
        _refused(s, "BAD_FILE", "neither a BOP scene", mesh_path=box, source=SOURCE_DATASET,
                 source_path="nothing")
        _refused(s, "BAD_MESH", "junk.ply", mesh_path="junk.ply", **ds)
        _refused(s, "UNKNOWN_OBJECT", "teapot", object_name="teapot", **ds)
        _refused(s, "BAD_INPUT", "unknown source 7", mesh_path=box, source=7)
        # options: unknown key, bad value, the root, a YAML alias bomb, oversized, too deep
        _refused(s, "BAD_CONFIG", "no_such_option", mesh_path=box, options_yaml="no_such_option: 1",
                 **ds)
        _refused(s, "BAD_CONFIG", "render.batch", mesh_path=box, options_yaml="render.batch: -2",
                 **ds)
        _refused(s, "BAD_CONFIG", "workspace_root", mesh_path=box,
                 options_yaml="workspace_root: /", **ds)
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
               "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        _refused(s, "BAD_CONFIG", "alias", mesh_path=box, options_yaml=bomb, **ds)
        _refused(s, "BAD_CONFIG", "bytes", mesh_path=box, options_yaml="x: " + "a" * 20000, **ds)
        _refused(s, "BAD_CONFIG", "deeper", mesh_path=box,
                 options_yaml="a: " + "[" * 10 + "]" * 10, **ds)
        _refused(s, "BAD_CONFIG", "finite", mesh_path=box,
                 options_yaml="self_annotation.min_observed_fraction: .nan", **ds)
        assert s.jobs.jobs() == []                    # nothing was queued
        assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())
        assert files() == before                      # nothing lost, nothing written
        # accepted (relative paths inside the root), then fails in its job: no images there
        info = s.submit(LearnRequest("box", "box.ply", SOURCE_DATASET, "seq",
                                     "self_annotation:\n  annotate_step: 2\n"))
        done = s.jobs.wait(info.job_id, 120)
        assert done.error_code == "BAD_FILE" and "lists no images" in done.message
        # the live buffer without a reconstruction node to export it: the export stage says so
        done = s.jobs.wait(s.submit(LearnRequest("box", "box.ply", SOURCE_LIVE_BUFFER)).job_id, 60)
        assert done.error_code == "SERVICE_UNAVAILABLE" and "source_path" in done.message
        assert not (tmp_path / "ws" / "box").exists()  # nothing half-learnt left behind
    finally:
        s.shutdown()


def test_render_views_limits_and_pose_checks(data):
    d, cfg = data
    T = np.eye(4)
    T[2, 3] = 0.7
    assert check_poses(np.stack([T, T]), 4).shape == (2, 4, 4)
    for poses, text in [(np.zeros((0, 4, 4)), "no poses"), (np.stack([T] * 5), "at most 4")]:
        with pytest.raises(NolError, match=text):
            check_poses(poses, 4)
    bad = T.copy()
    bad[0, 3] = np.inf
    with pytest.raises(NolError, match="pose 1 contains NaN/inf"):
        check_poses(np.stack([T, bad]), 4)
    behind = T.copy()
    behind[2, 3] = -0.5
    with pytest.raises(NolError, match="behind the camera"):
        check_poses(np.stack([behind]), 4)
    import dataclasses

    small = dataclasses.replace(cfg, render_views=RenderViewsConfig(max_request_pixels=20000))
    rv = RenderViewsService(small, "cpu")
    intr = Intrinsics(500.0, 500.0, 50.0, 50.0, 100, 100)
    for name, code in [("teapot", "UNKNOWN_OBJECT"), ("..", "UNKNOWN_OBJECT"),
                       ("", "UNKNOWN_OBJECT")]:
        with pytest.raises(NolError) as e:
            rv.render(name, np.stack([T]), intr)
        assert e.value.code == code
    # the limits apply before anything is loaded (a learnt-looking object)
    ws = cfg.workspace.learnt("mug").files
    ws.dir.mkdir(parents=True)
    ws.views_json.write_text("{}")
    with pytest.raises(NolError, match="max_pixels") as e:
        rv.render("mug", np.stack([T]), Intrinsics(500.0, 500.0, 50, 50, 4000, 3000))
    assert e.value.code == "BAD_CAMERA_INFO"
    with pytest.raises(NolError, match="max_request_pixels") as e:
        rv.render("mug", np.stack([T, T, T]), intr)       # 3 x 10000 px > 20000
    assert e.value.code == "BAD_POSE" and rv.renderers.loads == 0


def test_renderer_cache_reuses_reloads_evicts_and_releases_when_idle():
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
    from nol_ros.errors import ConfigError
    from nol_ros.progress import OverallProgress

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
                     ("finetune", 1.0), ("render", 0.5), ("render", 1.0)]:
        p(stage, f)
    fr = [f for _, f in out]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0) and out[2][0] == "tracking"
    cfg = learn_config_with_options(LearnConfig(), "render.preset: tiny\nrender:\n  batch: 4\n")
    assert cfg.render.preset == "tiny" and cfg.render.batch == 4 and cfg.render.enabled
    with pytest.raises(ConfigError, match="render.preset 'huge' unknown"):
        learn_config_with_options(LearnConfig(), "render.preset: huge")
    with pytest.raises(ConfigError, match="render.method"):
        learn_config_with_options(LearnConfig(), "render.method: raytrace")


@pytest.mark.ros
def test_the_node_replies_with_the_service_codes_and_honours_dynamic_parameters(
        data, rclpy_context):
    from _graph_helpers import Graph, params
    from rclpy.parameter import Parameter

    from nol_ros.msg import JobProgress
    from nol_ros.nodes.nol_node import NolNode
    from nol_ros.srv import LearnObject

    d, cfg = data
    g = Graph(rclpy_context)
    try:
        node = g.add(NolNode("nol", context=rclpy_context, parameter_overrides=params(
            learn__workspace_root=cfg.learn.workspace_root, data_root=str(d))))
        cli = g.client_node()
        progress = []
        cli.create_subscription(JobProgress, "/nol/progress", progress.append, 50)
        c = g.client
        r = c.call("/nol/learn_object", LearnObject.Request(object_name="..",
                                                            mesh_path="box.ply"))  # bad
        assert not r.accepted and r.error_code == "BAD_PATH" and "object name" in r.message
        r = c.learn_object("box", "box.ply", LearnObject.Request.SOURCE_DATASET, "seq")
        st = c.wait(r, 120)
        assert st.status.state == JobProgress.STATE_FAILED and st.error_code == "BAD_FILE"
        g.wait(lambda: any(p.job_id == r.job_id and p.state == JobProgress.STATE_FAILED
                           for p in progress), 60, "the failure on ~/progress")
        # the ~/learn action runs the same job: a refused goal is aborted with the code, an
        # accepted one gives feedback and the job's result
        from action_msgs.msg import GoalStatus

        from nol_ros.action import Learn

        feedback = []
        out = c.learn_goal("..", "box.ply", on_feedback=feedback.append, timeout_s=120)
        assert out.status == GoalStatus.STATUS_ABORTED and out.result.error_code == "BAD_PATH"
        out = c.learn_goal("box", "box.ply", Learn.Goal.SOURCE_DATASET, "seq",
                           on_feedback=feedback.append, timeout_s=120)
        assert out.status == GoalStatus.STATUS_ABORTED and out.result.error_code == "BAD_FILE"
        assert out.result.job_id and not out.result.success
        g.wait(lambda: any(f.job_id == out.result.job_id for f in feedback), 30,
               "feedback of the goal's job")
        # described parameters; a dynamic one takes effect, a read-only one is refused
        assert node.describe_parameters(["data_root"])[0].description
        res = node.set_parameters([Parameter("render_views.max_poses", value=3)])[0]
        assert res.successful and node.views.cfg.render_views.max_poses == 3
        res = node.set_parameters([Parameter("render_views.max_poses", value=0)])[0]
        assert not res.successful and node.views.cfg.render_views.max_poses == 3
        res = node.set_parameters([Parameter("data_root", value="/")])[0]
        assert not res.successful and "read-only" in res.reason
    finally:
        g.close()
