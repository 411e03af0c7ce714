"""Long jobs (learn, render, train) run one at a time per node (one JobManager each: the nol
node and the trainer node can each run one job at once), off the ROS executor.

Policy (what a LearnObject caller can rely on): jobs run in submission order on one worker
thread; up to ``max_queued`` jobs wait, a further submission is refused with QUEUE_FULL (never
silently dropped). A queued job can be cancelled at once; a running job is cancelled at its next
progress report (stages check the token often). A running job has a time budget
(``max_job_s``, 0 = none): past it, it fails with TIME_BUDGET at its next progress report, as a
cancel would stop it. A failing job records the error code and message of the
:class:`NolError` it raised (INTERNAL_ERROR for anything else) and the worker goes on.

Job ids are ``TYPE-RUN-NNNN``: RUN is drawn afresh for each manager (each node start), so a
client polling an id from before a restart gets UNKNOWN_JOB, never another job's status. The
last ``keep_finished`` finished jobs stay queryable; older ones are forgotten (a node that runs
for weeks keeps bounded memory).
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum

from nol_ros.errors import NolError, clip_message


class JobState(IntEnum):
    # values equal the constants of nol_ros/msg/JobProgress
    QUEUED = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4


class JobCancelled(NolError):
    code = "CANCELLED"


class JobTimedOut(NolError):
    code = "TIME_BUDGET"


class QueueFullError(NolError):
    code = "QUEUE_FULL"


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of a job's state (immutable; the manager publishes new snapshots)."""

    job_id: str
    job_type: str
    object_name: str = ""
    state: JobState = JobState.QUEUED
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    error_code: str = ""
    result_path: str = ""
    created_s: float = field(default_factory=time.time)
    started_s: float = 0.0
    finished_s: float = 0.0

    @property
    def done(self) -> bool:
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Progress:
    """Handed to a job function: ``report(stage, fraction, message)``; raises
    :class:`JobCancelled` when the job was cancelled."""

    def __init__(self, manager: JobManager, job_id: str):
        self._m, self._id = manager, job_id
        self.cancel_event = threading.Event()
        self.budget_s, self.deadline = 0.0, float("inf")   # deadline: time.monotonic()

    def start(self, budget_s: float) -> None:
        """The job starts now with ``budget_s`` seconds (0: no budget)."""
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s if budget_s > 0 else float("inf")

    @property
    def job_id(self) -> str:
        return self._id

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled("job cancelled on request")
        if time.monotonic() > self.deadline:
            raise JobTimedOut(f"the job ran past its time budget (max_job_s = {self.budget_s:g} "
                              "s) and was stopped; raise the node's max_job_s (0 = no budget) "
                              "or give the job less work")

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        self.check()
        self._m._update(self._id, stage=stage, fraction=float(min(max(fraction, 0.0), 1.0)),
                        message=message)


JobFn = Callable[[Progress], str]  # returns the result path


