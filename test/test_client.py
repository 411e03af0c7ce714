"""NolClient's own rules, without nodes to talk to (fast): node and service names from the
namespace and ``names``, a clear error for nodes that are not there and for a deadline that
passes, who spins the node, and a failed job's result raising with its code. Its calls against
real nodes are exercised by the graph tests (test_transfer_node.py, test_nol_node.py,
test_nodes_learn_to_recognize.py ...), which all go through it."""

import pytest

pytestmark = pytest.mark.ros


def test_names_missing_nodes_and_deadlines(rclpy_context):
    from nol_ros.ros.client import Job, NolClient, WaitTimeoutError
    from nol_ros.ros.clients import ServiceTimeoutError

    c = NolClient(namespace="robot", context=rclpy_context, timeout_s=0.5,
                  names={"transfer": "/ws/transfer", "nol": "learner"})
    try:
        assert c.path("nol", "learn_object") == "/robot/learner/learn_object"
        assert c.path("trainer") == "/robot/trainer"
        assert c.path("transfer", "fetch") == "/ws/transfer/fetch"    # absolute: as given
        assert c.job("trainer", "7") == Job("/robot/trainer", "7")
        assert c.job("/other/nol", "7") == Job("/other/nol", "7")
        assert not c.ready(["nol"])
        with pytest.raises(ServiceTimeoutError) as e:
            c.wait_for_nodes(["nol", "transfer"], 0.5)
        assert e.value.code == "SERVICE_UNAVAILABLE" and isinstance(e.value, TimeoutError)
        assert "/robot/learner" in str(e.value) and "/ws/transfer" in str(e.value)
        with pytest.raises(ServiceTimeoutError, match="/robot/learner/learn_object is not "
                                                      "available") as e:
            c.learn_object("mug", "mug.ply")
        assert e.value.code == "SERVICE_UNAVAILABLE"
        with pytest.raises(WaitTimeoutError, match="waiting for the moon") as e:
            c.wait_until(lambda: False, 0.2, "the moon")
        assert e.value.code == "TIMEOUT"
    finally:
        c.destroy()


def test_who_spins_the_node_and_unknown_kinds(rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from nol_ros.errors import ConfigError
    from nol_ros.ros.client import NolClient

    with pytest.raises(ConfigError, match="unknown node kind"):
        NolClient(names={"planner": "planner"}, context=rclpy_context)
    node = rclpy.create_node("spun_elsewhere", context=rclpy_context)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    try:
        with pytest.raises(ConfigError, match="spin=False"):
            NolClient(node)                        # it would take the node from ``ex``
        assert node.executor is ex
        c = NolClient(node, spin=False)            # ``ex`` spins it: the client only waits
        assert c.node is node and node.executor is ex
        c.destroy()                                # not its node: the node lives on
        assert node.get_name() == "spun_elsewhere"
    finally:
        ex.shutdown()
        node.destroy_node()


def test_a_failed_job_result_raises_with_its_code():
    from nol_ros.msg import JobProgress
    from nol_ros.ros.client import JobFailed, JobResult

    ok = JobResult("j1", JobProgress.STATE_SUCCEEDED, True, "/ws/mug", "", "done")
    assert ok.check("learning") is ok and ok.done
    failed = JobResult("j2", JobProgress.STATE_FAILED, False, "", "BAD_FILE", "no bag at b1")
    with pytest.raises(JobFailed, match=r"learning \(job j2\) ended FAILED: no bag at b1") as e:
        failed.check("learning")
    assert e.value.code == "BAD_FILE"
    cancelled = JobResult("j3", JobProgress.STATE_CANCELLED, False, "", "", "cancelled")
    with pytest.raises(JobFailed, match="CANCELLED") as e:
        cancelled.check()
    assert e.value.code == "JOB_FAILED"
    assert not JobResult("j4", JobProgress.STATE_RUNNING, False, "", "", "").done
