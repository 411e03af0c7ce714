"""The transfer core (nol_ros.transfer) over ROS 2: the sender's services and the receiver's
pull loop. No transfer logic lives here -- chunking, checksums, resume state, assembly and path
confinement are the core's; this module moves bytes and measures time.

QoS: both services use the ROS service default (reliable, volatile, keep-last 10): a lost
request or reply is repeated by DDS while the link is up, and by :class:`Fetcher` itself (a
request unanswered for ``chunk_timeout_s`` is sent again) while it is down. The pull loop keeps
``window`` requests in flight so the link stays busy; duplicates of a retried chunk are ignored.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque

from nol_ros.errors import NolError
from nol_ros.msg import TransferStatus
from nol_ros.ros.clients import create_service_client
from nol_ros.ros.qos import service_qos
from nol_ros.srv import GetChunk, GetManifest
from nol_ros.transfer import Inbox, Manifest, Outbox, TransferConfig
from nol_ros.transfer.codec import ChunkError
from nol_ros.transfer.status import (  # noqa: F401  (the states, re-exported)
    ASSEMBLING,
    CANCELLED,
    DONE,
    FAILED,
    MANIFEST,
    PAUSED,
    RECEIVING,
    WAITING,
    FetchStatus,
)


class PeerUnreachableError(NolError):
    """No reply from the peer for stall_timeout_s: fetch again later to resume."""

    code = "PEER_UNREACHABLE"


class RemoteTransferError(NolError):
    """The peer refused the request (its error code is kept)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def serve(node, outbox: Outbox, callback_group=None) -> None:
    """Offer ``~/get_manifest`` and ``~/get_chunk`` on ``node`` for the folders of ``outbox``."""
    def on_manifest(req, resp):
        try:
            m = outbox.manifest(req.path)
            resp.success, resp.transfer_id = True, m.id
            resp.total_bytes, resp.chunks = m.total_bytes, m.n_chunks
            resp.manifest = m.to_bytes()
            resp.message = f"{len(m.files)} files, {m.total_bytes} bytes, {m.n_chunks} chunks"
        except NolError as e:
            resp.success, resp.error_code, resp.message = False, e.code, str(e)
            node.get_logger().error(f"manifest of '{req.path}' refused [{e.code}]: {e}")
        return resp

    def on_chunk(req, resp):
        try:
            data, enc = outbox.read_chunk(req.transfer_id, int(req.index))
            resp.success, resp.data, resp.encoding = True, data, enc
        except NolError as e:
            resp.success, resp.error_code, resp.message = False, e.code, str(e)
        return resp

    node.create_service(GetManifest, "~/get_manifest", on_manifest,
                        callback_group=callback_group, qos_profile=service_qos())
    node.create_service(GetChunk, "~/get_chunk", on_chunk, callback_group=callback_group,
                        qos_profile=service_qos())




