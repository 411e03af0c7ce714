"""Play and record rosbag2 files (sqlite3 or mcap) on a live ROS graph, without rosbag2.

rosbag2_py and the ``ros2 bag`` CLI are not installable from PyPI; ``rosbags`` (pure Python)
reads and writes the files and rclpy publishes the stored CDR bytes as they are, so replay costs
no deserialisation. Player: original topics (or remapped), stamps and QoS (reliability,
transient-local durability for /tf_static), ``rate``, ``loop``, and ``/clock`` for nodes
running with ``use_sim_time``. Recorder: raw subscriptions -> MCAP.

Paced replay (``pace_topic`` + a ``pace`` function): instead of the bag's timing, each message
on ``pace_topic`` waits until ``pace(n)`` returns, n being the number of messages already sent
on that topic; ``pace`` blocks until the receiver has processed them (its status says so). At
the end, ``pace(n, final=True)`` waits until the receiver has processed all n, so what the caller
reads from the receiver right after the replay includes the last frame. The receiver then gets
every frame, in order, as fast as it can take them, on any machine and under any load -- what
tests and the demo need. Messages of the other topics keep their bag order.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer
from rosgraph_msgs.msg import Clock

from nol_ros.datasets.bag import nol_typestore, open_bag
from nol_ros.errors import InputError
from nol_ros.ros.conversions import ns_to_stamp


@dataclass(frozen=True)
class ReplayConfig:
    """How to play a bag."""

    bag: str = ""
    rate: float = 1.0                  # playback speed factor
    loop: bool = False
    clock: bool = False                # publish /clock (rosgraph_msgs/Clock) from bag time
    clock_hz: float = 100.0
    topics: tuple[str, ...] = ()       # empty = all topics
    skip_topics: tuple[str, ...] = ()  # never replayed (e.g. /tf for a receiver that ignores it)
    remap: tuple[tuple[str, str], ...] = ()  # (from, to) topic pairs
    start_delay_s: float = 0.0         # wait before the first message (lets subscribers connect)
    wait_for_subscribers_s: float = 0.0  # wait up to this long for a subscriber on every
    #                                      topic (latched ones: up to 2 s more)
    subscribers: tuple[tuple[str, int], ...] = ()  # (topic, n): wait for n subscribers there
    #                                      (several nodes on one camera), 1 elsewhere
    pace_topic: str = ""               # paced replay: the bag topic whose messages wait for
    #                                    the ``pace`` function (see the module doc)


@dataclass
class ReplayStats:
    messages: int = 0
    per_topic: dict = field(default_factory=dict)
    loops: int = 0
    wall_s: float = 0.0
    bag_s: float = 0.0
    max_lag_s: float = 0.0             # worst delay behind the schedule
    unsubscribed: tuple = ()           # topics nobody subscribed to within the wait


def msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # ROS 1 style pkg/Type
        parts = [parts[0], "msg", parts[1]]
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError, IndexError) as e:
        raise InputError(f"message type '{msgtype}' is not available in this environment; "
                         "install/build its interface package") from e


def _qos_for(conn):
    reliable, latched, depth = True, False, 10
    profiles = getattr(conn.ext, "offered_qos_profiles", None) or []
    for q in profiles:
        reliable = "BEST_EFFORT" not in str(q.reliability).upper()
        latched = "TRANSIENT_LOCAL" in str(q.durability).upper()
        depth = max(depth, int(getattr(q, "depth", 0) or 0))
    if conn.topic == "/tf_static":
        latched = True
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth if not latched else max(depth, 100),
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class BagPlayer:
    """Publish a bag's messages on ``node`` with the original timing (scaled by ``rate``), or
    paced by the receiver: ``pace(n)`` blocks before the message on ``config.pace_topic`` that
    follows n sent ones, and ``pace(n, final=True)`` after the last of them until the receiver
    is done with all n (raise to stop the replay)."""

    def __init__(self, node, config: ReplayConfig, pace: Callable[[int], None] | None = None):
        if config.rate <= 0:
            raise InputError(f"rate must be > 0, got {config.rate}")
        if bool(config.pace_topic) != (pace is not None):
            raise InputError("a paced replay needs both pace_topic and a pace function")
        self.node, self.cfg, self.pace = node, config, pace
        self.reader = open_bag(config.bag)
        remap = dict(config.remap)
        self.connections = [c for c in self.reader.connections
                            if (not config.topics or c.topic in config.topics)
                            and c.topic not in config.skip_topics]
        if not self.connections:
            raise InputError(f"none of the topics {list(config.topics)} (less "
                             f"{list(config.skip_topics)}) is in the bag; it has "
                             f"{sorted({c.topic for c in self.reader.connections})}")
        if config.pace_topic and config.pace_topic not in {c.topic for c in self.connections}:
            raise InputError(f"pace topic '{config.pace_topic}' is not among the replayed "
                             f"topics {sorted({c.topic for c in self.connections})}")
        self.publishers = {}
        for c in self.connections:
            topic = remap.get(c.topic, c.topic)
            key = (topic, c.msgtype)
            if key not in self.publishers:
                self.publishers[key] = node.create_publisher(msg_class(c.msgtype), topic,
                                                             _qos_for(c))
        self._pub_of = {c.id: self.publishers[(remap.get(c.topic, c.topic), c.msgtype)]
                        for c in self.connections}
        self._topic_of = {c.id: c.topic for c in self.connections}
        self.clock_pub = None
        self._last_clock_ns: int | None = None
        if config.clock:
            self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.stats = ReplayStats()

    def _publish_clock(self, t_ns: int) -> None:
        self.clock_pub.publish(Clock(clock=ns_to_stamp(t_ns)))
        self._last_clock_ns = t_ns

    def _hold_final_clock(self, hold_s: float = 0.25) -> None:
        """Repeat the bag's last time for a moment: rclpy's time source subscribes to /clock
        best-effort, so nothing is acknowledged and the final messages of a player that exits
        at once can be lost (CI saw a sim-time node stop at 0.7 s of a 1 s bag)."""
        if self.clock_pub is None or self._last_clock_ns is None:
            return
        period = 1.0 / max(self.cfg.clock_hz, 1e-3)
        t_end = time.monotonic() + hold_s
        while time.monotonic() < t_end:
            self._publish_clock(self._last_clock_ns)
            time.sleep(min(period, hold_s))

    def wait_for_subscribers(self, timeout_s: float, stop: threading.Event | None = None,
                             latched_grace_s: float = 2.0) -> bool:
        """Wait until every non-latched topic of the bag has a subscriber -- ``subscribers``
        names topics that need more, e.g. a camera two nodes listen to -- (or ``timeout_s``),
        then up to ``latched_grace_s`` more for the latched ones (/tf_static): those reach a
        subscriber only while this player is alive, and a short bag can end before a slow
        subscriber matched (seen in bring-up: the reconstruction node never got /tf_static and
        fell back to vision-only tracking). Not longer: a latched topic may have no subscriber
        at all."""
        want = dict(self.cfg.subscribers)

        def ready(latched: bool) -> bool:
            return all(p.get_subscription_count() >= want.get(topic, 1)
                       for (topic, _), p in self.publishers.items()
                       if (p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL)
                       == latched)

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if ready(False):
                t1 = time.monotonic()
                while not ready(True) and time.monotonic() - t1 < latched_grace_s:
                    if stop is not None and stop.is_set():
                        return False
                    time.sleep(0.05)
                return True
            if stop is not None and stop.is_set():
                return False
            time.sleep(0.05)
        return False

    def run(self, stop: threading.Event | None = None) -> ReplayStats:
        """Play (blocking) until the end (or forever with ``loop``) or until ``stop`` is set."""
        stop = stop or threading.Event()
        if self.cfg.wait_for_subscribers_s > 0 and not self.wait_for_subscribers(
                self.cfg.wait_for_subscribers_s, stop) and not stop.is_set():
            self.stats.unsubscribed = tuple(sorted(t for (t, _), p in self.publishers.items()
                                                   if p.get_subscription_count() == 0))
            alone = list(self.stats.unsubscribed) or "some topics (fewer than asked)"
            self.node.get_logger().warning(
                f"replaying {self.cfg.bag} after waiting {self.cfg.wait_for_subscribers_s:.0f} s "
                f"for subscribers; none on {alone}: replay only the topics the receivers read "
                "(ReplayConfig.topics)")
        if self.cfg.start_delay_s > 0:
            stop.wait(self.cfg.start_delay_s)
        t_start = time.monotonic()
        try:
            while not stop.is_set():
                self._play_once(stop)
                self.stats.loops += 1
                if not self.cfg.loop:
                    break
        finally:  # also when interrupted (Ctrl-C): the summary shows the time played
            self.stats.wall_s = time.monotonic() - t_start
        if not stop.is_set():
            self._hold_final_clock()
        # a finished replay waits until its subscribers have everything (returns at once when
        # they have; a loaded machine can take seconds); an interrupted one does not linger
        self.flush(30.0 if not stop.is_set() else 3.0)
        return self.stats

    def flush(self, timeout_s: float = 3.0) -> bool:
        """Wait until the subscribers acknowledged what was published (reliable topics): a
        player that exits right after its last message otherwise loses it (measured: the last
        5 /tf and image messages of the demo bag never reached the reconstruction node)."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for p in self.publishers.values():
            left = max(0.0, deadline - time.monotonic())
            try:
                ok = p.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and ok
            except Exception:  # context shut down (Ctrl-C)
                return False
        return ok

    def _play_once(self, stop: threading.Event) -> None:
        t0_bag = None
        t0_wall = time.monotonic()
        last_clock = -1.0
        clock_period = 1.0 / max(self.cfg.clock_hz, 1e-3)
        paced = 0
        for conn, t_ns, raw in self.reader.messages(connections=self.connections):
            if stop.is_set():
                return
            if t0_bag is None:
                t0_bag = t_ns
            if self.pace is not None:
                if conn.topic == self.cfg.pace_topic:
                    self.pace(paced)
                    paced += 1
                self._send(conn, t_ns, raw, t0_bag)
                continue
            due = t0_wall + (t_ns - t0_bag) / 1e9 / self.cfg.rate
            while True:
                now = time.monotonic()
                if self.clock_pub is not None and now - last_clock >= clock_period:
                    # bag time that corresponds to now (never ahead of the next message)
                    t_now = t0_bag + int(min(now - t0_wall, due - t0_wall) * self.cfg.rate * 1e9)
                    self._publish_clock(t_now)
                    last_clock = now
                if now >= due or stop.is_set():
                    break
                time.sleep(min(due - now, clock_period if self.clock_pub else due - now))
            self.stats.max_lag_s = max(self.stats.max_lag_s, time.monotonic() - due)
            self._send(conn, t_ns, raw, t0_bag)
        if self.pace is not None and paced and not stop.is_set():
            # without this, a receiver with frames in flight (lag 1) has not processed the last
            # one when the replay returns: a status read right after missed it under load
            self.pace(paced, final=True)

    def _send(self, conn, t_ns: int, raw, t0_bag: int) -> None:
        if self.clock_pub is not None:
            self._publish_clock(t_ns)
        self._pub_of[conn.id].publish(bytes(raw))
        self.stats.messages += 1
        topic = self._topic_of[conn.id]
        self.stats.per_topic[topic] = self.stats.per_topic.get(topic, 0) + 1
        self.stats.bag_s = (t_ns - t0_bag) / 1e9

    def close(self) -> None:
        self.reader.close()


