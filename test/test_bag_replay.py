"""Bag replay and recording with real rclpy nodes over localhost DDS: a bag written with
rosbags is played (rate, remap, /clock, latched /tf_static) and recorded back to MCAP; the
player waits for a subscriber on every topic up to wait_for_subscribers_s (latched ones: at most
2 s more)."""

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

S = 1_000_000_000


def _write_bag(path, n=10, period_ns=S // 10):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    TFMessage = ts.types["tf2_msgs/msg/TFMessage"]
    TS = ts.types["geometry_msgs/msg/TransformStamped"]
    Tr = ts.types["geometry_msgs/msg/Transform"]
    V = ts.types["geometry_msgs/msg/Vector3"]
    Q = ts.types["geometry_msgs/msg/Quaternion"]
    t0 = 1_700_000_000 * S
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c_img = w.add_connection("/camera/rgb/image_raw", Image.__msgtype__, typestore=ts)
        c_st = w.add_connection("/tf_static", TFMessage.__msgtype__, typestore=ts)
        st = TFMessage(transforms=[TS(header=Header(stamp=Time(sec=t0 // S, nanosec=0),
                                                    frame_id="base_link"),
                                      child_frame_id="camera",
                                      transform=Tr(translation=V(x=0.1, y=0.0, z=1.0),
                                                   rotation=Q(x=0.0, y=0.0, z=0.0, w=1.0)))])
        w.write(c_st, t0, bytes(ts.serialize_cdr(st, TFMessage.__msgtype__)))
        for i in range(n):
            t = t0 + i * period_ns
            data = np.full((4, 6, 3), i, np.uint8).ravel()
            img = Image(header=Header(stamp=Time(sec=t // S, nanosec=t % S), frame_id="cam"),
                        height=4, width=6, encoding="rgb8", is_bigendian=0, step=18, data=data)
            w.write(c_img, t, bytes(ts.serialize_cdr(img, Image.__msgtype__)))
    return t0


def test_play_with_remap_clock_and_latched_static(tmp_path, rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    from nol_ros.ros.bag_replay import BagPlayer, BagRecorder, ReplayConfig

    bag = tmp_path / "in_bag"
    t0 = _write_bag(bag, n=10)
    player_node = rclpy.create_node("player", context=rclpy_context)
    sub_node = rclpy.create_node("listener", context=rclpy_context)
    got, clocks, statics = [], [], []
    sub_node.create_subscription(Image, "/remapped/rgb", got.append, 20)
    sub_node.create_subscription(Clock, "/clock", lambda m: clocks.append(m), 100)
    rec = BagRecorder(sub_node, tmp_path / "out_bag", {"/remapped/rgb": "sensor_msgs/msg/Image"})
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(player_node)
    ex.add_node(sub_node)
    spin_stop = threading.Event()
    th = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.02)
                                          for _ in iter(spin_stop.is_set, True)], daemon=True)
    th.start()
    try:
        cfg = ReplayConfig(bag=str(bag), rate=2.0, clock=True,
                           remap=(("/camera/rgb/image_raw", "/remapped/rgb"),),
                           wait_for_subscribers_s=60.0)  # /tf_static has no subscriber
        #                                                   yet: 2 s of grace, then it plays
        player = BagPlayer(player_node, cfg)
        t_start = time.monotonic()
        stats = player.run()
        wall = time.monotonic() - t_start
        # 10 images 0.1 s apart at rate 2 -> at least 0.45 s of schedule, after the 2 s of grace
        # for the latched topic (lower bounds only: a loaded machine takes longer)
        assert 0.40 <= stats.wall_s and 2.0 <= wall
        assert stats.messages == 11 and stats.per_topic["/camera/rgb/image_raw"] == 10
        # a late subscriber still gets the latched static transform
        late = rclpy.create_node("late", context=rclpy_context)
        ex.add_node(late)
        late.create_subscription(TFMessage, "/tf_static", statics.append,
                                 QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        deadline = time.monotonic() + 60
        while (len(got) < 10 or not statics) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        spin_stop.set()
        th.join()
        rec.close()
    assert [int(np.frombuffer(bytes(m.data), np.uint8)[0]) for m in got] == list(range(10))
    assert got[3].header.stamp.sec * S + got[3].header.stamp.nanosec == t0 + 3 * S // 10
    assert statics and statics[0].transforms[0].child_frame_id == "camera"
    # /clock follows bag time and never goes backwards
    cs = [c.clock.sec * S + c.clock.nanosec for c in clocks]
    assert cs and cs[0] >= t0 and cs[-1] == t0 + 9 * S // 10 and np.all(np.diff(cs) >= 0)
    # the recording holds what was received
    from nol_ros.datasets.bag import open_bag

    r = open_bag(tmp_path / "out_bag")
    assert sum(1 for _ in r.messages()) == rec.counts["/remapped/rgb"] == 10
    r.close()


def test_bad_bag_paths_raise_clear_errors(tmp_path, rclpy_context):
    import rclpy

    from nol_ros.errors import FileFormatError, InputError
    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig

    node = rclpy.create_node("p2", context=rclpy_context)
    with pytest.raises(FileFormatError, match="metadata.yaml"):
        BagPlayer(node, ReplayConfig(bag=str(tmp_path)))
    _write_bag(tmp_path / "b", n=2)
    with pytest.raises(InputError, match="none of the topics"):
        BagPlayer(node, ReplayConfig(bag=str(tmp_path / "b"), topics=("/nope",)))


def test_paced_replay_waits_for_the_receiver_before_each_frame(tmp_path, rclpy_context):
    """pace(n) is called before the paced topic's message that follows n sent ones, with
    exactly n of them published; the other topics keep their bag order and the bag's timing
    is not waited for (frames 1000 s apart: a player that waited would run into the test
    timeout)."""
    import rclpy

    from nol_ros.errors import InputError
    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig, receiver_pace

    bag = tmp_path / "in_bag"
    _write_bag(bag, n=10, period_ns=1000 * S)
    node = rclpy.create_node("paced_player", context=rclpy_context)
    calls = []
    topic = "/camera/rgb/image_raw"

    def pace(n, final=False):
        calls.append((n, final, player.stats.per_topic.get(topic, 0),
                      player.stats.per_topic.get("/tf_static", 0)))

    player = BagPlayer(node, ReplayConfig(bag=str(bag), pace_topic=topic), pace)
    stats = player.run()
    # before each frame, then once after the last: the replay returns when all 10 are done
    assert calls == [(n, False, n, 1) for n in range(10)] + [(10, True, 10, 1)]
    assert stats.messages == 11
    # receiver_pace: waits until the receiver has done n - lag frames (none for the first)
    done, waits = [0], []

    def wait(pred, timeout, what):
        waits.append(what)
        done[0] += 1
        assert pred()

    p = receiver_pace(lambda: done[0], wait, lag=1)
    p(0)
    p(1)
    assert waits == []          # lag 1: frame 0 and 1 go without waiting
    p(2)
    assert waits == ["the receiver to finish frame 1 of the replay"]
    p(2, final=True)            # after the last frame: all of them, lag or not
    assert waits[-1] == "the receiver to finish frame 2 of the replay"
    # both or neither of pace_topic and pace
    with pytest.raises(InputError, match="pace"):
        BagPlayer(node, ReplayConfig(bag=str(bag), pace_topic=topic))
    with pytest.raises(InputError, match="not among"):
        BagPlayer(node, ReplayConfig(bag=str(bag), pace_topic="/nope"), pace)
    node.destroy_node()


def test_the_player_waits_for_as_many_subscribers_as_a_topic_needs(tmp_path, rclpy_context):
    """subscribers=((topic, 2),): with one subscriber the wait runs out (False); once a second
    node subscribes it returns True. Waits poll graph state, not the clock: the short timeout
    can only end a wait that is meant to fail."""
    import rclpy
    from sensor_msgs.msg import Image

    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig

    bag = tmp_path / "in_bag"
    _write_bag(bag, n=2)
    topic = "/camera/rgb/image_raw"
    node = rclpy.create_node("counted_player", context=rclpy_context)
    listeners = [rclpy.create_node(f"listener_{i}", context=rclpy_context) for i in range(2)]
    try:
        player = BagPlayer(node, ReplayConfig(bag=str(bag), topics=(topic,),
                                              subscribers=((topic, 2),)))
        listeners[0].create_subscription(Image, topic, lambda m: None, 10)
        pub = player.publishers[(topic, "sensor_msgs/msg/Image")]
        deadline = time.monotonic() + 60
        while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.get_subscription_count() == 1
        assert not player.wait_for_subscribers(1.0)
        listeners[1].create_subscription(Image, topic, lambda m: None, 10)
        assert player.wait_for_subscribers(60.0)
        assert pub.get_subscription_count() == 2
    finally:
        for n in listeners + [node]:
            n.destroy_node()


def test_a_topic_nobody_subscribes_to_is_named_after_the_wait(tmp_path, rclpy_context):
    """The wait for subscribers runs out on a topic no node reads; the replay then goes on, and
    its statistics (and a warning) name the topic, so a caller sees what it waited for in vain
    (the demo waited 30 s on the test bag's /tf, which the recognizer does not read)."""
    import rclpy

    from nol_ros.ros.bag_replay import BagPlayer, ReplayConfig

    bag = tmp_path / "in_bag"
    _write_bag(bag, n=2)
    node = rclpy.create_node("lonely_player", context=rclpy_context)
    try:
        player = BagPlayer(node, ReplayConfig(bag=str(bag), rate=100.0,
                                              wait_for_subscribers_s=0.5))
        stats = player.run()
        player.close()
        assert stats.messages == 3 and stats.unsubscribed == ("/camera/rgb/image_raw",
                                                              "/tf_static"), stats
        # a topic skipped is neither replayed nor waited for (what the client does with /tf
        # when it replays into the recognizer)
        player = BagPlayer(node, ReplayConfig(bag=str(bag), rate=100.0, skip_topics=("/tf_static",),
                                              wait_for_subscribers_s=0.5))
        stats = player.run()
        player.close()
        assert stats.messages == 2 and stats.unsubscribed == ("/camera/rgb/image_raw",), stats
    finally:
        node.destroy_node()
