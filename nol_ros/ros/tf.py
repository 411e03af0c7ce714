"""TF on a ROS graph with the same API whether or not tf2_ros is installed.

``TfClient(node)`` listens on /tf and /tf_static and answers ``lookup(target, source, stamp_ns)``
with a 4x4 ``T_target_source``. With a real ROS 2 install (tf2_ros importable) it delegates to
tf2_ros.Buffer/TransformListener; in the pip venv it uses :class:`TransformBuffer` fed by its own
subscriptions (tf2_msgs/TFMessage; /tf_static with transient-local durability like tf2_ros).
Errors are the buffer's :class:`TransformError` subclasses in both cases.
"""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time

from nol_ros.ros.conversions import ns_to_stamp, transform_from_matrix
from nol_ros.streaming.messages import matrix_from_transform, stamp_to_ns
from nol_ros.streaming.tf_buffer import (
    ExtrapolationError,
    FrameLookupError,
    TransformBuffer,
    TransformError,
)


def tf2_ros_available() -> bool:
    try:
        # lazy: optional, tf2_ros may be missing (tf2_ros_available() checked)
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def _qos_static():
    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL,
                      reliability=ReliabilityPolicy.RELIABLE)


def _qos_dynamic():
    return QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)


def transform_stamped(parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray):
    msg = TransformStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = parent
    msg.child_frame_id = child
    msg.transform = transform_from_matrix(T_parent_child)
    return msg


class TfClient:
    """Listen to TF and look transforms up as 4x4 matrices."""

    def __init__(self, node, cache_time_s: float = 30.0, prefer_tf2_ros: bool = True,
                 callback_group=None):
        """``callback_group``: for the /tf subscriptions (default: a reentrant group of their
        own, so TF keeps arriving while other callbacks of the node are busy)."""
        self.node = node
        self._tf2 = None
        if prefer_tf2_ros and tf2_ros_available():
            # lazy: optional, tf2_ros may be missing (tf2_ros_available() checked)
            import tf2_ros

            self._tf2 = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s))
            self._listener = tf2_ros.TransformListener(self._tf2, node)
            self.backend = "tf2_ros"
            return
        try:
            # lazy: optional, tf2_msgs may be missing (nodes then run without TF)
            from tf2_msgs.msg import TFMessage
        except ImportError as e:
            raise TransformError(
                "tf2_msgs is not importable, so TF cannot be received: run `make setup` (it "
                "builds tf2_msgs into the venv) or source a ROS 2 install") from e
        group = callback_group or ReentrantCallbackGroup()
        self.buffer = TransformBuffer(cache_time_s=cache_time_s)
        self._newest: dict[str, int] = {}  # newest stamp per child frame
        node.create_subscription(TFMessage, "/tf", lambda m: self._on(m, False), _qos_dynamic(),
                                 callback_group=group)
        node.create_subscription(TFMessage, "/tf_static", lambda m: self._on(m, True),
                                 _qos_static(), callback_group=group)
        self.backend = "nol_ros"

    def _on(self, msg, static: bool) -> None:
        if not static:
            # time jumped back on an edge (a bag loops or restarts): old samples would hide the
            # new ones, so forget the dynamic transforms, as tf2_ros does on a jump of /clock.
            # Per edge: publishers legitimately lag each other (the reconstruction node's
            # map -> odom is stamped with images it tracked seconds ago).
            for t in msg.transforms:
                child, st = t.child_frame_id.lstrip("/"), stamp_to_ns(t.header.stamp)
                newest = self._newest.get(child, 0)
                if newest and st < newest - 1_000_000_000:
                    self.buffer.clear_dynamic()
                    self._newest = {}
                    self.node.get_logger().info(
                        f"TF time jumped back ({child} at {st / 1e9:.3f} s after "
                        f"{newest / 1e9:.3f} s): cleared the TF buffer")
                self._newest[child] = max(self._newest.get(child, 0), st)
        for t in msg.transforms:
            try:
                self.buffer.set_transform(t.header.frame_id, t.child_frame_id,
                                          stamp_to_ns(t.header.stamp),
                                          matrix_from_transform(t.transform), static=static)
            except Exception as e:  # a bad transform must not kill the listener
                self.node.get_logger().warn(f"ignored bad TF {t.header.frame_id} -> "
                                            f"{t.child_frame_id}: {e}", throttle_duration_sec=5)

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """T_target_source at ``stamp_ns`` (0 = latest)."""
        if self._tf2 is None:
            return self.buffer.lookup(target, source, stamp_ns)
        # lazy: optional, tf2_ros may be missing (tf2_ros_available() checked)
        import tf2_ros

        try:
            t = self._tf2.lookup_transform(target, source, Time(nanoseconds=stamp_ns))
        except tf2_ros.ExtrapolationException as e:
            raise ExtrapolationError(str(e)) from e
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException) as e:
            raise FrameLookupError(str(e)) from e
        except tf2_ros.TransformException as e:
            raise TransformError(str(e)) from e
        return matrix_from_transform(t.transform)

    def lookup_wait(self, target: str, source: str, stamp_ns: int, timeout_s: float,
                    wait_for_unknown: bool = False) -> np.ndarray:
        """:meth:`lookup`, retried until ``timeout_s`` while the transform is not there yet (TF
        often comes after the image); an unknown frame (FrameLookupError) is waited for only
        with ``wait_for_unknown`` (e.g. /tf_static arriving after the first images)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.lookup(target, source, stamp_ns)
            except FrameLookupError:
                if not wait_for_unknown or time.monotonic() >= deadline:
                    raise
            except TransformError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformError:
            return False


class TfBroadcaster:
    """Publish dynamic (``/tf``) or static (``/tf_static``, latched) transforms."""

    def __init__(self, node, static: bool = False):
        # lazy: optional, tf2_msgs may be missing (nodes then run without TF)
        from tf2_msgs.msg import TFMessage

        self._msg_type = TFMessage
        self.static = static
        self._static_cache: dict[str, object] = {}
        self._pub = node.create_publisher(TFMessage, "/tf_static" if static else "/tf",
                                          _qos_static() if static else _qos_dynamic())

    def send(self, parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray) -> None:
        self.send_many([(parent, child, stamp_ns, T_parent_child)])

    def send_many(self, items) -> None:
        msgs = [transform_stamped(p, c, s, T) for p, c, s, T in items]
        if self.static:
            # a static publisher re-sends the whole set each time (as tf2_ros does)
            for m in msgs:
                self._static_cache[m.child_frame_id] = m
            msgs = list(self._static_cache.values())
        self._pub.publish(self._msg_type(transforms=msgs))
