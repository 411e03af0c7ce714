"""view_selection node: register objects in a recorded sequence and pick their source views. The
work is nol_ros.services.selection; this node maps SelectViews onto it and publishes the result.

Services:
  ~/select_views (nol_ros/srv/SelectViews)   -> job id, or accepted=false + error code
  ~/get_job_status (nol_ros/srv/GetJobStatus), ~/cancel_job (nol_ros/srv/CancelJob)
Topics (latched: transient local, so RViz/Foxglove started later still get the last result):
  ~/selection (nol_ros/msg/ViewSelection)   one per selected object: T_world_object, coverage,
                                            and per view an ObjectPoseAnnotation (frame index,
                                            T_camera_object, full-size mono8 visible mask)
  ~/annotated_image (sensor_msgs/Image rgb8) one row per object: its selected frames with the
                                            visible mask tinted and outlined
  ~/progress (nol_ros/msg/JobProgress)

Paths in requests (mesh_paths, sequence_path) lie inside `data_root` (BAD_PATH otherwise, the
same reply whether outside or missing); `workspace` is a name inside `workspace_root`. Errors
refused at once: UNKNOWN_OBJECT, BAD_MESH ..., BAD_FILE, BAD_PATH, BAD_INPUT; an object that
cannot be registered is logged and left out. With `packages` (default) every selected object's
package -- what a workstation renders and trains from, nol_ros.handoff -- is written to
<workspace>/packages/NAME. All parameters are read-only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image

from nol_ros.datasets.bop import read_bop_scene
from nol_ros.errors import NolError
from nol_ros.jobs import JobInfo, JobState
from nol_ros.msg import JobProgress, ObjectPoseAnnotation, ViewSelection
from nol_ros.ros.clients import ServiceCaller, export_live_buffer
from nol_ros.ros.conversions import ns_to_stamp, numpy_to_image, pose_from_matrix
from nol_ros.ros.job_services import JobNodeShutdown, attach_job_services, job_progress_msg
from nol_ros.ros.params import declare_and_read
from nol_ros.ros.qos import latched_qos
from nol_ros.ros.runtime import log_to, offer_service, run_nodes
from nol_ros.services.selection import (
    SelectionConfig,
    SelectionResult,
    SelectionService,
    SelectRequest,
)
from nol_ros.srv import ExportSequence, SelectViews
from nol_ros.views.selection_io import annotated_image, load_selection

LATCHED = latched_qos(depth=20)  # the last 20 selections for a late subscriber
RANGES = {"max_queued": (0, 1000), "max_job_s": (0.0, 1e7), "export_timeout_s": (0.0, 86400.0),
          "image_tile_px": (16, 2048), "image_max_views": (1, 64),
          "package_keyframe_step": (1, 10000)}


class ViewSelectionNode(JobNodeShutdown, Node):
    def __init__(self, node_name: str = "view_selection", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.cfg: SelectionConfig = declare_and_read(self, SelectionConfig, "view_selection",
                                                     ranges=RANGES)
        self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
        self.selection_pub = self.create_publisher(ViewSelection, "~/selection", LATCHED)
        self.image_pub = self.create_publisher(Image, "~/annotated_image", LATCHED)
        self.exporter = ServiceCaller(self, ExportSequence,
                                      f"{self.cfg.reconstruction_node}/export_sequence",
                                      callback_group=ReentrantCallbackGroup())
        log = self.get_logger()
        self.service = SelectionService(self.cfg,
                                        lambda d, t: export_live_buffer(self.exporter, d, t),
                                        self._on_update, self._publish,
                                        log_to(log))
        self.jobs = self.service.jobs
        offer_service(self, SelectViews, "~/select_views", self._on_select)
        attach_job_services(self, self.jobs)
        log.info(f"view_selection ready ({len(self.cfg.objects.names)} configured objects, "
                 f"workspaces in {self.cfg.workspace_root}, inputs from {self.cfg.data_path})")

    def _on_update(self, info: JobInfo) -> None:
        if not self.context.ok():  # shutting down: the job was cancelled, nobody listens
            return
        self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
        if info.state == JobState.FAILED:
            self.get_logger().error(f"job {info.job_id} failed [{info.error_code}]: "
                                    f"{info.message}")

    def _on_select(self, req, resp):
        try:
            info = self.service.submit(SelectRequest(tuple(req.object_names),
                                                     tuple(req.mesh_paths), req.sequence_path,
                                                     req.workspace))
            resp.accepted, resp.job_id, resp.message = True, info.job_id, "queued"
        except NolError as e:
            resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
            self.get_logger().error(f"SelectViews refused [{e.code}]: {e}")
        return resp

    def _publish(self, res: SelectionResult) -> None:
        seq = read_bop_scene(res.sequence_path)
        cam = "camera"
        odo = Path(res.sequence_path) / "odometry.json"
        if odo.exists():
            cam = json.loads(odo.read_text()).get("child", cam) or cam
        by_id = {f.index: f for f in seq.frames}
        now = self.get_clock().now().to_msg()
        sels = [load_selection(res.workspace, n) for n in res.selected]
        for sel in sels:
            m = ViewSelection()
            m.header.stamp, m.header.frame_id = now, "map"
            m.object_name, m.object_id, m.workspace = sel.name, sel.obj_id, str(res.workspace)
            m.t_world_object = pose_from_matrix(sel.T_world_object)
            m.coverage, m.stop_reason = float(sel.coverage), sel.stop_reason
            for v in sel.views:
                a = ObjectPoseAnnotation()
                a.header.stamp = ns_to_stamp(by_id[v.frame].stamp_ns)
                a.header.frame_id = cam
                a.frame_index, a.object_id, a.object_name = v.frame, sel.obj_id, sel.name
                a.pose = pose_from_matrix(v.T_camera_object)
                mask = sel.mask(v.frame)
                if mask is not None:
                    a.mask = numpy_to_image(mask.astype("uint8") * 255, "mono8",
                                            a.header.stamp, cam)
                a.visible_fraction = float(v.visib_fract)
                m.views.append(a)
            self.selection_pub.publish(m)
        img = annotated_image(by_id, sels, self.cfg.image_tile_px, self.cfg.image_max_views)
        self.image_pub.publish(numpy_to_image(img, "rgb8", now, "map"))


def main(argv: list[str] | None = None) -> int:
    return run_nodes([ViewSelectionNode], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
