"""The transfer node over real DDS on this host: two nodes with their own roots (a "robot" and
a "workstation" in one process), a folder fetched from one into the other arrives identical with
its progress on ~/transfer_status; a fetch stopped after some chunks resumes with the rest; bad
requests are refused with their codes and the node keeps serving. The two-host version (network
namespaces, a link cut) is test_two_hosts.py."""

from __future__ import annotations

import os
import random

import pytest
from _graph_helpers import Graph, params, wait_job

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


def _fetch(g, remote, local, max_chunks=0, node="/ws/transfer", peer="/robot/transfer"):
    from nol_ros.srv import Fetch, GetJobStatus

    fc = g.cli.create_client(Fetch, f"{node}/fetch")
    sc = g.cli.create_client(GetJobStatus, f"{node}/get_job_status")
    r = g.call(fc, Fetch.Request(peer=peer, remote_path=remote, local_path=local,
                                 max_chunks=max_chunks))
    if not r.accepted:
        return r, None
    return r, wait_job(g, sc, r.job_id)


def _last(g, job_id):
    Graph.wait(lambda: any(m.job_id == job_id and m.state >= 4 for m in g.status), 60,
               f"the final status of {job_id}")
    return [m for m in g.status if m.job_id == job_id]


def _tree(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def test_a_fetched_folder_arrives_identical_with_its_progress(graph):
    from nol_ros.msg import JobProgress, TransferStatus

    r, st = _fetch(graph, str(graph.pkg), "mug")        # an absolute robot path inside its root
    assert r.accepted and st.status.state == JobProgress.STATE_SUCCEEDED, st
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
    assert r.accepted and st.status.state == JobProgress.STATE_FAILED
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
