"""Approximate time sync: pairs within slop, drops stale messages, never pairs across slop."""

from nol_ros.streaming.sync import ApproximateTimeSync

MS = 1_000_000


def test_pairs_messages_within_slop_and_drops_stale():
    out = []
    s = ApproximateTimeSync(2, slop_s=0.010, callback=out.append)
    s.add(0, 1000 * MS, "rgb0")
    s.add(0, 1033 * MS, "rgb1")   # rgb0 never gets a partner
    s.add(1, 1036 * MS, "d1")     # 3 ms after rgb1 -> pair
    assert out == [["rgb1", "d1"]]
    assert s.dropped == 1         # rgb0 was dropped as stale
    s.add(1, 1070 * MS, "d2")
    s.add(0, 1085 * MS, "rgb2")   # 15 ms apart > slop: no pair
    assert len(out) == 1
    s.add(1, 1090 * MS, "d3")     # 5 ms after rgb2 -> pair with d3, d2 dropped
    assert out[-1] == ["rgb2", "d3"]
    assert s.dropped == 2 and s.matched == 2


def test_three_streams():
    out = []
    s = ApproximateTimeSync(3, slop_s=0.005, callback=out.append)
    s.add(0, 100 * MS, "a")
    s.add(1, 102 * MS, "b")
    assert out == []
    s.add(2, 104 * MS, "c")
    assert out == [["a", "b", "c"]]
