"""`nol-ros bringup` starts the graph of a config/bringup/*.yaml from one command (one process per
node, the same parameter files as the launch files): the replay graph brings its five nodes
up on bag time, the bag reaches the reconstruction node and the recognizer (which has no models
there: it counts the frames as NO_MODELS and keeps running), Ctrl-C stops everything with exit
0; bad graph arguments exit 2 before anything starts."""

import os
import signal
import subprocess

import pytest
from _graph_helpers import BIN, Graph, nol_ros

pytestmark = pytest.mark.ros


def test_dry_run_and_bad_arguments(tmp_path):
    out = nol_ros("bringup", "--config", "replay", "bag:=/some/bag", "namespace:=robot",
                  "rate:=0.5", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6  # reconstruction, view_selection, nol, trainer, recognizer, player
    assert "reconstruction_node" in lines[0] and "config/reconstruction.yaml" in lines[0]
    assert "__ns:=/robot" in lines[0] and "use_sim_time:=true" in lines[0]
    assert "recognizer_node" in lines[4] and "camera/rgb/image_raw:=/camera/rgb/image_raw" \
        in lines[4]
    assert lines[5].split()[1:4] == ["/some/bag", "--rate", "0.5"]
    assert "use_sim_time:=false" in nol_ros("bringup", "--config", "robot", "--dry-run").stdout
    for args, text in [(["--config", "replay"], "bag:="),
                       (["--config", "replay", "bag:=x", "speed:=2"], "no argument 'speed'"),
                       (["--config", "replay", "bag"], "NAME:=VALUE"),
                       (["--config", "nope"], "no graph 'nope'"),
                       (["--config", "learn", "use_sim_time:=maybe"], "true or false")]:
        out = nol_ros("bringup", *args, "--dry-run")
        assert out.returncode == 2 and text in out.stderr, (args, out.stderr)


def test_replay_graph_comes_up_receives_the_bag_and_stops_on_ctrl_c(small_world, tmp_path,
                                                                    rclpy_context):
    from nol_ros.msg import RecognizerStatus

    root, _ = small_world
    ns = f"bringup_{os.getpid()}"
    proc = subprocess.Popen(
        [str(BIN / "nol-ros"), "bringup", "--config", "replay",
         f"bag:={root / 'bags' / 'train_000001'}", f"namespace:={ns}", "rate:=0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    g = Graph(rclpy_context)
    out = ""
    try:
        cli = g.client_node()
        from rclpy.qos import DurabilityPolicy, QoSProfile

        rec = []
        cli.create_subscription(RecognizerStatus, f"/{ns}/recognizer/status", rec.append,
                                QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        c = g.client_in(f"/{ns}")
        # every node's services up, so every node has logged its 'ready' line (the trainer's
        # torch import can take longer than the bag: its line was missing once under load)
        c.wait_for_nodes(["reconstruction", "view_selection", "nol", "trainer"], 180)
        # the bag reaches the node (how many of its 30 frames arrive while the graph plays it at
        # its own pace depends on the machine's load: not counted here)
        g.wait(lambda: c.buffer_status().frames_received >= 1, 180, "frames from the bag")
        st = c.buffer_status()
        assert st.width == 640 and st.depth_encoding == "16UC1", st
        assert c.job_status(c.job("nol", "")).error_code == "UNKNOWN_JOB"  # no job yet
        # the bag waits for both camera listeners (--subscribers in the replay graph), so the
        # recognizer gets frames however slowly it started
        g.wait(lambda: rec and rec[-1].frames_rejected >= 1, 180, "the recognizer's status")
        assert not rec[-1].models_loaded and rec[-1].error_code == "NO_MODELS", rec[-1]
        assert proc.poll() is None
    finally:
        g.close()
        proc.send_signal(signal.SIGINT)
        try:
            out = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
            pytest.fail("bring-up did not stop on SIGINT:\n" + out[-3000:])
        finally:   # the graph's own log, on failure too (pytest shows what was printed)
            (tmp_path / "bringup.log").write_text(out)
            print(out[-6000:])
    assert proc.returncode == 0, out[-3000:]
    for name in ("[reconstruction]", "[view_selection]", "[nol]", "[trainer]", "[recognizer]",
                 "[bag_replay]"):
        assert name in out, out[-3000:]
    assert "[bag_replay] [replay]" in out and "[bringup] stopped (exit 0)" in out
    assert "Traceback" not in out, out[-3000:]
    assert "failed to send response" not in out, out[-3000:]   # no reply dropped by DDS


def test_a_required_node_that_dies_stops_the_graph_with_exit_1(tmp_path):
    graph = tmp_path / "bringup" / "g.yaml"
    graph.parent.mkdir()
    (tmp_path / "bad.yaml").write_text("/**/reconstruction:\n  ros__parameters:\n"
                                       "    tracking.odometry_mode: sometimes\n")
    graph.write_text("arguments: {namespace: ''}\nnodes:\n"
                     "  - {executable: reconstruction_node, name: reconstruction, "
                     "parameters: [bad.yaml]}\n")
    # the graph stops by itself (the process ends within the deadline instead of running on)
    out = nol_ros("bringup", "--config", str(graph), "namespace:=dies", timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "odometry_mode" in out.stdout and "required node 'reconstruction' exited" in out.stdout
