"""``nol-ros replay`` and ``nol-ros record``: rosbag2 files on a live graph, without rosbag2.

replay: publishes a bag's messages (sqlite3 or mcap) with their original topics, stamps and QoS
(latched /tf_static), at ``--rate``, with ``--loop``, and ``--clock`` for nodes started with
``use_sim_time:=true``. record: raw subscriptions -> an MCAP rosbag2 folder.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from nol_ros.commands._common import (
    EXIT_OK,
    add_command,
    init_ros,
    non_negative_float,
    positive_float,
    remap_pair,
    topic_count,
)
from nol_ros.errors import InputError

ORDER = 20


def register(sub) -> None:
    p = add_command(
        sub, "replay", "play a rosbag2 (sqlite3/mcap) on the ROS graph",
        "Play a rosbag2 folder with the original topics, stamps and QoS (/tf_static latched). "
        "With --clock, /clock follows the bag time so nodes running with use_sim_time:=true "
        "see bag time. Ctrl-C stops (exit 0). Arguments after --ros-args go to ROS.",
        ["nol-ros replay data/demo/bags/train_000001 --clock",
         "nol-ros replay my_bag --rate 0.5 --loop --topics /camera/rgb/image_raw /tf",
         "nol-ros replay my_bag --remap /camera/rgb/image_raw:=/robot/camera/rgb/image_raw"],
        run_replay)
    p.add_argument("bag", help="rosbag2 folder (holds metadata.yaml), or its .mcap/.db3 file")
    p.add_argument("--rate", type=positive_float, default=1.0, help="speed factor (default 1)")
    p.add_argument("--loop", action="store_true", help="play again from the start at the end")
    p.add_argument("--clock", action="store_true", help="publish /clock from the bag time")
    p.add_argument("--clock-hz", type=positive_float, default=100.0,
                   help="/clock rate between messages (default 100)")
    p.add_argument("--topics", nargs="+", default=[], metavar="TOPIC",
                   help="play only these topics (default: all)")
    p.add_argument("--remap", nargs="+", type=remap_pair, default=[], metavar="FROM:=TO",
                   help="publish topic FROM as TO")
    p.add_argument("--start-delay", type=non_negative_float, default=0.0, metavar="S",
                   help="wait S seconds before the first message")
    p.add_argument("--wait-for-subscribers", type=non_negative_float, default=0.0, metavar="S",
                   help="wait up to S seconds until every topic has a subscriber "
                   "(latched topics such as /tf_static: at most 2 s more)")
    p.add_argument("--subscribers", nargs="+", type=topic_count, default=[],
                   metavar="TOPIC=N", help="with --wait-for-subscribers: wait for N "
                   "subscribers on TOPIC (e.g. a camera two nodes listen to; default 1)")
    p.add_argument("--quiet", action="store_true", help="no summary")

    r = add_command(
        sub, "record", "record topics into an MCAP rosbag2 folder",
        "Record topics as raw CDR (no deserialisation) into a new MCAP rosbag2 folder. A topic "
        "is TOPIC (its type is discovered on the graph, waiting up to --wait s) or TOPIC:TYPE. "
        "The subscription QoS follows the publishers' (best effort, transient local for "
        "latched topics). Stops after --duration / --max-messages or on Ctrl-C (exit 0).",
        ["nol-ros record /tmp/my_bag --topics /camera/rgb/image_raw "
         "/camera/depth_registered/image_raw /camera/rgb/camera_info /tf /tf_static",
         "nol-ros record out --topics /chatter:std_msgs/msg/String --duration 10"],
        run_record)
    r.add_argument("out", help="output rosbag2 folder (must not exist)")
    r.add_argument("--topics", nargs="+", required=True, metavar="TOPIC[:TYPE]",
                   help="topics to record")
    r.add_argument("--duration", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds")
    r.add_argument("--max-messages", type=int, default=0, metavar="N",
                   help="stop after N messages in total (0 = no limit)")
    r.add_argument("--wait", type=non_negative_float, default=10.0, metavar="S",
                   help="wait up to S seconds for topics to appear (default 10)")
    r.add_argument("--quiet", action="store_true", help="no summary")


# -- replay ---------------------------------------------------------------------------------------
def run_replay(args) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.datasets.bag import open_bag
    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig

    if not Path(args.bag).exists():
        raise InputError(f"bag '{args.bag}' does not exist; give a rosbag2 folder")
    open_bag(args.bag).close()  # a bad bag is a usage error (2) before ROS starts
    cfg = ReplayConfig(bag=args.bag, rate=args.rate, loop=args.loop, clock=args.clock,
                       clock_hz=args.clock_hz, topics=tuple(args.topics),
                       remap=tuple(args.remap), start_delay_s=args.start_delay,
                       wait_for_subscribers_s=args.wait_for_subscribers,
                       subscribers=tuple(args.subscribers))
    # lazy: CLI start-up (nol-ros --help imports every command module)
    import rclpy

    node = init_ros(args.ros_args, "bag_replay")
    stop = threading.Event()
    player = None
    try:
        player = BagPlayer(node, cfg)
        if not args.quiet:
            topics = sorted({c.topic for c in player.connections})
            print(f"[replay] {args.bag}: {len(topics)} topics at rate {args.rate}"
                  f"{', loop' if args.loop else ''}{', /clock' if args.clock else ''}",
                  flush=True)
        try:
            stats = player.run(stop)
        except KeyboardInterrupt:
            stop.set()
            stats = player.stats
        if not args.quiet:
            per = ", ".join(f"{t} {n}" for t, n in sorted(stats.per_topic.items()))
            print(f"[replay] {stats.messages} messages in {stats.wall_s:.2f} s (bag "
                  f"{stats.bag_s:.2f} s, {stats.loops} loop(s), max lag {stats.max_lag_s:.3f} s)"
                  f": {per}", flush=True)
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return EXIT_OK


def replay_main(argv: list[str] | None = None) -> int:
    """The ``bag_replay`` executable (for launch files): ``nol-ros replay`` with these args."""
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.cli import main

    return main(["replay", *(sys.argv[1:] if argv is None else argv)])


# -- record ---------------------------------------------------------------------------------------
def _parse_topics(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in specs:
        topic, _, typ = s.partition(":")
        if not topic.startswith("/"):
            raise InputError(f"topic '{topic}' must be absolute (start with '/')")
        if typ and typ.count("/") not in (1, 2):
            raise InputError(f"type '{typ}' of {topic} must look like pkg/msg/Type")
        out[topic] = typ
    return out


def qos_like_publishers(node, topic: str, depth: int = 50):
    """A subscription QoS that matches the current publishers of ``topic``: best effort if any
    publisher is best effort, transient local (latched) if all publishers are."""
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    infos = node.get_publishers_info_by_topic(topic)
    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    latched = bool(infos) and all(
        i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    if topic == "/tf_static":
        latched = True
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=(ReliabilityPolicy.BEST_EFFORT if best_effort
                                   else ReliabilityPolicy.RELIABLE),
                      durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                  else DurabilityPolicy.VOLATILE))


def run_record(args) -> int:
    if Path(args.out).exists():
        raise InputError(f"output bag '{args.out}' exists; choose a new path (nothing is "
                         "overwritten)")
    if args.max_messages < 0:
        raise InputError(f"--max-messages must be >= 0, got {args.max_messages}")
    wanted = _parse_topics(args.topics)
    # lazy: CLI start-up (nol-ros --help imports every command module)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.ros.bag_replay import BagRecorder, msg_class

    node = init_ros(args.ros_args, "bag_record")
    rec = None
    try:
        t0 = time.monotonic()
        types = dict(wanted)
        while any(not t for t in types.values()):
            known = dict(node.get_topic_names_and_types())
            for topic in types:
                if not types[topic] and known.get(topic):
                    types[topic] = known[topic][0]
            if time.monotonic() - t0 > args.wait:
                missing = [t for t, v in types.items() if not v]
                raise InputError(f"topics {missing} did not appear within {args.wait:.0f} s; "
                                 f"seen: {sorted(known)}. Start the publishers first, raise "
                                 "--wait, or give the type as TOPIC:pkg/msg/Type")
            time.sleep(0.1)
        for typ in types.values():
            msg_class(typ)  # unknown type -> InputError (2)
        qos = {t: qos_like_publishers(node, t) for t in types}
        rec = BagRecorder(node, args.out, types, qos=qos)
        if not args.quiet:
            print(f"[record] {args.out}: {', '.join(f'{t} ({v})' for t, v in types.items())}",
                  flush=True)
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        t_start = time.monotonic()
        try:
            while rclpy.ok():
                ex.spin_once(timeout_sec=0.05)
                if args.duration is not None and time.monotonic() - t_start >= args.duration:
                    break
                if args.max_messages and sum(rec.counts.values()) >= args.max_messages:
                    break
        except KeyboardInterrupt:
            pass
        ex.remove_node(node)
    finally:
        if rec is not None:
            rec.close()
            if not args.quiet:
                per = ", ".join(f"{t} {n}" for t, n in sorted(rec.counts.items())) or "nothing"
                print(f"[record] wrote {sum(rec.counts.values())} messages: {per}", flush=True)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return EXIT_OK