class JobManager:
    def __init__(self, max_queued: int = 4, on_update: Callable[[JobInfo], None] | None = None,
                 name: str = "jobs", keep_finished: int = 1000, max_job_s: float = 0.0):
        if not max_job_s >= 0:   # NaN too
            raise ValueError(f"max_job_s must be >= 0 (0: no budget), got {max_job_s}")
        self.max_queued, self.max_job_s = max_queued, float(max_job_s)
        self.keep_finished = max(1, int(keep_finished))
        self.run_tag = secrets.token_hex(3)
        self.on_update = on_update
        self._jobs: dict[str, JobInfo] = {}
        self._fns: dict[str, JobFn] = {}
        self._progress: dict[str, Progress] = {}
        self._queue: deque[str] = deque()
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        self._stop = False
        self._last_id = ""
        self._worker = threading.Thread(target=self._run, name=f"{name}-worker", daemon=True)
        self._worker.start()

    # -- API ---------------------------------------------------------------------------------------
    def submit(self, job_type: str, fn: JobFn, object_name: str = "") -> JobInfo:
        with self._cv:
            if len(self._queue) >= self.max_queued:
                raise QueueFullError(
                    f"{len(self._queue)} jobs are already waiting (max_queued={self.max_queued}); "
                    "wait for one to finish or cancel one")
            job_id = f"{job_type}-{self.run_tag}-{next(self._ids):04d}"
            info = JobInfo(job_id=job_id, job_type=job_type, object_name=object_name,
                           message="queued")
            self._jobs[job_id] = info
            self._fns[job_id] = fn
            self._progress[job_id] = Progress(self, job_id)
            self._queue.append(job_id)
            self._last_id = job_id
            self._cv.notify_all()
        self._emit(info)
        return info

    def get(self, job_id: str = "") -> JobInfo | None:
        with self._cv:
            return self._jobs.get(job_id or self._last_id)

    def jobs(self) -> list[JobInfo]:
        with self._cv:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> JobInfo:
        with self._cv:
            info = self._jobs.get(job_id)
            if info is None:
                raise NolError(f"no job '{job_id}'; GetJobStatus with an empty id shows the last")
            if info.done:
                return info
            self._progress[job_id].cancel_event.set()
            if job_id in self._queue:
                self._queue.remove(job_id)
                info = self._set(job_id, state=JobState.CANCELLED, message="cancelled while queued",
                                 error_code=JobCancelled.code, finished_s=time.time())
            else:
                return info  # the running job stops at its next report
        self._emit(info)
        return info

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        t0 = time.monotonic()
        with self._cv:
            while not self._jobs[job_id].done:
                left = None if timeout is None else timeout - (time.monotonic() - t0)
                if left is not None and left <= 0:
                    break
                self._cv.wait(left)
            return self._jobs[job_id]

    def busy(self) -> bool:
        with self._cv:
            return bool(self._queue) or any(j.state == JobState.RUNNING
                                            for j in self._jobs.values())

    def shutdown(self, cancel_running: bool = True, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop = True
            for jid in list(self._queue):
                self._progress[jid].cancel_event.set()
            if cancel_running:
                for p in self._progress.values():
                    p.cancel_event.set()
            self._cv.notify_all()
        self._worker.join(timeout)

    # -- internals ---------------------------------------------------------------------------------
    def _set(self, job_id: str, **changes) -> JobInfo:
        info = replace(self._jobs[job_id], **changes)
        self._jobs[job_id] = info
        self._cv.notify_all()
        return info

    def _update(self, job_id: str, **changes) -> None:
        with self._cv:
            info = self._set(job_id, **changes)
        self._emit(info)

    def _emit(self, info: JobInfo) -> None:
        if self.on_update is not None:
            try:
                self.on_update(info)
            except Exception:  # a broken listener must not kill the worker
                traceback.print_exc()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if self._stop and not self._queue:
                    return
                job_id = self._queue.popleft()
                if self._stop:
                    self._set(job_id, state=JobState.CANCELLED, message="shut down",
                              error_code=JobCancelled.code, finished_s=time.time())
                    continue
                info = self._set(job_id, state=JobState.RUNNING, started_s=time.time(),
                                 message="running")
                fn, prog = self._fns.pop(job_id), self._progress[job_id]
                prog.start(self.max_job_s)
            self._emit(info)
            try:
                result = fn(prog) or ""
                changes = dict(state=JobState.SUCCEEDED, fraction=1.0, message="done",
                               result_path=str(result))
            except JobCancelled as e:
                changes = dict(state=JobState.CANCELLED, message=str(e), error_code=e.code)
            except NolError as e:
                changes = dict(state=JobState.FAILED, message=str(e), error_code=e.code)
            except Exception as e:  # report, never kill the worker
                changes = dict(state=JobState.FAILED, error_code="INTERNAL_ERROR",
                               message=clip_message(f"{type(e).__name__}: {e}"))
                traceback.print_exc()
            self._update(job_id, finished_s=time.time(), **changes)
            self._forget_old()

    def _forget_old(self) -> None:
        with self._cv:
            done = [j for j, i in self._jobs.items() if i.done and j != self._last_id]
            for j in done[:max(0, len(done) - self.keep_finished)]:
                del self._jobs[j]
                self._progress.pop(j, None)
