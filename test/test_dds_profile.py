"""The Fast DDS profile every nol_ros process loads (nol_ros/ros/fastdds_profile.xml, set by
default_ros_env, which the test set-up calls as the nodes do): a service waits up to 5 s for a
client's reply reader to be discovered, not Fast DDS's 100 ms, after which the reply is dropped
and the client waits for ever (a graph test under CI load timed out so).

Discovery cannot be slowed on purpose here, so the test uses a reply reader that never matches:
a client asking for TRANSIENT_LOCAL replies from a VOLATILE reply writer. The server then waits
the whole max_blocking_time on that reply; a second, normal request to the same service is
answered only after that wait. Real DDS, real nodes, one process."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.ros


def test_default_ros_env_points_fast_dds_at_the_project_profile():
    from nol_ros.ros.environment import FASTDDS_PROFILE

    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == str(FASTDDS_PROFILE)
    assert "<sec>5</sec>" in FASTDDS_PROFILE.read_text()


# The server is started and stopped as the nodes are (nol_ros.ros.runtime.run_nodes). SIGUSR1
# dumps its threads' stacks: what the test reports if it does not stop on SIGTERM.
SERVER = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)
from rclpy.node import Node
from nol_ros.ros.qos import service_qos
from nol_ros.ros.runtime import run_nodes
from nol_ros.srv import GetJobStatus

def on_request(req, resp):
    print("request", req.job_id, flush=True)
    resp.found = True
    return resp

def make():
    node = Node("profile_server")
    node.create_service(GetJobStatus, "profile_probe", on_request, qos_profile=service_qos())
    print("ready", flush=True)
    return node

sys.exit(run_nodes([make], []))
"""


def test_a_service_waits_seconds_for_a_reply_reader_it_has_not_matched(rclpy_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from nol_ros.ros.clients import call_service
    from nol_ros.ros.qos import service_qos
    from nol_ros.srv import GetJobStatus

    # the server in its own process (within one process the reply is not held back), with this
    # process's environment: the profile default_ros_env chose
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    lines, deaf_seen = [], threading.Event()

    def read():
        for line in server.stdout:
            lines.append(line)
            if line.startswith("request deaf"):
                deaf_seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    caller = Node("profile_caller", context=rclpy_context)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(caller)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        deaf = caller.create_client(GetJobStatus, "profile_probe", qos_profile=QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        normal = caller.create_client(GetJobStatus, "profile_probe", qos_profile=service_qos())
        assert call_service(normal, GetJobStatus.Request(job_id="first"), 60.0, 120.0).found
        lost = deaf.call_async(GetJobStatus.Request(job_id="deaf"))
        assert deaf_seen.wait(60), "".join(lines)   # the server is on the deaf reply now
        t0 = time.monotonic()
        reply = call_service(normal, GetJobStatus.Request(job_id="normal"), 60.0, 30.0)
        waited = time.monotonic() - t0
        assert reply.found
        # the server sat on the unmatched reply for its max_blocking_time: 5 s with the profile
        # (with Fast DDS's default 0.1 s, the normal reply comes at once)
        assert waited >= 3.5, f"the server gave the unmatched reply up after {waited:.2f} s"
        assert not lost.done()
    finally:
        ex.shutdown()
        spin.join(10)
        caller.destroy_node()
        # the server stops on SIGTERM (after its reply to the deaf client timed out, rclpy's own
        # SIGTERM handling left it spinning 3 times in 10; run_nodes maps SIGTERM to Ctrl-C)
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.send_signal(signal.SIGUSR1)   # its stacks, into the lines the reader keeps
            time.sleep(2)
            server.kill()
            server.wait(10)
            reader.join(10)
            raise AssertionError("the server did not stop within 30 s of SIGTERM; its output "
                                 "and stacks:\n" + "".join(lines)) from None
        reader.join(10)
        assert server.returncode == 0, "".join(lines)
