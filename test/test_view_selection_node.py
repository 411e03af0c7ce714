"""The view_selection node over localhost DDS: SelectViews on the small synthetic sequence for two
configured objects publishes one ViewSelection per object (poses, full-size masks) and the
annotated image on latched topics, with registrations close to the ground truth; bad requests
are refused with their error code and the node keeps serving."""

import os
from pathlib import Path

import numpy as np
import pytest
from _graph_helpers import Graph, params, workspace_errors

pytestmark = pytest.mark.ros


def _latched():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.mark.slow
def test_select_views_for_two_objects_publishes_selection_and_image(small_world, tmp_path,
                                                                     rclpy_context):
    from sensor_msgs.msg import Image

    from nol_ros.msg import JobProgress, ViewSelection
    from nol_ros.nodes.view_selection_node import ViewSelectionNode
    from nol_ros.streaming.messages import image_to_numpy, matrix_from_pose

    root, _ = small_world
    scene, models = root / "train" / "000001", root / "models"
    names = ["cracker_box", "tomato_soup_can"]
    meshes = [str(models / "obj_000001.ply"), str(models / "obj_000003.ply")]
    g = Graph(rclpy_context)
    try:
        g.add(ViewSelectionNode("view_selection", context=rclpy_context,
                                parameter_overrides=params(
            workspace_root=str(tmp_path / "ws"), data_root=str(root), objects__names=names,
            objects__mesh_paths=meshes, self_annotation__annotate_step=2)))
        cli = g.client_node()
        progress = []
        cli.create_subscription(JobProgress, "/view_selection/progress", progress.append, 100)
        r = g.client.select_views(sequence_path=str(scene))  # all configured; RequestRefused
        done = g.client.wait(r, 600)
        assert done.status.state == JobProgress.STATE_SUCCEEDED, done
        ws = Path(done.result_path)
        # latched: a subscriber that comes after the job still gets the results
        sels, images = [], []
        cli.create_subscription(ViewSelection, "/view_selection/selection", sels.append,
                                _latched())
        cli.create_subscription(Image, "/view_selection/annotated_image", images.append,
                                _latched())
        g.wait(lambda: len(sels) == 2 and images, 20, "the latched selection and image")
        assert sorted(s.object_name for s in sels) == names
        for s in sels:
            assert 1 <= len(s.views) <= 16 and s.coverage >= 0.95, (s.object_name, s.coverage)
            assert Path(s.workspace) == ws
            for v in s.views:
                m = image_to_numpy(v.mask)
                assert v.mask.encoding == "mono8" and m.shape == (480, 640) and (m > 0).sum() > 50
                assert 0 < v.visible_fraction <= 1 and v.object_name == s.object_name
                T = matrix_from_pose(v.pose)
                assert 0.2 < T[2, 3] < 3.0  # the object is in front of the camera
            e = workspace_errors(ws, s.object_name, scene, models, 1 if s.object_id == 1 else 3)
            print(s.object_name, e)
            assert e["t_err_m"] < 0.01 and e["r_err_deg"] < 2.0, e
            np.testing.assert_allclose(matrix_from_pose(s.t_world_object)[:3, 3],
                                       _object_json(ws, s.object_name)[:3, 3], atol=1e-6)
        img = image_to_numpy(images[-1])
        assert images[-1].encoding == "rgb8" and img.shape[0] == 2 * 160 and img.shape[2] == 3
        stages = {p.stage for p in progress if p.job_id == r.job_id}
        assert {"tracking", "registration", "view_selection"} <= stages, stages
    finally:
        g.close()


def _object_json(ws, name):
    import json

    return np.array(json.loads((ws / "objects" / name / "object.json").read_text())
                    ["T_world_object"])


def test_bad_select_views_requests_are_refused_with_a_code(small_world, tmp_path,
                                                           rclpy_context):
    from nol_ros.msg import JobProgress
    from nol_ros.nodes.view_selection_node import ViewSelectionNode
    from nol_ros.srv import SelectViews

    root, _ = small_world
    scene, mesh = root / "train" / "000001", str(root / "models" / "obj_000001.ply")
    bad_mesh = tmp_path / "broken.ply"
    bad_mesh.write_text("ply\nnot a mesh\n")
    g = Graph(rclpy_context)
    try:
        # the data root holds both the world and this test's files
        data = Path(os.path.commonpath([tmp_path, root]))
        g.add(ViewSelectionNode("view_selection", namespace="/vs_bad", context=rclpy_context,
                                parameter_overrides=params(workspace_root=str(tmp_path / "ws"),
                                                           data_root=str(data),
                                                           export_timeout_s=5.0)))
        c = g.client_in("/vs_bad")
        select = c.path("view_selection", "select_views")

        def files():   # everything under this test's folder and the world's (nothing lost)
            return {p: (p.stat().st_size, p.stat().st_mtime_ns) for d in (tmp_path, root)
                    for p in d.rglob("*") if p.is_file()}

        before = files()

        def refused(code, text, **req):
            r = c.call(select, SelectViews.Request(**req))   # bad on purpose: the raw reply
            assert not r.accepted and r.error_code == code and text in r.message, r

        refused("BAD_INPUT", "no objects configured", sequence_path=str(scene))
        refused("UNKNOWN_OBJECT", "teapot", object_names=["teapot"], sequence_path=str(scene))
        refused("BAD_MESH", "broken.ply", object_names=["x"], mesh_paths=[str(bad_mesh)],
                sequence_path=str(scene))
        refused("BAD_PATH", "is not an existing path under", object_names=["x"],
                mesh_paths=[str(tmp_path / "none.ply")], sequence_path=str(scene))
        refused("BAD_PATH", "is not an existing path under", object_names=["x"],
                mesh_paths=["/etc/hostname"], sequence_path=str(scene))
        refused("BAD_PATH", "object name", object_names=[".."], mesh_paths=[mesh],
                sequence_path=str(scene))
        refused("BAD_PATH", "workspace", object_names=["box"], mesh_paths=[mesh],
                sequence_path=str(scene), workspace="../../elsewhere")
        refused("BAD_INPUT", "one mesh per name", object_names=["a", "b"], mesh_paths=[mesh],
                sequence_path=str(scene))
        refused("BAD_FILE", "not a BOP scene", object_names=["box"], mesh_paths=[mesh],
                sequence_path=str(tmp_path))
        assert files() == before and not (tmp_path / "ws").exists()
        assert not (tmp_path.parent / "elsewhere").exists()
        # accepted, but there is no reconstruction node to export the live buffer
        r = c.select_views(["box"], [mesh])      # RequestRefused if not accepted
        st = c.wait(r, 120)
        assert st.status.state == JobProgress.STATE_FAILED
        assert st.error_code == "SERVICE_UNAVAILABLE" and "export_sequence" in st.message, st
        # still serving
        r = c.call(select, SelectViews.Request(object_names=["teapot"]))
        assert r.error_code == "UNKNOWN_OBJECT"
    finally:
        g.close()
