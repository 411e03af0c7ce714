"""transfer node: moves folders between hosts over ROS 2 (robot <-> workstation without a shared
file system). Run one on each host; each serves the folders under its `transfer.root` and fetches
from the others into it. The work is nol_ros.services.transfer (requests checked, fetches as
jobs) and nol_ros.transfer (chunks, checksums, resume, assembly); this node maps ROS requests
onto it and carries the bytes (nol_ros.ros.transfer).

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

What a fetch does: manifest from the peer, then `transfer.window` chunk requests in flight, each
checked against its SHA-256 and written into the staging folder <root>/.nol_transfer/ID/; a
request unanswered for `chunk_timeout_s` is sent again, so a link that drops and comes back
only costs the time it was down; after `stall_timeout_s` without a chunk the job fails
PEER_UNREACHABLE, keeping what it has -- a later fetch of the same content resumes. The
complete folder replaces `local_path` in one step. Paths from requests and manifests stay
inside `transfer.root` (BAD_PATH otherwise). All parameters are read-only.

Services answer on their own callback group, so a node keeps serving chunks while it fetches.
"""

from __future__ import annotations

import sys

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from nol_ros.errors import NolError
from nol_ros.jobs import JobInfo, JobState
from nol_ros.msg import JobProgress, TransferStatus
from nol_ros.ros.job_services import JobNodeShutdown, attach_job_services, job_progress_msg
from nol_ros.ros.params import declare_and_read
from nol_ros.ros.qos import latched_qos
from nol_ros.ros.runtime import offer_service, run_nodes
from nol_ros.ros.transfer import Fetcher, serve, status_msg
from nol_ros.services.transfer import FetchRequest, TransferService, TransferServiceConfig
from nol_ros.srv import Fetch

LATCHED = latched_qos()
RANGES = {"max_queued": (0, 1000), "max_job_s": (0.0, 1e7), "transfer.chunk_kib": (1, 4096),
          "transfer.compression_level": (0, 9), "transfer.window": (1, 256),
          "transfer.chunk_timeout_s": (0.001, 86400.0),
          "transfer.stall_timeout_s": (0.001, 864000.0),
          "transfer.manifest_timeout_s": (0.001, 86400.0)}


class TransferNode(JobNodeShutdown, Node):
    def __init__(self, node_name: str = "transfer", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.cfg: TransferServiceConfig = declare_and_read(self, TransferServiceConfig,
                                                           "transfer", ranges=RANGES)
        t = self.cfg.transfer
        group = ReentrantCallbackGroup()
        self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
        self.status_pub = self.create_publisher(TransferStatus, "~/transfer_status", LATCHED)
        self.service = TransferService(self.cfg, None, self._on_update, self._publish_status)
        self.jobs, self.inbox = self.service.jobs, self.service.inbox
        self.fetcher = Fetcher(self, self.inbox, t, callback_group=group)
        self.service.fetch = self.fetcher.fetch
        serve(self, self.service.outbox, group)
        offer_service(self, Fetch, "~/fetch", self._on_fetch)
        attach_job_services(self, self.jobs)
        staged = self.inbox.staged()
        self.get_logger().info(
            f"transfer node ready (root {self.inbox.root}, chunks {t.chunk_kib} KiB, window "
            f"{t.window}{f'; {len(staged)} interrupted transfer(s) staged' if staged else ''})")

    def _on_update(self, info: JobInfo) -> None:
        if not self.context.ok():  # shutting down: the job was cancelled, nobody listens
            return
        self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
        if info.state == JobState.FAILED:
            self.get_logger().error(f"fetch {info.job_id} failed [{info.error_code}]: "
                                    f"{info.message}")
        elif info.state == JobState.SUCCEEDED:
            self.get_logger().info(f"fetch {info.job_id} done: {info.result_path}")

    def _publish_status(self, st, job_id: str) -> None:
        if self.context.ok():
            self.status_pub.publish(status_msg(st, job_id, self.get_clock().now().to_msg()))

    def _on_fetch(self, req, resp):
        try:
            info = self.service.submit(FetchRequest(req.peer, req.remote_path, req.local_path,
                                                    int(req.max_chunks)))
            resp.accepted, resp.job_id = True, info.job_id
            resp.message = f"fetching {req.peer}:{req.remote_path} -> {req.local_path}"
        except NolError as e:
            resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
            self.get_logger().error(f"Fetch refused [{e.code}]: {e}")
        return resp


def main(argv: list[str] | None = None) -> int:
    return run_nodes([TransferNode], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
