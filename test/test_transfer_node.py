"""The transfer node over real DDS on this host: two nodes with their own roots (a "robot" and
a "workstation" in one process), a folder fetched from one into the other arrives identical with
its progress on ~/transfer_status; a fetch stopped after some chunks resumes with the rest; bad
requests are refused with their codes and the node keeps serving. The two-host version (network
namespaces, a link cut) is test_two_hosts.py."""

from __future__ import annotations

import json
import os
import random

import pytest
from _graph_helpers import Graph, nol_ros, params

pytestmark = [pytest.mark.ros]


@pytest.fixture(scope="module")
def ctx():
    import rclpy
    from rclpy.context import Context

    c = Context()
    rclpy.init(context=c)
    yield c
    if c.ok():
        rclpy.shutdown(context=c)


@pytest.fixture(scope="module")
def graph(ctx, tmp_path_factory):
    from rclpy.qos import DurabilityPolicy, QoSProfile

    from nol_ros.msg import TransferStatus
    from nol_ros.nodes.transfer_node import TransferNode

    root = tmp_path_factory.mktemp("transfer_graph")
    rnd = random.Random(0)
    pkg = root / "robot" / "view_selection" / "1" / "packages" / "mug"
    files = {"objects/mug/mesh.ply": bytes(rnd.getrandbits(8) for _ in range(70_000)),
             "objects/mug/views.json": b'{"views": []}' * 500,
             "sequence/rgb/000000.png": bytes(rnd.getrandbits(8) for _ in range(50_000)),
             "empty": b""}
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    g = Graph(ctx)
    for host in ("robot", "ws"):
        g.add(TransferNode("transfer", namespace=f"/{host}", context=ctx,
                        parameter_overrides=params(transfer__root=str(root / host),
                                                   transfer__chunk_kib=16,
                                                   transfer__window=3)))
    cli = g.client_node()
    g.status = []
    cli.create_subscription(TransferStatus, "/ws/transfer/transfer_status", g.status.append,
                            QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    g.cli, g.root, g.files, g.pkg = cli, root, files, pkg
    yield g
    g.close()


def _fetch(g, remote, local, max_chunks=0, peer="/robot/transfer"):
    """Fetch on /ws/transfer: (the job, its result), or (the refusing reply, None)."""
    from nol_ros.ros.client import RequestRefused

    c = g.client_in("/ws")
    try:
        job = c.fetch(peer, remote, local, max_chunks)
    except RequestRefused as e:
        return e.reply, None
    return job, c.wait(job, 600)


def _last(g, job_id):
    Graph.wait(lambda: any(m.job_id == job_id and m.state >= 4 for m in g.status), 60,
               f"the final status of {job_id}")
    return [m for m in g.status if m.job_id == job_id]


def _tree(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def test_a_fetched_folder_arrives_identical_with_its_progress(graph):
    from nol_ros.msg import JobProgress, TransferStatus

    r, st = _fetch(graph, str(graph.pkg), "mug")        # an absolute robot path inside its root
    assert st is not None and st.status.state == JobProgress.STATE_SUCCEEDED, st
    dest = graph.root / "ws" / "mug"
    assert st.result_path == str(dest.resolve())
    assert _tree(dest) == graph.files
    msgs = _last(graph, r.job_id)
    final = msgs[-1]
    assert final.state == TransferStatus.STATE_DONE
    total = sum(map(len, graph.files.values()))
    assert final.bytes_total == final.bytes_done == total
    assert final.chunks_total == final.chunks_fetched == -(-total // (16 * 1024))
    assert final.chunks_resumed == 0 and final.retries == 0
    assert 0 < final.wire_bytes <= total            # views.json travelled compressed
    assert [m.chunks_done for m in msgs] == sorted(m.chunks_done for m in msgs)


def test_a_paused_fetch_resumes_with_the_remaining_chunks(graph):
    from nol_ros.msg import TransferStatus

    rel = "view_selection/1/packages/mug"
    r, st = _fetch(graph, rel, "again/mug", max_chunks=3)
    first = _last(graph, r.job_id)[-1]
    assert first.state == TransferStatus.STATE_PAUSED and first.chunks_fetched == 3
    assert not (graph.root / "ws" / "again" / "mug").exists()
    r2, st2 = _fetch(graph, rel, "again/mug")
    second = _last(graph, r2.job_id)[-1]
    assert second.state == TransferStatus.STATE_DONE
    assert second.chunks_resumed == 3
    assert second.chunks_fetched == second.chunks_total - 3
    assert _tree(graph.root / "ws" / "again" / "mug") == graph.files


def _files(d):
    """relative path -> (size, mtime_ns) of every file under ``d`` (what 'nothing lost' means)."""
    return {p.relative_to(d).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in d.rglob("*") if p.is_file()}


def test_bad_requests_are_refused_and_the_node_keeps_serving(graph, tmp_path):
    from nol_ros.msg import JobProgress

    (tmp_path / "mine.txt").write_text("not to be sent")
    before = {d: _files(d) for d in (graph.root, tmp_path)}
    r, _ = _fetch(graph, "view_selection", "../outside")
    assert not r.accepted and r.error_code == "BAD_PATH" and "is not under" in r.message, r
    r, st = _fetch(graph, "../../etc", "x")                 # the peer refuses it
    assert st is not None and st.status.state == JobProgress.STATE_FAILED
    assert st.status.error_code == "BAD_PATH", st.status.message
    assert "it must name a place inside the transfer root" in st.status.message, st.status
    r, st = _fetch(graph, "no/such/folder", "x")
    assert st.status.state == JobProgress.STATE_FAILED and "does not exist" in st.status.message
    os.symlink(tmp_path, graph.root / "robot" / "evil")
    r, st = _fetch(graph, "evil", "x")
    assert st.status.state == JobProgress.STATE_FAILED and st.status.error_code == "BAD_PATH"
    assert "outside the transfer root" in st.status.message, st.status.message
    # nothing lost or leaked: both roots and the folder behind the link as they were
    assert not (graph.root / "ws" / "x").exists() and not (graph.root / "outside").exists()
    assert {d: _files(d) for d in (graph.root, tmp_path)} == before
    r, st = _fetch(graph, "view_selection/1/packages/mug", "ok")   # still serving
    assert st.status.state == JobProgress.STATE_SUCCEEDED


def test_the_client_follows_a_fetch_and_the_remote_learn_step_uses_it(graph):
    """NolClient on a fetch: its TransferStatus stream while it waits, the final one after;
    the fetch step of nol-ros remote-learn (RemoteLearner) returns the folder and that final
    status."""
    from nol_ros.msg import TransferStatus
    from nol_ros.ros.remote import RemoteLearnConfig, RemoteLearner

    robot, ws = graph.client_in("/robot"), graph.client_in("/ws")
    rel = "view_selection/1/packages/mug"
    job = ws.fetch(robot.path("transfer"), rel, "followed")
    seen = []
    res = ws.wait(job, 600, on_transfer=seen.append).check("the fetch")
    assert res.result_path == str((graph.root / "ws" / "followed").resolve())
    final = ws.transfer_status(job)       # waits for it: it may come after the job's end
    assert final.state == TransferStatus.STATE_DONE and final.job_id == job.job_id
    assert all(m.job_id == job.job_id for m in seen)
    assert [m.chunks_done for m in seen] == sorted(m.chunks_done for m in seen)
    assert _tree(graph.root / "ws" / "followed") == graph.files
    step = RemoteLearner(robot, ws, RemoteLearnConfig(robot_ns="/robot", workstation_ns="/ws"))
    path, st = step.fetch(ws, robot.path("transfer"), rel, "via_remote_learn")
    assert path == str((graph.root / "ws" / "via_remote_learn").resolve())
    assert st.state == TransferStatus.STATE_DONE and st.bytes_done == st.bytes_total > 0
    assert _tree(graph.root / "ws" / "via_remote_learn") == graph.files


def test_waiting_past_the_deadline_then_cancelling_a_stuck_fetch(graph):
    """A fetch from a transfer node that does not exist waits for it (stall_timeout_s is 300 s):
    wait() gives up at its deadline with JOB_TIMEOUT, cancel() stops the job, and the result of
    the cancelled job raises with CANCELLED."""
    from nol_ros.msg import JobProgress, TransferStatus
    from nol_ros.ros.client import JobFailed, WaitTimeoutError

    ws = graph.client_in("/ws")
    job = ws.fetch("/nowhere/transfer", "x", "never")
    ws.wait_until(lambda: any(m.state == TransferStatus.STATE_WAITING
                              for m in ws.transfer_updates(job)), 60, "the fetch to wait")
    seen = []
    with pytest.raises(WaitTimeoutError, match=f"job {job.job_id} on /ws/transfer did not end "
                                               "within 1 s") as e:
        ws.wait(job, 1.0, on_transfer=seen.append)
    # every status so far went to on_transfer (the WAITING ones among them), in order
    assert seen == ws.transfer_updates(job)[:len(seen)]
    assert any(m.state == TransferStatus.STATE_WAITING for m in seen)
    assert e.value.code == "JOB_TIMEOUT" and isinstance(e.value, TimeoutError)
    assert ws.result(job).state == JobProgress.STATE_RUNNING
    assert ws.cancel(job)
    res = ws.wait(job, 60)
    assert res.state == JobProgress.STATE_CANCELLED and not res.succeeded
    # ~/progress says so too (followed since the fetch was sent, long before the cancel)
    cancelled = JobProgress.STATE_CANCELLED
    ws.wait_until(lambda: getattr(ws.progress(job), "state", None) == cancelled, 60,
                  "the cancellation on ~/progress")
    with pytest.raises(JobFailed, match="CANCELLED") as e:
        res.check("the fetch")
    assert e.value.code == "CANCELLED"
    assert not (graph.root / "ws" / "never").exists()


def test_the_fetch_command_prints_the_transfer_and_its_end(graph):
    """``nol-ros fetch`` (its own process, a NolClient) against the nodes of this process."""
    out = nol_ros("fetch", "/ws/transfer", "/robot/transfer", "view_selection/1/packages/mug",
                  "by_cli", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    final = lines[-1]
    assert final["final"] and final["state"] == 4 and final["job_state"] == 2, final
    assert final["bytes_done"] == final["bytes_total"] == sum(map(len, graph.files.values()))
    assert final["result_path"] == str((graph.root / "ws" / "by_cli").resolve())
    assert all(x["job_id"] == final["job_id"] for x in lines)
    assert _tree(graph.root / "ws" / "by_cli") == graph.files
    # refused: exit 1 with the node's code
    out = nol_ros("fetch", "/ws/transfer", "/robot/transfer", "x", "../outside", "--quiet")
    assert out.returncode == 1 and "failed [BAD_PATH]" in out.stderr, out.stderr
