"""TransformBuffer: chains, inverse paths, interpolation, static frames, errors."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nol_ros.streaming.tf_buffer import (
    ExtrapolationError,
    FrameLookupError,
    TransformBuffer,
)

S = 1_000_000_000


def T(rotvec=(0, 0, 0), t=(0, 0, 0)):
    M = np.eye(4)
    M[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    M[:3, 3] = t
    return M


def test_chain_and_inverse_path():
    b = TransformBuffer()
    T_map_odom = T((0, 0, 0.3), (1, 2, 0))
    T_odom_base = T((0, 0, -0.1), (0.5, 0, 0))
    T_base_cam = T((-np.pi / 2, 0, -np.pi / 2), (0.1, 0, 1.0))
    b.set_transform("map", "odom", 5 * S, T_map_odom)
    b.set_transform("odom", "base_link", 5 * S, T_odom_base)
    b.set_transform("base_link", "camera", 0, T_base_cam, static=True)
    np.testing.assert_allclose(b.lookup("map", "camera", 5 * S),
                               T_map_odom @ T_odom_base @ T_base_cam, atol=1e-12)
    np.testing.assert_allclose(b.lookup("camera", "map", 5 * S),
                               np.linalg.inv(T_map_odom @ T_odom_base @ T_base_cam), atol=1e-12)
    # sibling frames: common ancestor is odom
    b.set_transform("odom", "marker", 5 * S, T(t=(3, 0, 0)))
    np.testing.assert_allclose(b.lookup("base_link", "marker", 5 * S),
                               np.linalg.inv(T_odom_base) @ T(t=(3, 0, 0)), atol=1e-12)


def test_interpolation_between_samples():
    b = TransformBuffer()
    b.set_transform("odom", "base", 0 * S, T((0, 0, 0.0), (0, 0, 0)))
    b.set_transform("odom", "base", 2 * S, T((0, 0, 0.4), (2, 0, 0)))
    M = b.lookup("odom", "base", 1 * S)
    np.testing.assert_allclose(M[:3, 3], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(Rotation.from_matrix(M[:3, :3]).as_rotvec(), [0, 0, 0.2],
                               atol=1e-12)
    # time 0 = latest
    np.testing.assert_allclose(b.lookup("odom", "base", 0)[:3, 3], [2, 0, 0])


def test_errors_name_the_problem():
    b = TransformBuffer()
    b.set_transform("odom", "base", 1 * S, np.eye(4))
    b.set_transform("odom", "base", 2 * S, np.eye(4))
    with pytest.raises(FrameLookupError, match="'camera' does not exist"):
        b.lookup("odom", "camera", 1 * S)
    b.set_transform("world", "table", 0, np.eye(4), static=True)
    with pytest.raises(FrameLookupError, match="not connected"):
        b.lookup("odom", "table", 1 * S)
    with pytest.raises(ExtrapolationError, match="extrapolate"):
        b.lookup("odom", "base", 3 * S)
    with pytest.raises(ExtrapolationError):
        b.lookup("base", "odom", S // 2)


def test_cache_window_drops_old_samples():
    b = TransformBuffer(cache_time_s=1.0)
    for i in range(30):
        b.set_transform("odom", "base", i * S // 10, T(t=(i, 0, 0)))
    with pytest.raises(ExtrapolationError):
        b.lookup("odom", "base", 1 * S)
    np.testing.assert_allclose(b.lookup("odom", "base", 2 * S)[:3, 3], [20, 0, 0])


def test_tf_client_clears_on_a_time_jump_of_an_edge_not_on_a_lagging_publisher(rclpy_context):
    """A bag that loops makes odom -> base_link jump back: the dynamic transforms are dropped.
    The reconstruction node's map -> odom lags the odometry by seconds (stamped with the images
    it tracked): that is no jump and must keep the odometry (it once cleared it)."""
    import rclpy
    from tf2_msgs.msg import TFMessage

    from nol_ros.ros.tf import TfClient, transform_stamped

    node = rclpy.create_node("tf_jump", context=rclpy_context)
    try:
        tf = TfClient(node, prefer_tf2_ros=False)

        def send(parent, child, t_s, static=False):
            tf._on(TFMessage(transforms=[transform_stamped(parent, child, int(t_s * S),
                                                           T(t=(t_s, 0, 0)))]), static)

        send("base_link", "camera", 0, static=True)
        for t_s in (10, 11, 12):
            send("odom", "base_link", t_s)
        send("map", "odom", 5)                     # lagging publisher: no jump
        np.testing.assert_allclose(tf.lookup("odom", "camera", 11 * S)[:3, 3], [11, 0, 0])
        send("odom", "base_link", 1)               # the bag looped
        with pytest.raises(ExtrapolationError):
            tf.lookup("odom", "camera", 11 * S)
        np.testing.assert_allclose(tf.lookup("odom", "camera", 1 * S)[:3, 3], [1, 0, 0])
        assert tf.buffer.lookup("base_link", "camera")[0, 0] == 1.0  # static kept
    finally:
        node.destroy_node()
