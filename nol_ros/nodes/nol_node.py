"""nol node: learn objects (self-annotation -> views -> NOL renders) as jobs.

Services (all answer at once; long work runs on the job worker thread, one job at a time):
  ~/learn_object (nol_ros/srv/LearnObject)      -> job id, or accepted=false + error code
  ~/get_job_status (nol_ros/srv/GetJobStatus)   -> state, stage, fraction, result path
  ~/cancel_job (nol_ros/srv/CancelJob)
Action:
  ~/learn (nol_ros/action/Learn): the same job with feedback and cancellation.
Topic:
  ~/progress (nol_ros/msg/JobProgress): every state/progress change of every job.
Queue policy: see nol_ros.jobs (FIFO, max_queued waiting jobs, QUEUE_FULL beyond).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

from nol_ros.errors import NolError
from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.learn import LearnConfig, learn_object


@dataclass(frozen=True)
class NolNodeConfig:
    device: str = "cpu"
    max_queued: int = 4
    learn: LearnConfig = field(default_factory=LearnConfig)


def job_progress_msg(info: JobInfo, stamp=None):
    from nol_ros.msg import JobProgress

    m = JobProgress()
    if stamp is not None:
        m.header.stamp = stamp
    m.job_id, m.job_type, m.object_name = info.job_id, info.job_type, info.object_name
    m.state = int(info.state)
    m.stage, m.fraction, m.message = info.stage, float(info.fraction), info.message
    m.error_code = info.error_code
    return m


def make_node(node_name: str = "nol", **node_kwargs):
    from rclpy.action import ActionServer, CancelResponse, GoalResponse
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.node import Node

    from nol_ros.action import Learn
    from nol_ros.msg import JobProgress
    from nol_ros.ros.params import declare_and_read
    from nol_ros.srv import CancelJob, GetJobStatus, LearnObject

    class NolNode(Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: NolNodeConfig = declare_and_read(self, NolNodeConfig)
            self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
            self.jobs = JobManager(max_queued=self.cfg.max_queued, on_update=self._on_update,
                                   name="nol")
            self._waiters: dict[str, list] = {}
            self._lock = threading.Lock()
            group = ReentrantCallbackGroup()
            self.create_service(LearnObject, "~/learn_object", self._on_learn)
            self.create_service(GetJobStatus, "~/get_job_status", self._on_status)
            self.create_service(CancelJob, "~/cancel_job", self._on_cancel)
            self._action = ActionServer(
                self, Learn, "~/learn", execute_callback=self._execute_goal,
                goal_callback=lambda g: GoalResponse.ACCEPT,
                cancel_callback=lambda g: CancelResponse.ACCEPT, callback_group=group)
            self.get_logger().info(f"nol node ready (device {self.cfg.device}, workspace "
                                   f"{self.cfg.learn.workspace_root})")

        # -- jobs ------------------------------------------------------------------------------
        def _on_update(self, info: JobInfo) -> None:
            self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
            with self._lock:
                for cb in self._waiters.get(info.job_id, []):
                    cb(info)

        def _submit_learn(self, req):
            cfg = self.cfg.learn
            name, mesh, source, path = req.object_name, req.mesh_path, req.source, req.source_path

            def run(progress):
                return learn_object(name, mesh, source, path, cfg, progress.report)

            return self.jobs.submit("learn_object", run, name)

        def _on_learn(self, req, resp):
            try:
                if not req.object_name:
                    raise NolError("object_name is empty; name the object to learn")
                info = self._submit_learn(req)
                resp.accepted, resp.job_id, resp.message = True, info.job_id, "queued"
            except NolError as e:
                resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
                self.get_logger().error(f"LearnObject refused [{e.code}]: {e}")
            return resp

        def _on_status(self, req, resp):
            info = self.jobs.get(req.job_id)
            if info is None:
                resp.found, resp.error_code = False, "UNKNOWN_JOB"
                resp.message = f"no job '{req.job_id}'" if req.job_id else "no job yet"
                return resp
            resp.found = True
            resp.status = job_progress_msg(info, self.get_clock().now().to_msg())
            resp.result_path = info.result_path
            resp.error_code, resp.message = info.error_code, info.message
            return resp

        def _on_cancel(self, req, resp):
            try:
                info = self.jobs.cancel(req.job_id)
                resp.success = True
                resp.message = ("cancelled" if info.state == JobState.CANCELLED
                                else "cancellation requested; stops at the next progress step")
            except NolError as e:
                resp.success, resp.error_code, resp.message = False, "UNKNOWN_JOB", str(e)
            return resp

        # -- action ----------------------------------------------------------------------------
        def _execute_goal(self, goal_handle):
            result = Learn.Result()
            try:
                info = self._submit_learn(goal_handle.request)
            except NolError as e:
                goal_handle.abort()
                result.success, result.error_code, result.message = False, e.code, str(e)
                return result
            done = threading.Event()

            def on_update(i: JobInfo):
                fb = Learn.Feedback(job_id=i.job_id, stage=i.stage, fraction=float(i.fraction),
                                    message=i.message)
                goal_handle.publish_feedback(fb)
                if i.done:
                    done.set()

            with self._lock:
                self._waiters.setdefault(info.job_id, []).append(on_update)
            while not done.wait(0.2):
                if goal_handle.is_cancel_requested:
                    self.jobs.cancel(info.job_id)
            info = self.jobs.get(info.job_id)
            result.job_id, result.workspace_path = info.job_id, info.result_path
            result.error_code, result.message = info.error_code, info.message
            result.success = info.state == JobState.SUCCEEDED
            if info.state == JobState.CANCELLED:
                goal_handle.canceled()
            elif result.success:
                goal_handle.succeed()
            else:
                goal_handle.abort()
            return result

        def destroy_node(self):
            self.jobs.shutdown()
            return super().destroy_node()

    return NolNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
