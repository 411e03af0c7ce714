"""Fetching folders from other hosts as jobs: what the transfer node offers, without ROS.

Each host's transfer node serves the folders under its ``transfer.root`` (an
:class:`~nol_ros.transfer.Outbox`) and fetches from the others into it (an
:class:`~nol_ros.transfer.Inbox`). A Fetch request is checked before it is queued -- the peer
named, ``local_path`` confined to the root (:func:`nol_ros.workspace.confine`, then the wire
rules of :mod:`nol_ros.transfer.paths`: BAD_PATH), QUEUE_FULL -- and runs as a job that calls
the ``fetch`` the node gives (:meth:`nol_ros.ros.transfer.Fetcher.fetch`: the bytes over ROS 2),
reporting every :class:`~nol_ros.transfer.status.FetchStatus` through ``on_status`` and the
fraction of chunks held as the job's progress. A fetch that fails or is cancelled keeps what it
verified (fetching the same content again resumes) and its last status says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nol_ros.errors import ConfigError, InputError
from nol_ros.jobs import JobInfo, JobManager
from nol_ros.transfer import Inbox, Outbox, TransferConfig
from nol_ros.transfer.paths import local_path, wire_path
from nol_ros.transfer.status import CANCELLED, FAILED, FetchStatus
from nol_ros.workspace import confine

# fetch(peer, remote_path, local_path, max_chunks, report(FetchStatus), check()) -> FetchStatus
FetchFn = Callable[[str, str, str, int, Callable, Callable], FetchStatus]


@dataclass(frozen=True)
class TransferServiceConfig:
    """The transfer node's parameters."""

    max_queued: int = 4             # fetch jobs waiting behind the running one; then QUEUE_FULL
    max_job_s: float = 86400.0      # a fetch job's time budget; then TIME_BUDGET (0: none)
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def __post_init__(self):
        if self.max_queued < 0:
            raise ConfigError("max_queued must be >= 0")


@dataclass(frozen=True)
class FetchRequest:
    """A Fetch request (the message's fields)."""

    peer: str
    remote_path: str
    local_path: str
    max_chunks: int = 0


def check_fetch_request(cfg: TransferServiceConfig, req: FetchRequest) -> FetchRequest:
    """Cheap checks before a fetch is queued (raise the NolError a reply reports)."""
    if not req.peer:
        raise ConfigError("peer is empty; name the sending transfer node, e.g. /robot/transfer")
    if not req.remote_path:
        raise InputError("remote_path is empty; name a folder under the peer's transfer root")
    if req.max_chunks < 0:
        raise InputError(f"max_chunks {req.max_chunks} must be >= 0 (0 = everything)")
    root = cfg.transfer.root
    confine(root, req.local_path, "local_path")       # BAD_PATH: outside the root
    if req.local_path.startswith("/"):
        local_path(root, req.local_path, "local_path")
    else:
        wire_path(req.local_path, "local_path")       # no '..', no staging folder, not empty
    return req


class TransferService:
    """Fetch jobs, one at a time (see the module doc). ``on_update(JobInfo)`` for every job
    change; ``on_status(FetchStatus, job_id)`` for every fetch status."""

    def __init__(self, cfg: TransferServiceConfig, fetch: FetchFn | None = None,
                 on_update: Callable[[JobInfo], None] | None = None,
                 on_status: Callable[[FetchStatus, str], None] | None = None):
        self.cfg, self.fetch = cfg, fetch
        self.on_status = on_status or (lambda st, job_id: None)
        self.inbox = Inbox.from_config(cfg.transfer)
        self.outbox = Outbox.from_config(cfg.transfer)
        self.jobs = JobManager(max_queued=cfg.max_queued, on_update=on_update, name="transfer",
                               max_job_s=cfg.max_job_s)

    def submit(self, req: FetchRequest) -> JobInfo:
        """Check the request and queue its fetch; raises the NolError a reply reports."""
        r = check_fetch_request(self.cfg, req)
        if self.fetch is None:
            raise ConfigError("this transfer service has no way to reach peers (no fetch)")

        def run(progress):
            last: dict = {}

            def report(st: FetchStatus) -> None:
                last["st"] = st
                self.on_status(st, progress.job_id)
                frac = st.chunks_done / st.chunks_total if st.chunks_total else 0.0
                progress.report("fetch", frac, st.message or "fetching")

            try:
                st = self.fetch(r.peer, r.remote_path, r.local_path, int(r.max_chunks), report,
                                progress.check)
            except BaseException as e:
                st = last.get("st")
                if st is not None:     # the last status says how it ended
                    code = getattr(e, "code", "INTERNAL_ERROR")
                    st.state = CANCELLED if code == "CANCELLED" else FAILED
                    st.error_code, st.message = code, str(e)
                    self.on_status(st, progress.job_id)
                raise
            return st.result_path or str(self.inbox.staging_root / st.transfer_id)

        return self.jobs.submit("fetch", run, r.local_path)

    def shutdown(self) -> None:
        self.jobs.shutdown()
