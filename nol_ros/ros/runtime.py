"""Starting and stopping nodes the same way everywhere (console scripts, bring-up, tests)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node

from nol_ros.device import resolve_device
from nol_ros.errors import NolError
from nol_ros.ros.environment import default_ros_env
from nol_ros.ros.qos import service_qos
from nol_ros.streaming.live import TF_MAP_CAMERA, TF_MAP_ODOM
from nol_ros.streaming.tf_buffer import FrameLookupError, TransformError


def run_nodes(factories: Sequence[Callable[[], object]], argv: Sequence[str] | None = None,
              threads: int = 4) -> int:
    """Init rclpy with ``argv`` (ROS args honoured), create the nodes, spin a multi-threaded
    executor until Ctrl-C, shut down cleanly. Returns a process exit code (0; 2 when a node
    cannot start because of its configuration, with the reason logged).

    SIGTERM (systemd, docker stop, launch's escalation) stops the nodes as Ctrl-C does: rclpy's
    own SIGTERM handler shuts the context down, but after a service reply timed out the spinning
    executor was not woken 3 times in 10 and the process never exited
    (test_dds_profile.py); the KeyboardInterrupt of Ctrl-C always stops it."""
    default_ros_env()
    old_term = None
    if threading.current_thread() is threading.main_thread():   # rclpy chains to it
        old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    rclpy.init(args=list(argv) if argv is not None else None)
    nodes = []
    executor = MultiThreadedExecutor(num_threads=threads)
    code = 0
    try:
        for make in factories:
            node = make()
            nodes.append(node)
            executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except NolError as e:
        rclpy.logging.get_logger("nol_ros").error(f"cannot start [{e.code}]: {e}")
        code = 2
    except (ParameterException, NameValidationException) as e:  # e.g. a string given as bool
        rclpy.logging.get_logger("nol_ros").error(
            f"cannot start [BAD_CONFIG]: {type(e).__name__}: {e} (check the parameter file / "
            "-p values; quote strings YAML reads as other types, e.g. 'off', 'yes', '1')")
        code = 2
    finally:
        for n in nodes:  # stop worker threads first: nothing publishes into a dead context
            stop = getattr(n, "prepare_shutdown", None)
            if stop is not None:
                stop()
        executor.shutdown()
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return code


class ErrorReporter:
    """Log an error the first time its code appears (the full message), then at most every
    ``every_s`` seconds per code with the count since, so a stream of bad frames gives one
    clear error instead of a flood. ``report`` is thread-safe."""

    def __init__(self, logger, every_s: float = 10.0):
        self.logger, self.every_s = logger, every_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def report(self, code: str, message: str, what: str = "error") -> None:
        now = time.monotonic()
        with self._lock:
            first = code not in self._last
            self._count[code] = self._count.get(code, 0) + 1
            if not first and now - self._last[code] < self.every_s:
                return
            n = self._count[code]
            self._count[code] = 0
            self._last[code] = now
        if first:
            self.logger.error(f"{what} [{code}]: {message}")
        else:
            self.logger.warning(f"{what} [{code}] x{n} in the last {self.every_s:.0f} s, "
                                f"latest: {message}")

    def clear(self) -> None:
        with self._lock:
            self._last.clear()
            self._count.clear()


def log_to(logger):
    """``log(level, text)`` for a service, onto a node's logger. rclpy refuses one call site
    logging at several severities ("Logger severity cannot be changed between calls"), so each
    level has its own call here."""

    def log(level: str, text: str) -> None:
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    return log


def offer_service(node, srv_type, name: str, callback, group=None):
    """``node.create_service`` with the QoS every service of the nodes uses (``service_qos``:
    a request queue that survives bursts of clients)."""
    return node.create_service(srv_type, name, callback, callback_group=group,
                               qos_profile=service_qos())


def wall_timer(node, period_s: float, callback, group=None):
    """A timer on the steady wall clock, not the ROS clock: with use_sim_time a bag that has
    ended stops /clock, and status, polls and idle releases must go on."""
    return node.create_timer(period_s, callback, callback_group=group,
                             clock=Clock(clock_type=ClockType.STEADY_TIME))


def publish_quietly(publisher, make_msg) -> None:
    """Publish ``make_msg()``; during shutdown the publisher may be gone: nothing to do."""
    try:
        publisher.publish(make_msg())
    except Exception:  # shutting down
        pass


def device_for(node, requested: str) -> str:
    """The torch device to run on: ``requested`` when it is available, else the CPU, with a
    warning on the node's log."""
    device = resolve_device(requested)
    if device != requested:
        node.get_logger().warning(f"device '{requested}' is not available: running on {device}")
    return device


def tf_endpoints(node, listen: bool, broadcast: bool):
    """(TfClient or None, TfBroadcaster or None, problem) for ``node``: the TF listener and
    broadcaster asked for, or, when tf2_msgs is missing, neither and a message that says what
    to do (the node then runs without TF and reports it)."""
    try:
        from nol_ros.ros.tf import TfBroadcaster, TfClient  # lazy: needs tf2_msgs (make setup)

        return (TfClient(node) if listen else None,
                TfBroadcaster(node) if broadcast else None, "")
    except Exception as e:
        return None, None, (f"TF unavailable ({type(e).__name__}: {e}); run `make setup` (it "
                            "builds tf2_msgs) or install tf2_ros/tf2_msgs")


def tf_prior(tf, problem: str, odom_frame: str, camera_frame: str,
             first: Callable[[], bool]) -> Callable:
    """``lookup_prior(frame, timeout_s) -> T_odom_camera`` for the live tracker, from the TF
    client ``tf`` (None: TransformError with ``problem``). The camera frame is ``camera_frame``,
    else the image's; an unknown frame is waited for only while ``first()`` (at the start,
    /tf_static may come after the images)."""
    def lookup(frame, timeout_s: float):
        if tf is None:
            raise TransformError(problem or "no TF listener")
        cam = camera_frame or frame.frame_id
        if not cam:
            raise FrameLookupError("the images have an empty header.frame_id; set the "
                                   "camera_frame parameter")
        return tf.lookup_wait(odom_frame, cam, frame.stamp_ns, timeout_s,
                              wait_for_unknown=first())
    return lookup


def send_tracking_tf(tf_pub, res, map_frame: str, odom_frame: str, camera_frame: str) -> None:
    """The tracker's pose on /tf, ONLY when the tracker trusts it: map -> odom when the camera's
    odometry comes from TF (REP 105), else map -> camera. A robot must never act on a guess."""
    if not res.track.ok:
        return
    if res.tf_mode == TF_MAP_ODOM and res.T_map_odom is not None:
        tf_pub.send(map_frame, odom_frame, res.stamp_ns, res.T_map_odom)
    elif res.tf_mode == TF_MAP_CAMERA:
        tf_pub.send(map_frame, camera_frame, res.stamp_ns, res.track.T_world_camera)


def spin_until_stopped(executor, stop: threading.Event, context,
                       log_error: Callable[[str], None], timeout_s: float = 0.05) -> None:
    """Spin ``executor`` (in the calling thread) until ``stop`` is set or ``context`` shuts
    down. A callback that raises is reported to ``log_error`` ("Type: message") and spinning
    goes on: one failing callback must not stop the others; an error while shutting down ends
    the loop."""
    while not stop.is_set() and context.ok():
        try:
            executor.spin_once(timeout_sec=timeout_s)
        except ExternalShutdownException:
            return
        except Exception as e:
            if stop.is_set() or not context.ok():
                return
            log_error(f"{type(e).__name__}: {e}")


class OwnExecutorSubscriptions:
    """Subscriptions of ``node`` that run on their own single-threaded executor in a thread of
    their own (on a hidden helper node, ``_<name>_subs``), not on the process's
    MultiThreadedExecutor. Measured (bench/bench_ros_throughput.py, 30 Hz RGB-D replay,
    2 cores): on the shared executor the reconstruction node lost 4-17 of 120 pairs at ingest
    and its tracker ran at 2-7 fps, because rclpy's Python wait loop held the GIL against the
    tracker thread; with the images here every pair arrived (5 of 5 runs) and the tracker ran
    at 8-18 fps. Topic names are resolved (remapped) by ``node``; the helper takes no command
    line arguments, so a node rename (``-r __node:=...``) does not rename it too."""

    def __init__(self, node: Node):
        self.node = Node(f"_{node.get_name()}_subs", namespace=node.get_namespace(),
                         context=node.context, use_global_arguments=False,
                         start_parameter_services=False)
        self._owner = node
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(self.node)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def subscribe(self, msg_type, topic: str, callback, qos):
        return self.node.create_subscription(
            msg_type, self._owner.resolve_topic_name(topic), callback, qos)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._spin, name="own-executor", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        spin_until_stopped(self._executor, self._stop, self.node.context,
                           lambda m: self.node.get_logger().error(f"callback failed: {m}"), 0.2)

    def shutdown(self) -> None:
        """Stop the thread and destroy the helper node (idempotent)."""
        if self._executor is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._executor = None


class ShutsDown:
    """Mixin (before rclpy's Node in the bases) for a node whose work runs in a core object
    with threads: the runtime's prepare_shutdown and destroy_node call ``shutdown()`` on the
    attribute named ``shutdown_attr`` (or on each of a tuple of names, in order; also when
    __init__ failed before it existed)."""

    shutdown_attr: str | tuple[str, ...] = "service"

    def prepare_shutdown(self):
        names = self.shutdown_attr
        for name in (names,) if isinstance(names, str) else names:
            target = getattr(self, name, None)
            if target is not None:
                target.shutdown()

    def destroy_node(self):
        self.prepare_shutdown()
        return super().destroy_node()
