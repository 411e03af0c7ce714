"""The recognizer node's own logic over real DDS, with a stub in place of the trained models (so
it needs no training): posed detections become camera -> object_NAME transforms on /tf and
Detection messages with the pose; a busy recogniser drops the frames that come while it works
(counted, the freshest frame is processed next); without models every frame is counted as
NO_MODELS and the node keeps running. The pure helpers are tested without a graph. (The real
models on the test scene: test_nodes_learn_to_recognize.py.)

The stub is busy until the test releases it, and each frame is published only once the node
has counted the previous one, so what is dropped does not depend on the machine's speed."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from _graph_helpers import Graph, params

from nol_ros.geometry import make_T
from nol_ros.recognition.recognizer import Recognition


def _T(x=0.1, z=0.8, yaw=0.3):
    c, s = np.cos(yaw), np.sin(yaw)
    return make_T(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.array([x, 0.0, z]))


class StubRecognizer:
    """Recognizer.recognize's interface: works (blocks) until ``release`` is set, then returns
    two detections (one posed)."""

    def __init__(self):
        self.calls = []
        self.release = threading.Event()
        self.objects = {4: SimpleNamespace(name="mustard_bottle")}

    def recognize(self, rgb, intr, depth=None, score_thresh=None, max_per_class=None,
                  appearance=None):
        self.calls.append((rgb.shape, intr.width, depth is None, score_thresh, max_per_class,
                           appearance))
        assert self.release.wait(120), "the test never released the stub"
        return [Recognition(4, "mustard_bottle", 0.9, (10.0, 20.0, 30.0, 40.0), _T(), 0.8),
                Recognition(4, "mustard_bottle", 0.4, (50.0, 5.0, 8.0, 9.0), None, 0.0,
                            reason="not posed")]


@pytest.mark.ros
def test_posed_detections_go_to_tf_and_busy_frames_are_dropped(tmp_path, rclpy_context):
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from nol_ros.camera import Intrinsics
    from nol_ros.msg import DetectionArray
    from nol_ros.nodes.recognizer_node import RecognizerNode
    from nol_ros.ros.conversions import intrinsics_to_camera_info, ns_to_stamp, numpy_to_image
    from nol_ros.streaming.messages import matrix_from_pose, matrix_from_transform, stamp_to_ns

    g = Graph(rclpy_context)
    try:
        node = g.add(RecognizerNode("recognizer", context=rclpy_context, parameter_overrides=params(
            models_dir=str(tmp_path / "missing"), use_depth=False, models_poll_s=0.0,
            min_pose_score=0.5)))
        cli = g.client_node()
        dets, tfs = [], []
        cli.create_subscription(DetectionArray, "/recognizer/detections", dets.append, 50)
        cli.create_subscription(TFMessage, "/tf", tfs.append, 50)
        pr = cli.create_publisher(Image, "/camera/rgb/image_raw", 50)
        pi = cli.create_publisher(CameraInfo, "/camera/rgb/camera_info", 10)
        g.wait(lambda: pr.get_subscription_count() and pi.get_subscription_count(), 20,
               "the recognizer's subscriptions")
        intr = Intrinsics(60.0, 60.0, 32.0, 24.0, 64, 48)
        img = np.zeros((48, 64, 3), np.uint8)

        def publish(t_ns):
            pi.publish(intrinsics_to_camera_info(intr, ns_to_stamp(t_ns), "cam_optical"))
            pr.publish(numpy_to_image(img, "rgb8", ns_to_stamp(t_ns), "cam_optical"))

        # no models: counted, reported, nothing published
        publish(10**9)
        g.wait(lambda: node.service.state().rejected == 1, 20, "a NO_MODELS rejection")
        assert node.status_msg().error_code == "NO_MODELS" and not dets
        # a busy recogniser: 12 frames arrive while it works on the first one; of the 11 that
        # wait, each new one replaces the one waiting (10 dropped), then the freshest is done
        stub = StubRecognizer()
        with node.service._lock:   # the stub in place of trained models (no training here)
            node.service.recognizer = stub
        stamps = [2 * 10**9 + k * 10**7 for k in range(12)]
        for k, st in enumerate(stamps):
            publish(st)
            g.wait(lambda k=k: node.status_msg().frames_received == 2 + k, 60,
                   f"frame {k} to arrive")
            if k == 0:
                g.wait(lambda: len(stub.calls) == 1, 60, "the recogniser to take frame 0")
        stub.release.set()

        def settled():
            s = node.status_msg()
            return s.frames_processed + s.frames_dropped_busy + s.frames_rejected == 13
        g.wait(settled, 60, "every frame accounted for")
        s = node.status_msg()
        print(f"received {s.frames_received}, processed {s.frames_processed}, dropped busy "
              f"{s.frames_dropped_busy}, rejected {s.frames_rejected}")
        assert (s.frames_received, s.frames_processed, s.frames_dropped_busy) == (13, 2, 10), s
        assert s.object_names == ["mustard_bottle"] and s.poses_published == s.frames_processed
        g.wait(lambda: len(dets) == s.frames_processed, 10, "the detections")
        got = [stamp_to_ns(d.header.stamp) for d in dets]
        assert got[0] == stamps[0] and got[-1] == stamps[-1]   # the freshest frame is recognised
        d0, d1 = dets[-1].detections
        assert dets[-1].header.frame_id == "cam_optical"
        assert d0.has_pose and abs(d0.pose_score - 0.8) < 1e-6 and d0.object_id == 4
        assert np.allclose(matrix_from_pose(d0.pose), _T(), atol=1e-6)
        assert (d0.x, d0.y, d0.width, d0.height) == (10.0, 20.0, 30.0, 40.0)
        assert not d1.has_pose and d1.pose_score == 0.0
        # defaults of the folder; the print is used (the node's `appearance` parameter)
        assert stub.calls[0] == ((48, 64, 3), 64, True, None, None, True)
        # /tf: camera optical frame -> object_mustard_bottle, at the image stamp
        g.wait(lambda: len(tfs) >= s.frames_processed, 10, "the transforms")
        t = tfs[-1].transforms
        assert len(t) == 1 and t[0].header.frame_id == "cam_optical"
        assert t[0].child_frame_id == "object_mustard_bottle"
        assert stamp_to_ns(t[0].header.stamp) == stamps[-1]
        assert np.allclose(matrix_from_transform(t[0].transform), _T(), atol=1e-6)
    finally:
        g.close()


def test_object_frames_names_instances_and_filters_by_pose_score():
    from nol_ros.services.recognition import object_frames

    rs = [Recognition(1, "mug", 0.9, (0, 0, 1, 1), _T(), 0.9),
          Recognition(1, "mug", 0.8, (0, 0, 1, 1), _T(0.2), 0.7),
          Recognition(1, "mug", 0.7, (0, 0, 1, 1), _T(0.3), 0.1),
          Recognition(2, "can", 0.6, (0, 0, 1, 1), None, 0.0)]
    out = object_frames(rs, "object_", 0.5)
    assert [n for n, _ in out] == ["object_mug", "object_mug_2"]
    assert np.allclose(out[1][1], _T(0.2))
    assert [n for n, _ in object_frames(rs, "o/", 0.0)] == ["o/mug", "o/mug_2", "o/mug_3"]


def test_mailbox_keeps_the_freshest_item_and_counts_what_it_replaced():
    import threading

    from nol_ros.services.recognition import FrameMailbox

    m = FrameMailbox()
    m.put(1)
    m.put(2)          # replaces 1 before the worker took it
    assert m.dropped == 1 and m.get() == 2 and m.busy
    got = []
    t = threading.Thread(target=lambda: got.append(m.get()))
    t.start()
    time.sleep(0.05)
    m.put(3)
    t.join(60)
    assert got == [3] and m.dropped == 1
    m.close()
    assert m.get() is None


@pytest.mark.ros
def test_dynamic_parameters_take_effect_and_the_others_are_refused(tmp_path, rclpy_context):
    from rclpy.parameter import Parameter

    from nol_ros.nodes.recognizer_node import RecognizerNode

    node = RecognizerNode("recognizer", context=rclpy_context, parameter_overrides=params(
        models_dir=str(tmp_path / "missing"), models_poll_s=0.0))
    try:
        r = node.set_parameters([Parameter("score_thresh", value=0.3),
                                 Parameter("min_pose_score", value=0.5),
                                 Parameter("appearance", value=False)])
        assert all(x.successful for x in r) and node.service.cfg.score_thresh == 0.3
        assert node.service.cfg.min_pose_score == 0.5 and not node.service.cfg.appearance
        r = node.set_parameters([Parameter("min_pose_score", value=1.5)])[0]   # out of range
        assert not r.successful and node.service.cfg.min_pose_score == 0.5
        r = node.set_parameters([Parameter("use_depth", value=False)])[0]       # read-only
        assert not r.successful and "read-only" in r.reason and node.cfg.use_depth
        d = node.describe_parameters(["models_dir", "use_depth"])
        assert not d[0].read_only and d[1].read_only and d[0].description and d[1].description
    finally:
        node.destroy_node()
