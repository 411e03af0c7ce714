"""nol node: learn objects (self-annotation -> views -> rendered training set) as jobs
(~/learn_object, the ~/learn action, ~/get_job_status, ~/cancel_job, ~/progress) and render
learnt objects on request (~/render_views). The work is nol_ros.services.learning; this node maps
requests onto it and results back. Request paths are confined to `data_root`; one job runs at a
time, `max_queued` wait. Source 3 (SOURCE_WORKSPACE): an object self-annotated on another
host (a package fetched by the transfer node) is only rendered. Topics, services and
parameters: docs/ros_api.md.
"""

from __future__ import annotations

import sys
import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from nol_ros.action import Learn
from nol_ros.errors import NolError
from nol_ros.jobs import JobInfo, JobState
from nol_ros.msg import JobProgress
from nol_ros.ros.clients import ServiceCaller, export_live_buffer
from nol_ros.ros.conversions import poses_from_msgs, views_to_response
from nol_ros.ros.job_services import (
    JobGoals,
    JobNodeShutdown,
    attach_job_services,
    job_progress_msg,
    reply_failure,
)
from nol_ros.ros.params import declare_and_read, watch_dynamic
from nol_ros.ros.runtime import device_for, log_to, offer_service, run_nodes, wall_timer
from nol_ros.services.learning import (
    LearningConfig,
    LearningService,
    LearnRequest,
    RenderViewsService,
)
from nol_ros.srv import ExportSequence, LearnObject, RenderViews
from nol_ros.streaming.messages import camera_info_to_intrinsics

DYNAMIC = ("render_views.idle_release_s", "render_views.max_poses", "render_views.max_pixels",
           "render_views.max_request_pixels")
RANGES = {"max_queued": (0, 1000), "max_job_s": (0.0, 1e7), "export_timeout_s": (0.0, 86400.0),
          "render_views.idle_release_s": (0.0, 86400.0), "render_views.max_poses": (1, 4096),
          "render_views.max_pixels": (1, 100_000_000),
          "render_views.max_request_pixels": (1, 1_000_000_000),
          "render_views.cache_objects": (1, 64)}


class NolNode(JobNodeShutdown, Node):
    def __init__(self, node_name: str = "nol", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.cfg: LearningConfig = declare_and_read(self, LearningConfig, "nol", DYNAMIC, RANGES)
        self.device, log = device_for(self, self.cfg.device), self.get_logger()
        group = ReentrantCallbackGroup()
        self.exporter = ServiceCaller(self, ExportSequence,
                                      f"{self.cfg.reconstruction_node}/export_sequence",
                                      callback_group=group)
        self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
        self.learning = LearningService(
            self.cfg, self.device, lambda d, t: export_live_buffer(self.exporter, d, t),
            self._on_update, log_to(self.get_logger()))
        self.views = RenderViewsService(self.cfg, self.device, log_to(self.get_logger()))
        self.jobs, self.renderers = self.learning.jobs, self.views.renderers
        self.goals = JobGoals(Learn, self.jobs, lambda q: self.learning.submit(self._request(q)),
                              lambda res, info: setattr(res, "workspace_path", info.result_path),
                              log)
        offer_service(self, LearnObject, "~/learn_object", self._on_learn)
        attach_job_services(self, self.jobs)
        self._action = ActionServer(self, Learn, "~/learn", execute_callback=self.goals.execute,
                                    goal_callback=lambda g: GoalResponse.ACCEPT,
                                    cancel_callback=lambda g: CancelResponse.ACCEPT,
                                    callback_group=group)
        offer_service(self, RenderViews, "~/render_views", self._on_render_views,
                      MutuallyExclusiveCallbackGroup())
        idle = self.cfg.render_views.idle_release_s
        wall_timer(self, max(0.5, min(5.0, idle / 4)), self._on_idle_timer,
                   MutuallyExclusiveCallbackGroup())
        watch_dynamic(self, lambda: self.cfg, self._reconfigure)
        r = self.cfg.learn.render
        log.info(f"nol node ready (device {self.device}, workspace "
                 f"{self.cfg.learn.workspace_root}, inputs from {self.cfg.data_path}, live "
                 f"buffer from {self.exporter.resolved_name}; renders: "
                 f"{'method ' + r.method + ', preset ' + r.preset if r.enabled else 'off'})")

    def _reconfigure(self, cfg: LearningConfig, changed: set[str]) -> None:
        self.cfg = self.learning.cfg = self.views.cfg = cfg
        self.renderers.idle_s = cfg.render_views.idle_release_s
        self.get_logger().info(f"parameters changed: {sorted(changed)}")

    # -- jobs --------------------------------------------------------------------------------
    def _on_update(self, info: JobInfo) -> None:
        if not self.context.ok():  # shutting down: the job was cancelled, nobody listens
            return
        self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
        if info.state == JobState.FAILED:
            self.get_logger().error(f"job {info.job_id} ({info.object_name}) failed "
                                    f"[{info.error_code}]: {info.message}")
        elif info.state == JobState.SUCCEEDED:
            self.get_logger().info(f"job {info.job_id} ({info.object_name}) done: "
                                   f"{info.result_path}")
        self.goals.on_update(info)

    @staticmethod
    def _request(req) -> LearnRequest:
        return LearnRequest(req.object_name, req.mesh_path, int(req.source), req.source_path,
                            req.options_yaml)

    def _on_learn(self, req, resp):
        try:
            info = self.learning.submit(self._request(req))
            resp.accepted, resp.job_id = True, info.job_id
            resp.message = ("queued" if self.jobs.get(info.job_id).state == JobState.QUEUED
                            else "running")
        except NolError as e:
            resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
            self.get_logger().error(f"LearnObject '{req.object_name}' refused [{e.code}]: {e}")
        return resp

    # -- RenderViews -------------------------------------------------------------------------
    def _on_idle_timer(self):
        n = self.views.release_idle()
        if n:
            self.get_logger().info(f"RenderViews: released {n} renderer(s) after "
                                   f"{self.cfg.render_views.idle_release_s:.0f} s idle")

    def _on_render_views(self, req, resp):
        t0 = time.perf_counter()
        name = req.object_name
        try:
            intr = camera_info_to_intrinsics(req.camera_info)
            rgb, mask = self.views.render(name, poses_from_msgs(req.poses), intr,
                                          bool(req.refine))
            views_to_response(resp, rgb, mask, self.get_clock().now().to_msg(),
                              req.camera_info.header.frame_id)
            resp.message = (f"{len(rgb)} view(s) of {name} at {intr.width}x{intr.height} in "
                            f"{time.perf_counter() - t0:.2f} s")
        except Exception as e:  # a renderer bug must not take the node down either
            reply_failure(self.get_logger(), resp, f"RenderViews '{name}' failed", e)
        return resp


def main(argv: list[str] | None = None) -> int:
    return run_nodes([NolNode], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
