"""Every generated nol_ros message/service/action type imports and round-trips through rclpy
serialisation (proves the CMake build and the shared nol_ros Python package work)."""

import inspect

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

import nol_ros.action
import nol_ros.msg
import nol_ros.srv


def _types():
    out = []
    for mod in (nol_ros.msg, nol_ros.srv, nol_ros.action):
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and not name.startswith("_"):
                if hasattr(obj, "Request"):
                    out += [obj.Request, obj.Response]
                elif hasattr(obj, "Goal"):
                    out += [obj.Goal, obj.Result, obj.Feedback]
                else:
                    out.append(obj)
    uniq = {t.__module__ + t.__name__: t for t in out}
    return sorted(uniq.values(), key=lambda t: t.__name__)


TYPES = _types()


def test_expected_interfaces_exist():
    names = {t.__name__ for t in TYPES}
    for expected in ["Keyframe", "ObjectPoseAnnotation", "JobProgress", "Detection",
                     "DetectionArray", "LearnObject_Request", "GetJobStatus_Response",
                     "RenderViews_Request", "TrainDetector_Request", "TrainPoseEstimator_Response",
                     "CancelJob_Request", "GetBufferStatus_Response", "Learn_Goal",
                     "Learn_Feedback", "Learn_Result"]:
        assert expected in names, f"{expected} missing from generated interfaces"


def _fill(msg, depth=0, count=None):
    """Set every string/number field to a distinctive value (recursively); count the fields set."""
    count = count if count is not None else [0]
    for field, typ in msg.get_fields_and_field_types().items():
        v = getattr(msg, field)
        if typ == "string":
            setattr(msg, field, f"{field}-x")
            count[0] += 1
        elif typ in ("float", "double"):
            setattr(msg, field, 0.25)
            count[0] += 1
        elif typ in ("int32", "uint32", "uint8", "int64", "uint16"):
            setattr(msg, field, 3)
            count[0] += 1
        elif typ == "boolean":
            setattr(msg, field, True)
            count[0] += 1
        elif hasattr(v, "get_fields_and_field_types") and depth < 4:
            _fill(v, depth + 1, count)
    return msg, count[0]


@pytest.mark.parametrize("typ", TYPES, ids=lambda t: t.__name__)
def test_round_trip(typ):
    msg, n_set = _fill(typ())
    back = deserialize_message(serialize_message(msg), typ)
    assert back == msg
    if n_set:
        assert back != typ()  # the filled values survived the trip


def test_keyframe_carries_images():
    from nol_ros.ros.conversions import depth_to_image, numpy_to_image
    from nol_ros.streaming.messages import depth_from_image

    kf = nol_ros.msg.Keyframe()
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    kf.rgb = numpy_to_image(rgb, "rgb8")
    kf.depth = depth_to_image(np.full((48, 64), 1.5, np.float32))
    kf.t_world_camera.translation.z = 1.25
    back = deserialize_message(serialize_message(kf), nol_ros.msg.Keyframe)
    assert bytes(back.rgb.data) == rgb.tobytes()
    assert np.allclose(depth_from_image(back.depth), 1.5)
    assert back.t_world_camera.translation.z == 1.25