class Fetcher:
    """Pulls folders from peers' transfer nodes into ``inbox`` (call from a worker thread; the
    node's executor must spin elsewhere)."""

    def __init__(self, node, inbox: Inbox, cfg: TransferConfig, callback_group=None):
        self.node, self.inbox, self.cfg, self.group = node, inbox, cfg, callback_group
        self._clients: dict[str, tuple] = {}

    def _clients_for(self, peer: str):
        if peer not in self._clients:
            p = peer.rstrip("/")
            self._clients[peer] = (
                create_service_client(self.node, GetManifest, f"{p}/get_manifest", self.group),
                create_service_client(self.node, GetChunk, f"{p}/get_chunk", self.group))
        return self._clients[peer]

    def _manifest(self, client, remote_path: str, st: FetchStatus, report, check) -> Manifest:
        deadline = time.monotonic() + self.cfg.stall_timeout_s
        while True:
            check()
            if client.service_is_ready():
                done = threading.Event()
                fut = client.call_async(GetManifest.Request(path=remote_path))
                fut.add_done_callback(lambda _f, d=done: d.set())
                sent = time.monotonic()
                while not done.wait(0.2):
                    now = time.monotonic()
                    try:
                        check()
                    except BaseException:
                        fut.cancel()
                        raise
                    if now - sent > self.cfg.chunk_timeout_s and st.state != WAITING:
                        st.state, st.retries = WAITING, st.retries + 1
                        st.message = (f"no manifest from {st.peer} for "
                                      f"{self.cfg.chunk_timeout_s:.0f} s (link down?); waiting")
                        report(st)
                    if now - sent > self.cfg.manifest_timeout_s or now > deadline:
                        fut.cancel()
                        break
                r = fut.result() if done.is_set() and not fut.cancelled() else None
                if r is not None:
                    if not r.success:
                        raise RemoteTransferError(f"{st.peer} refused '{remote_path}': "
                                                  f"{r.message}", r.error_code or "REMOTE_ERROR")
                    m = Manifest.from_bytes(bytes(r.manifest), self.cfg.limits)
                    if m.id != r.transfer_id:
                        raise RemoteTransferError(f"{st.peer} sent a manifest that does not "
                                                  "match its id", "BAD_MANIFEST")
                    return m
            if time.monotonic() > deadline:
                raise PeerUnreachableError(
                    f"{st.peer} gave no manifest of '{remote_path}' for "
                    f"{self.cfg.stall_timeout_s:.0f} s: is its transfer node running and "
                    "reachable (DDS discovery, ROS_DOMAIN_ID, the link)? Fetch again to retry")
            st.state, st.message = WAITING, f"waiting for {st.peer}"
            report(st)
            time.sleep(0.5)

    def fetch(self, peer: str, remote_path: str, local_path: str, max_chunks: int = 0,
              report=None, check=None) -> FetchStatus:
        """Fetch ``remote_path`` of ``peer`` (a transfer node name) into ``local_path`` of this
        host's root. report(FetchStatus) on progress; check() raises to cancel. Returns the final
        status (state DONE with result_path, or PAUSED after max_chunks new chunks)."""
        report = report or (lambda st: None)
        check = check or (lambda: None)
        st = FetchStatus(peer, remote_path, local_path)
        mc, cc = self._clients_for(peer)
        report(st)
        m = self._manifest(mc, remote_path, st, report, check)
        rec = self.inbox.open(m, local_path)
        st.transfer_id, st.chunks_total, st.bytes_total = m.id, m.n_chunks, m.total_bytes
        st.chunks_resumed = st.chunks_done = len(rec.have)
        st.bytes_done = rec.bytes_done
        st.state = RECEIVING
        st.message = (f"{m.n_chunks} chunks, {m.total_bytes} bytes" +
                      (f"; resuming with {st.chunks_resumed} held" if st.chunks_resumed else ""))
        report(st)
        todo = deque(rec.missing())
        inflight: dict = {}                           # future -> (chunk, sent at)
        done_q: queue.Queue = queue.Queue()
        last_good = last_report = time.monotonic()
        try:
            while True:
                check()
                while todo and len(inflight) < self.cfg.window and \
                        (not max_chunks or st.chunks_fetched + len(inflight) < max_chunks):
                    i = todo.popleft()
                    fut = cc.call_async(GetChunk.Request(transfer_id=m.id, index=i))
                    inflight[fut] = (i, time.monotonic())
                    fut.add_done_callback(lambda f, i=i: done_q.put((f, i)))
                if not inflight:
                    break
                try:
                    fut, i = done_q.get(timeout=0.2)
                except queue.Empty:
                    fut = None
                now = time.monotonic()
                if fut is not None and fut in inflight:
                    del inflight[fut]
                    r = None if fut.cancelled() or fut.exception() else fut.result()
                    if r is None:
                        todo.append(i)
                    elif r.success:
                        try:
                            new = rec.put(i, bytes(r.data), r.encoding)
                        except ChunkError as e:
                            st.retries += 1
                            st.message = str(e)
                            todo.append(i)
                        else:
                            st.wire_bytes += len(r.data)
                            if new:
                                st.chunks_fetched += 1
                                st.chunks_done += 1
                                a, b = m.chunk_range(i)
                                st.bytes_done += b - a
                            last_good = now
                            st.state = RECEIVING
                    elif r.error_code == "UNKNOWN_TRANSFER":   # the peer restarted
                        m2 = self._manifest(mc, remote_path, st, report, check)
                        if m2.id != m.id:
                            raise RemoteTransferError(
                                f"'{remote_path}' on {peer} changed during the transfer; fetch "
                                "again for the new content", "SOURCE_CHANGED")
                        todo.append(i)
                    else:
                        raise RemoteTransferError(f"{peer}: chunk {i}: {r.message}",
                                                  r.error_code or "REMOTE_ERROR")
                for f, (j, t) in list(inflight.items()):     # unanswered: ask again
                    if now - t > self.cfg.chunk_timeout_s:
                        del inflight[f]
                        f.cancel()
                        todo.append(j)
                        st.retries += 1
                        st.state = WAITING
                        st.message = (f"no reply from {peer} for {self.cfg.chunk_timeout_s:.0f}"
                                      " s; asking again")
                if now - last_good > self.cfg.stall_timeout_s:
                    raise PeerUnreachableError(
                        f"no chunk from {peer} for {self.cfg.stall_timeout_s:.0f} s "
                        f"({st.chunks_done}/{st.chunks_total} held, kept); fetch again to resume")
                if now - last_report > 0.5 or fut is not None and not inflight:
                    st.seconds = now - st.t0
                    report(st)
                    last_report = now
        finally:
            for f in list(inflight):
                f.cancel()
        st.seconds = time.monotonic() - st.t0
        if not rec.complete:
            rec.close()
            st.state = PAUSED
            st.message = (f"paused after {st.chunks_fetched} new chunks ({st.chunks_done}/"
                          f"{st.chunks_total} held); fetch again to go on")
            report(st)
            return st
        st.state, st.message = ASSEMBLING, "assembling"
        report(st)
        st.result_path = str(rec.assemble())
        st.state, st.seconds = DONE, time.monotonic() - st.t0
        st.message = (f"{st.chunks_total} chunks, {st.bytes_total} bytes in {st.seconds:.1f} s "
                      f"({st.chunks_resumed} resumed, {st.retries} retries) -> {st.result_path}")
        report(st)
        return st


def status_msg(st: FetchStatus, job_id: str, stamp=None):
    """FetchStatus -> nol_ros/msg/TransferStatus."""
    m = TransferStatus()
    if stamp is not None:
        m.header.stamp = stamp
    m.job_id, m.transfer_id, m.peer = job_id, st.transfer_id, st.peer
    m.remote_path, m.local_path, m.state = st.remote_path, st.local_path, st.state
    m.chunks_total, m.chunks_done = st.chunks_total, st.chunks_done
    m.chunks_resumed, m.chunks_fetched = st.chunks_resumed, st.chunks_fetched
    m.bytes_total, m.bytes_done, m.wire_bytes = st.bytes_total, st.bytes_done, st.wire_bytes
    m.retries, m.seconds = st.retries, float(st.seconds)
    m.message, m.error_code = st.message[:1000], st.error_code
    return m
