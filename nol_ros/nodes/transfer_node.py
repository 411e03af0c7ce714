"""transfer node: moves folders between hosts over ROS 2 (robot <-> workstation without a shared
file system). Run one on each host; each serves the folders under its `transfer.root` and fetches
from the others into it.

Services:
  ~/get_manifest (nol_ros/srv/GetManifest)  the manifest of a folder under the root
  ~/get_chunk (nol_ros/srv/GetChunk)        one chunk of it (checked against the manifest)
  ~/fetch (nol_ros/srv/Fetch)               -> job id: pull a folder of a peer into the root
  ~/get_job_status, ~/cancel_job            the fetch jobs (nol_ros.jobs: one at a time)
Topics:
  ~/progress (nol_ros/msg/JobProgress)          every job change (reliable, volatile, depth 10)
  ~/transfer_status (nol_ros/msg/TransferStatus) the running fetch in numbers: chunks held,
                                                resumed and fetched, bytes, retries (reliable,
                                                transient local, depth 1: a late subscriber
                                                gets the latest state)

What a fetch does (nol_ros.transfer, nol_ros.ros.transfer): manifest from the peer, then
`transfer.window` chunk requests in flight, each checked against its SHA-256 and written into
the staging folder <root>/.nol_transfer/ID/; a request unanswered for `chunk_timeout_s` is sent
again, so a link that drops and comes back only costs the time it was down; after
`stall_timeout_s` without a chunk the job fails PEER_UNREACHABLE, keeping what it has -- a
later fetch of the same content resumes. The complete folder replaces `local_path` in one step.
Paths from requests and manifests stay inside `transfer.root` (BAD_PATH otherwise).

Services answer on their own callback group, so a node keeps serving chunks while it fetches.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

from nol_ros.errors import ConfigError, NolError
from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.transfer import TransferConfig


@dataclass(frozen=True)
class TransferNodeConfig:
    max_queued: int = 4
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def __post_init__(self):
        if self.max_queued < 0:
            raise ConfigError("max_queued must be >= 0")


def make_node(node_name: str = "transfer", **node_kwargs):
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from nol_ros.msg import JobProgress, TransferStatus
    from nol_ros.ros.job_services import JobNodeShutdown, attach_job_services, job_progress_msg
    from nol_ros.ros.params import declare_and_read
    from nol_ros.ros.transfer import CANCELLED, FAILED, Fetcher, serve, status_msg
    from nol_ros.srv import Fetch
    from nol_ros.transfer import Inbox, Outbox
    from nol_ros.transfer.paths import local_path, wire_path

    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    class TransferNode(JobNodeShutdown, Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: TransferNodeConfig = declare_and_read(self, TransferNodeConfig)
            t = self.cfg.transfer
            self.inbox = Inbox.from_config(t)
            self.outbox = Outbox.from_config(t)
            group = ReentrantCallbackGroup()
            self.fetcher = Fetcher(self, self.inbox, t, callback_group=group)
            self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
            self.status_pub = self.create_publisher(TransferStatus, "~/transfer_status", latched)
            self.jobs = JobManager(max_queued=self.cfg.max_queued, on_update=self._on_update,
                                   name="transfer")
            self._lock = threading.Lock()
            serve(self, self.outbox, group)
            self.create_service(Fetch, "~/fetch", self._on_fetch)
            attach_job_services(self, self.jobs)
            staged = self.inbox.staged()
            self.get_logger().info(
                f"transfer node ready (root {self.inbox.root}, chunks {t.chunk_kib} KiB, window "
                f"{t.window}{f'; {len(staged)} interrupted transfer(s) staged' if staged else ''})")

        def _on_update(self, info: JobInfo) -> None:
            if not self.context.ok():
                return
            self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
            if info.state == JobState.FAILED:
                self.get_logger().error(f"fetch {info.job_id} failed [{info.error_code}]: "
                                        f"{info.message}")
            elif info.state == JobState.SUCCEEDED:
                self.get_logger().info(f"fetch {info.job_id} done: {info.result_path}")

        def _publish(self, st, job_id: str) -> None:
            if self.context.ok():
                self.status_pub.publish(status_msg(st, job_id, self.get_clock().now().to_msg()))

        def _on_fetch(self, req, resp):
            try:
                if not req.peer:
                    raise ConfigError("peer is empty; name the sending transfer node, e.g. "
                                      "/robot/transfer")
                if req.local_path.startswith("/"):
                    local_path(self.inbox.root, req.local_path, "local_path")
                else:
                    wire_path(req.local_path, "local_path")
                holder: dict = {}
                peer, remote, local = req.peer, req.remote_path, req.local_path
                max_chunks = int(req.max_chunks)

                def run(progress):
                    last = {}

                    def report(st):
                        last["st"] = st
                        self._publish(st, holder["id"])
                        frac = st.chunks_done / st.chunks_total if st.chunks_total else 0.0
                        progress.report("fetch", frac, st.message or "fetching")

                    try:
                        st = self.fetcher.fetch(peer, remote, local, max_chunks, report,
                                                progress.check)
                    except BaseException as e:
                        st = last.get("st")
                        if st is not None:
                            cancelled = getattr(e, "code", "") == "CANCELLED"
                            st.state = CANCELLED if cancelled else FAILED
                            st.error_code = getattr(e, "code", "INTERNAL_ERROR")
                            st.message = str(e)
                            self._publish(st, holder["id"])
                        raise
                    return st.result_path or str(self.inbox.staging_root / st.transfer_id)

                with self._lock:
                    info = self.jobs.submit("fetch", run, local)
                    holder["id"] = info.job_id
                resp.accepted, resp.job_id = True, info.job_id
                resp.message = f"fetching {peer}:{remote} -> {local}"
            except NolError as e:
                resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
                self.get_logger().error(f"Fetch refused [{e.code}]: {e}")
            return resp

    return TransferNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
