"""The trainer node without training (fast): with nothing learnt it refuses TrainDetector /
TrainPoseEstimator with NO_OBJECTS and keeps serving; the request checks of the training pipeline
(learnt objects found from their files, one id per object, the work folder of an object set
and preset, options_yaml overrides of the preset), and the per-name object ids. (Training
through the graph: test_nodes_learn_to_recognize.py.)"""

import json

import pytest
from _graph_helpers import Graph, params

from nol_ros.errors import ConfigError, InputError
from nol_ros.recognition.pipeline import TrainConfig, learnt_objects, train_plan
from nol_ros.workspace import Workspace


def _fake_learnt(root, name, obj_id, grid_step=60):
    """The files learnt_objects reads: objects/NAME/object.json and renders/render_set.json."""
    ws = root / name
    (ws / "objects" / name).mkdir(parents=True)
    (ws / "objects" / name / "object.json").write_text(json.dumps(
        {"name": name, "obj_id": obj_id, "symmetric": False}))
    (ws / "renders").mkdir()
    (ws / "renders" / "render_set.json").write_text(json.dumps(
        {"source": "ibr_angle", "grid": {"az_step_deg": grid_step},
         "objects": {str(obj_id): {"obj_id": obj_id, "images": 54}}}))


@pytest.mark.ros
def test_trainer_with_nothing_learnt_refuses_and_keeps_serving(tmp_path, rclpy_context):
    from nol_ros.nodes.trainer_node import TrainerNode
    from nol_ros.srv import TrainDetector, TrainPoseEstimator

    g = Graph(rclpy_context)
    try:
        g.add(TrainerNode("trainer", context=rclpy_context,
                        parameter_overrides=params(train__workspace_root=str(tmp_path / "ws"))))
        c = g.client
        r = c.call("/trainer/train_detector", TrainDetector.Request())   # refused: raw reply
        assert not r.accepted and r.error_code == "NO_OBJECTS" and "LearnObject" in r.message
        r = c.call("/trainer/train_pose_estimator", TrainPoseEstimator.Request(
            object_names=["mug"]))
        assert not r.accepted and r.error_code == "UNKNOWN_OBJECT" and "mug" in r.message
        assert c.job_status(c.job("trainer", "")).error_code == "UNKNOWN_JOB"
        assert not c.cancel(c.job("trainer", "x"))
    finally:
        g.close()


def test_train_plan_checks_objects_ids_and_options(tmp_path):
    root = tmp_path / "ws"
    _fake_learnt(root, "mug", 1)
    _fake_learnt(root, "can", 2)
    (root / "half_learnt" / "objects" / "half_learnt").mkdir(parents=True)  # no renders
    (root / "_training").mkdir()                                            # not an object
    found = learnt_objects(root)
    assert sorted(found) == ["can", "mug"] and found["can"].obj_id == 2
    assert found["mug"].scene_dir == root / "mug" / "renders" / "000001"
    cfg = TrainConfig(workspace_root=str(root), preset="tiny")
    plan = train_plan(cfg)
    assert plan.names == ["mug", "can"]          # all learnt, by object id
    assert plan.work_dir == root / "_training" / "tiny_mug+can"
    assert plan.models_dir == root / "_models" and plan.preset.name == "tiny"
    p2 = train_plan(cfg, ["can"], "demo", "detector:\n  epochs: 1\npose.steps: 7\nseed: 3\n"
                                          "recognizer.score_thresh: 0.1\nmax_seconds: 60")
    assert p2.names == ["can"] and p2.preset.detector.epochs == 1 and p2.preset.pose.steps == 7
    assert p2.seed == 3 and p2.max_seconds == 60.0 and p2.preset.recognizer.score_thresh == 0.1
    assert p2.work_dir.name == "demo_can"
    # a re-render changes the fingerprint (a trained stage is then trained again)
    fp = found["mug"].fingerprint
    _fake_learnt(tmp_path / "other", "mug", 1, grid_step=30)
    assert learnt_objects(tmp_path / "other")["mug"].fingerprint != fp
    for kw, err, text in [
            (dict(object_names=["mug", "mug"]), InputError, "repeats"),
            (dict(object_names=["bowl"]), InputError, "bowl"),
            (dict(preset="fast"), ConfigError, "fast"),
            (dict(options_yaml="detset.n_images: -1"), ConfigError, "n_images"),
            (dict(options_yaml="detector.arch: transformer"), ConfigError, "arch"),
            (dict(options_yaml="lr: 0.1"), ConfigError, r"unknown key\(s\) \['lr'\]"),
            (dict(options_yaml="seed: 1.5"), ConfigError, "seed"),
            (dict(options_yaml="a: [1"), ConfigError, "not valid YAML")]:
        with pytest.raises(err, match=text):
            train_plan(cfg, **kw)
    # two learnt objects with the same id (learnt into different roots, copied together)
    _fake_learnt(root, "bowl", 1)
    with pytest.raises(ConfigError, match="share object ids"):
        train_plan(cfg, ["mug", "bowl"])
    with pytest.raises(ConfigError, match="train.preset"):
        TrainConfig(preset="huge")


def test_object_ids_are_assigned_once_per_name(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.object_id("mug", assign=False) == 0
    assert [ws.object_id(n) for n in ("mug", "can", "mug")] == [1, 2, 1]
    assert json.loads((tmp_path / "object_ids.json").read_text()) == {"mug": 1, "can": 2}
    (tmp_path / "object_ids.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="object_ids.json"):
        ws.object_id("bowl")


@pytest.mark.ros
def test_parameters_are_described_and_refused_at_run_time(tmp_path, rclpy_context):
    """Every parameter carries its config/trainer.yaml description; none can change at run time
    (the trainer reads them at start): ros2 param set is refused with a reason, not ignored."""
    from rclpy.parameter import Parameter

    from nol_ros.nodes.trainer_node import TrainerNode

    node = TrainerNode("trainer", context=rclpy_context, parameter_overrides=params(
        train__workspace_root=str(tmp_path / "ws")))
    try:
        names = node._parameters.keys() - {"use_sim_time", "start_type_description_service"}
        descs = node.describe_parameters(sorted(names))
        assert all(d.description and d.read_only for d in descs), \
            [d.name for d in descs if not d.description]
        r = node.set_parameters([Parameter("train.preset", value="tiny")])[0]
        assert not r.successful and "read-only" in r.reason, r
        assert node.get_parameter("train.preset").value == "demo"
        assert node.describe_parameters(["max_queued"])[0].integer_range[0].from_value == 0
        # a closed set of names (nol_ros.enums.Preset) lists them in the descriptor
        preset = node.describe_parameters(["train.preset"])[0]
        assert preset.additional_constraints == "one of: tiny, demo, cpu, paper", preset
        assert not node.describe_parameters(["max_queued"])[0].additional_constraints
    finally:
        node.destroy_node()
