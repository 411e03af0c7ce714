"""The job services every job-running node offers (status, cancel) and the progress message."""

from __future__ import annotations

from nol_ros.errors import NolError
from nol_ros.jobs import JobInfo, JobManager, JobState


def job_progress_msg(info: JobInfo, stamp=None):
    """JobInfo -> nol_ros/msg/JobProgress."""
    from nol_ros.msg import JobProgress

    m = JobProgress()
    if stamp is not None:
        m.header.stamp = stamp
    m.job_id, m.job_type, m.object_name = info.job_id, info.job_type, info.object_name
    m.state = int(info.state)
    m.stage, m.fraction, m.message = info.stage, float(info.fraction), info.message
    m.error_code = info.error_code
    return m


class JobNodeShutdown:
    """Mixin for a node that runs its work on ``self.jobs`` (a JobManager): the runtime's
    prepare_shutdown and destroy_node stop the job threads (also when __init__ failed before
    ``jobs`` existed). Put it before rclpy's Node in the bases."""

    def prepare_shutdown(self):
        if getattr(self, "jobs", None) is not None:
            self.jobs.shutdown()

    def destroy_node(self):
        self.prepare_shutdown()
        return super().destroy_node()


def attach_job_services(node, jobs: JobManager, callback_group=None) -> None:
    """Create ``~/get_job_status`` (nol_ros/srv/GetJobStatus; an empty id = the last job) and
    ``~/cancel_job`` (nol_ros/srv/CancelJob) on ``node`` for ``jobs``."""
    from nol_ros.srv import CancelJob, GetJobStatus

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

    node.create_service(GetJobStatus, "~/get_job_status", on_status,
                        callback_group=callback_group)
    node.create_service(CancelJob, "~/cancel_job", on_cancel, callback_group=callback_group)
