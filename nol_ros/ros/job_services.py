"""The job services every job-running node offers (status, cancel), the progress message, an
action whose goals are jobs, and the reply to a failed request."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable

from nol_ros.errors import NolError, clip_message
from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.msg import JobProgress
from nol_ros.ros.runtime import ShutsDown, offer_service
from nol_ros.srv import CancelJob, GetJobStatus


def reply_failure(logger, resp, what: str, e: Exception, ok_field: str = "success"):
    """Fill a reply for a request that failed: ``ok_field`` False, error_code and message (a
    NolError's code; INTERNAL_ERROR with the traceback printed for anything else, which must
    not take the node down); logged once. Returns ``resp``."""
    if isinstance(e, NolError):
        resp.error_code, resp.message = e.code, str(e)
    else:
        traceback.print_exc()
        resp.error_code = "INTERNAL_ERROR"
        resp.message = clip_message(f"{type(e).__name__}: {e}")
    setattr(resp, ok_field, False)
    logger.error(f"{what} [{resp.error_code}]: {resp.message}")
    return resp


def answer(logger, resp, what: str, fill: Callable[[], object]):
    """Answer a request with ``fill()`` (it fills ``resp`` and sets its message), logged as
    "``what``: message"; a failure is replied with :func:`reply_failure`. Returns ``resp``."""
    try:
        fill()
        logger.info(f"{what}: {resp.message}")
    except Exception as e:  # a bug in the work must not take the node down either
        reply_failure(logger, resp, f"{what} failed", e)
    return resp


class JobGoals:
    """An action whose goals are jobs of ``jobs``: ``submit(goal request) -> JobInfo`` (raises
    NolError to refuse), feedback from every update of the goal's job (the node forwards its
    JobManager updates to :meth:`on_update`), cancel requests cancel the job, and
    ``fill_result(result, JobInfo)`` writes the action's result."""

    def __init__(self, action_type, jobs: JobManager, submit: Callable, fill_result: Callable,
                 logger):
        self.action_type, self.jobs, self.submit = action_type, jobs, submit
        self.fill_result, self.logger = fill_result, logger
        self._waiters: dict[str, Callable[[JobInfo], None]] = {}
        self._lock = threading.Lock()

    def on_update(self, info: JobInfo) -> None:
        with self._lock:
            cb = self._waiters.get(info.job_id)
        if cb is not None:
            cb(info)

    def execute(self, goal_handle):
        result = self.action_type.Result()
        try:
            info = self.submit(goal_handle.request)
        except NolError as e:
            goal_handle.abort()
            return reply_failure(self.logger, result, "goal refused", e)
        done = threading.Event()

        def on_update(i: JobInfo):
            goal_handle.publish_feedback(self.action_type.Feedback(
                job_id=i.job_id, stage=i.stage, fraction=float(i.fraction), message=i.message))
            if i.done:
                done.set()

        with self._lock:
            self._waiters[info.job_id] = on_update
        on_update(self.jobs.get(info.job_id))   # the state now: a job that already ended too
        while not done.wait(0.2):
            if goal_handle.is_cancel_requested:
                self.jobs.cancel(info.job_id)
        with self._lock:
            self._waiters.pop(info.job_id, None)
        info = self.jobs.get(info.job_id)
        result.job_id, result.error_code, result.message = (info.job_id, info.error_code,
                                                             info.message)
        result.success = info.state == JobState.SUCCEEDED
        self.fill_result(result, info)
        if info.state == JobState.CANCELLED:
            goal_handle.canceled()
        elif result.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result


def job_progress_msg(info: JobInfo, stamp=None):
    """JobInfo -> nol_ros/msg/JobProgress."""
    m = JobProgress()
    if stamp is not None:
        m.header.stamp = stamp
    m.job_id, m.job_type, m.object_name = info.job_id, info.job_type, info.object_name
    m.state = int(info.state)
    m.stage, m.fraction, m.message = info.stage, float(info.fraction), info.message
    m.error_code = info.error_code
    return m


class JobNodeShutdown(ShutsDown):
    """Mixin for a node that runs its work on ``self.jobs`` (a JobManager): shutting the node
    down stops the job threads. Put it before rclpy's Node in the bases."""

    shutdown_attr = "jobs"


def attach_job_services(node, jobs: JobManager, callback_group=None) -> None:
    """Create ``~/get_job_status`` (nol_ros/srv/GetJobStatus; an empty id = the last job) and
    ``~/cancel_job`` (nol_ros/srv/CancelJob) on ``node`` for ``jobs``."""
    def on_status(req, resp):
        info = jobs.get(req.job_id)
        if info is None:
            resp.found, resp.error_code = False, "UNKNOWN_JOB"
            resp.message = f"no job '{req.job_id}'" if req.job_id else "no job yet"
            return resp
        resp.found = True
        resp.status = job_progress_msg(info, node.get_clock().now().to_msg())
        resp.result_path = info.result_path
        resp.error_code, resp.message = info.error_code, info.message
        return resp

    def on_cancel(req, resp):
        try:
            info = jobs.cancel(req.job_id)
            resp.success = True
            resp.message = ("cancelled" if info.state == JobState.CANCELLED
                            else "cancellation requested; stops at the next progress step")
        except NolError as e:
            resp.success, resp.error_code, resp.message = False, "UNKNOWN_JOB", str(e)
        return resp

    offer_service(node, GetJobStatus, "~/get_job_status", on_status, callback_group)
    offer_service(node, CancelJob, "~/cancel_job", on_cancel, callback_group)
