"""OwnExecutorSubscriptions (nol_ros.ros.runtime): subscriptions of a node on their own
single-threaded executor and thread. Real rclpy nodes over localhost DDS."""

import time

import pytest

pytestmark = pytest.mark.ros


def _wait(cond, timeout_s=10.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            return False
        time.sleep(0.02)
    return True


def test_remapped_topics_a_failing_callback_and_shutdown(rclpy_context):
    """The topic name is resolved by the owning node (its remapping applies), a callback that
    raises does not stop the thread (the next message is still delivered), the helper node has
    a name of its own, and shutdown is idempotent and removes the helper from the graph."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String

    from nol_ros.ros.runtime import OwnExecutorSubscriptions

    owner = Node("owner", namespace="/t", context=rclpy_context,
                 cli_args=["--ros-args", "-r", "in:=/t/remapped"])
    pub_node = Node("pub", context=rclpy_context)
    seen = []

    def cb(m):
        seen.append(m.data)
        if m.data == "boom":
            raise RuntimeError("a bad message")

    subs = OwnExecutorSubscriptions(owner)
    try:
        sub = subs.subscribe(String, "in", cb, 10)
        assert sub.topic_name == "/t/remapped"
        assert subs.node.get_fully_qualified_name() == "/t/_owner_subs"
        subs.start()
        pub = pub_node.create_publisher(String, "/t/remapped", 10)
        assert _wait(lambda: pub.get_subscription_count() > 0)
        pub.publish(String(data="boom"))
        assert _wait(lambda: "boom" in seen)
        pub.publish(String(data="after"))
        assert _wait(lambda: "after" in seen), seen
        subs.shutdown()
        subs.shutdown()
        probe = SingleThreadedExecutor(context=rclpy_context)
        probe.add_node(pub_node)
        assert _wait(lambda: (probe.spin_once(timeout_sec=0.05),
                              pub.get_subscription_count() == 0)[1])
        assert "_owner_subs" not in pub_node.get_node_names()
    finally:
        subs.shutdown()
        owner.destroy_node()
        pub_node.destroy_node()