def receiver_pace(processed: Callable[[], int],
                  wait: Callable[[Callable[[], bool], float, str], None], lag: int = 0,
                  timeout_s: float = 600.0) -> Callable[..., None]:
    """A ``pace`` function for :class:`BagPlayer`: before the frame that follows n sent ones,
    ``wait(predicate, timeout_s, what)`` until ``processed()`` (frames the receiver is done
    with, counted from the start of this replay) reaches n - ``lag``; after the last frame
    (``final=True``) until it reaches n. lag 0: one frame at a time (the recognizer node keeps
    only the newest waiting frame); lag 1: one more in flight (the reconstruction node queues a
    backlog), which also tolerates a bag whose depth image of a frame is stored after the next
    colour image."""

    def pace(n: int, final: bool = False) -> None:
        want = n if final else n - lag
        if want > 0:
            wait(lambda: processed() >= want, timeout_s,
                 f"the receiver to finish frame {want} of the replay")

    return pace


class BagRecorder:
    """Record topics (raw CDR, no deserialisation) into an MCAP rosbag2."""

    def __init__(self, node, out_path: str | Path, topics: dict[str, str], qos_depth: int = 50,
                 qos: dict | None = None):
        """``topics``: topic -> msgtype ('sensor_msgs/msg/Image'); ``qos``: topic -> QoSProfile
        for the subscription (default: reliable, keep last ``qos_depth``)."""
        out = Path(out_path)
        if out.exists():
            raise InputError(f"output bag '{out}' exists; choose a new path (nothing is "
                             "overwritten)")
        self.store = nol_typestore()
        self.writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._conns = {}
        for topic, msgtype in topics.items():
            self._conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
            node.create_subscription(msg_class(msgtype), topic,
                                     lambda raw, t=topic: self._on(t, raw),
                                     (qos or {}).get(topic, qos_depth), raw=True)
        self.node = node

    def _on(self, topic: str, raw: bytes) -> None:
        t = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self.writer is None:
                return
            self.writer.write(self._conns[topic], t, raw)
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        with self._lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
