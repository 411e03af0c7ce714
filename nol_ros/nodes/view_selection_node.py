"""view_selection node: register objects in a recorded sequence and pick their source views.

Given object meshes (the `objects.names` / `objects.mesh_paths` parameters, or the request) and
the reconstruction's output (its exported buffer, or any BOP scene folder), a job runs the
core chain :func:`nol_ros.selfannotate.run_self_annotation` (tracking with the live poses as
motion prior, TSDF, registration on the support plane, per-frame poses and masks, view
selection) into a workspace, then publishes what it found. Thin: no algorithm lives here.
With `packages` (default) every selected object's package -- what a workstation renders and
trains from, nol_ros.handoff -- is written to <workspace>/packages/NAME.

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

Errors: a request naming an object that is neither configured nor given a mesh is refused with
UNKNOWN_OBJECT; unreadable meshes (BAD_MESH, ...), a missing sequence folder (BAD_FILE) are
refused at once too. An object that cannot be registered is logged with its code and left out;
the job fails (with that code) only if no object could be selected. Jobs: one at a time, up to
`max_queued` waiting (nol_ros.jobs).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.catalog import ObjectCatalogConfig
from nol_ros.errors import FileFormatError, InputError, NolError
from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.selfannotate import SelfAnnotationConfig


@dataclass(frozen=True)
class ViewSelectionNodeConfig:
    workspace_root: str = "nol_workspace/view_selection"  # a job writes <root>/<job id>/
    reconstruction_node: str = "reconstruction"  # whose ~/export_sequence gives the live buffer
    live_export_dir: str = ""                     # "" = <workspace_root>/_live_buffer
    export_timeout_s: float = 120.0
    max_queued: int = 2
    image_tile_px: int = 160                      # height of one view in ~/annotated_image
    image_max_views: int = 8                      # views per object drawn
    packages: bool = True                         # write <ws>/packages/NAME for a workstation
    package_keyframe_step: int = 4                # (nol_ros.handoff): views + every n-th frame
    objects: ObjectCatalogConfig = field(default_factory=ObjectCatalogConfig)
    self_annotation: SelfAnnotationConfig = field(default_factory=SelfAnnotationConfig)


def resolve_objects(catalog: ObjectCatalogConfig, names, mesh_paths) -> list[tuple[str, str]]:
    """[(name, mesh)] of a SelectViews request (checked; raises the reply's NolError)."""
    from nol_ros.mesh import load_mesh

    names, mesh_paths = list(names), list(mesh_paths)
    if mesh_paths and len(mesh_paths) != len(names):
        raise InputError(f"{len(names)} object_names but {len(mesh_paths)} mesh_paths; give one "
                         "mesh per name, or none to use the objects.* parameters")
    if not names:
        names = list(catalog.names)
        if not names:
            raise InputError("no object named and no objects configured; pass object_names "
                             "(+ mesh_paths) or set the objects.names / objects.mesh_paths "
                             "parameters")
    if len(set(names)) != len(names):
        raise InputError(f"object_names {names} repeats a name")
    out = []
    for i, name in enumerate(names):
        if not name or "/" in name:
            raise InputError(f"object name '{name}' must be non-empty and contain no '/'")
        mesh = catalog.mesh_for(name, mesh_paths[i] if mesh_paths else "")
        if not Path(mesh).is_file():
            raise FileFormatError(f"{name}: mesh '{mesh}' does not exist or is not a file")
        load_mesh(mesh)
        out.append((name, mesh))
    return out


def make_node(node_name: str = "view_selection", **node_kwargs):
    from rclpy.callback_groups import ReentrantCallbackGroup
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from nol_ros.msg import JobProgress, ObjectPoseAnnotation, ViewSelection
    from nol_ros.ros.clients import ServiceCaller, export_live_buffer
    from nol_ros.ros.conversions import ns_to_stamp, numpy_to_image, pose_from_matrix
    from nol_ros.ros.job_services import JobNodeShutdown, attach_job_services, job_progress_msg
    from nol_ros.ros.params import declare_and_read
    from nol_ros.srv import ExportSequence, SelectViews

    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    class ViewSelectionNode(JobNodeShutdown, Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: ViewSelectionNodeConfig = declare_and_read(self, ViewSelectionNodeConfig)
            self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
            self.selection_pub = self.create_publisher(ViewSelection, "~/selection", latched)
            self.image_pub = self.create_publisher(Image, "~/annotated_image", latched)
            self.jobs = JobManager(max_queued=self.cfg.max_queued, on_update=self._on_update,
                                   name="view_selection")
            group = ReentrantCallbackGroup()
            self.exporter = ServiceCaller(self, ExportSequence,
                                          f"{self.cfg.reconstruction_node}/export_sequence",
                                          callback_group=group)
            self.create_service(SelectViews, "~/select_views", self._on_select)
            attach_job_services(self, self.jobs)
            self._lock = threading.Lock()
            self.get_logger().info(
                f"view_selection ready ({len(self.cfg.objects.names)} configured objects, "
                f"workspaces in {self.cfg.workspace_root})")

        def _on_update(self, info: JobInfo) -> None:
            if not self.context.ok():  # shutting down: the job was cancelled, nobody listens
                return
            self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
            if info.state == JobState.FAILED:
                self.get_logger().error(f"job {info.job_id} failed [{info.error_code}]: "
                                        f"{info.message}")

        # -- the job ---------------------------------------------------------------------------
        def _run(self, job_id: str, objects, sequence_path: str, workspace: str, progress):
            from nol_ros.datasets.bag_import import load_odometry
            from nol_ros.datasets.bop import read_bop_scene
            from nol_ros.selfannotate import ObjectSpec, run_self_annotation

            if not sequence_path:
                progress.report("export", 0.0, "exporting the live buffer")
                live = self.cfg.live_export_dir or str(Path(self.cfg.workspace_root)
                                                       / "_live_buffer")
                sequence_path = export_live_buffer(self.exporter,
                                                   str(Path(live).expanduser().resolve()),
                                                   self.cfg.export_timeout_s)
            seq = read_bop_scene(sequence_path)
            odom = load_odometry(sequence_path, len(seq.frames))
            ws = Path(workspace or Path(self.cfg.workspace_root) / job_id).expanduser().resolve()
            specs = [ObjectSpec(name=n, mesh_path=m, obj_id=i + 1)
                     for i, (n, m) in enumerate(objects)]
            report = run_self_annotation(seq, specs, ws, self.cfg.self_annotation,
                                         progress.report, T_odom_cameras=odom)
            good, errors = [], []
            for name, entry in report["objects"].items():
                if "error_code" in entry:
                    errors.append((name, entry["error_code"], entry["error"]))
                    self.get_logger().error(f"{name}: no selection [{entry['error_code']}]: "
                                            f"{entry['error']}")
                else:
                    good.append(name)
                if "warning" in entry:  # e.g. INSUFFICIENT_COVERAGE: selected, but say so
                    self.get_logger().warning(entry["warning"])
            if not good:
                name, code, msg = errors[0]
                err = NolError(f"no object could be selected; {name}: {msg}")
                err.code = code
                raise err
            if self.cfg.packages:  # what a workstation renders and trains from (nol_ros.handoff)
                from nol_ros.handoff import PACKAGES, pack_learnt_object

                for name in good:
                    progress.report("package", 1.0, f"{name}: writing its package")
                    pack_learnt_object(ws, name, sequence_path, ws / PACKAGES / name,
                                       self.cfg.package_keyframe_step)
            progress.report("publish", 1.0, f"publishing {len(good)} selections")
            self._publish(seq, sequence_path, ws, good)
            return str(ws)

        def _publish(self, seq, sequence_path: str, ws: Path, names: list[str]) -> None:
            import json

            from nol_ros.views.selection_io import annotated_image, load_selection

            cam = "camera"
            odo = Path(sequence_path) / "odometry.json"
            if odo.exists():
                cam = json.loads(odo.read_text()).get("child", cam) or cam
            world = "map"
            by_id = {f.index: f for f in seq.frames}
            now = self.get_clock().now().to_msg()
            sels = [load_selection(ws, n) for n in names]
            for sel in sels:
                m = ViewSelection()
                m.header.stamp, m.header.frame_id = now, world
                m.object_name, m.object_id, m.workspace = sel.name, sel.obj_id, str(ws)
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
            self.image_pub.publish(numpy_to_image(img, "rgb8", now, world))

        # -- services --------------------------------------------------------------------------
        def _on_select(self, req, resp):
            try:
                objects = resolve_objects(self.cfg.objects, req.object_names, req.mesh_paths)
                if req.sequence_path and not (Path(req.sequence_path)
                                              / "scene_camera.json").is_file():
                    raise FileFormatError(f"sequence_path '{req.sequence_path}' is not a BOP "
                                          "scene folder (no scene_camera.json); leave it empty "
                                          "to export the reconstruction node's buffer")
                seq_path, ws = req.sequence_path, req.workspace
                holder = {}

                def run(progress):
                    return self._run(holder["id"], objects, seq_path, ws, progress)

                with self._lock:
                    info = self.jobs.submit("select_views", run, ",".join(n for n, _ in objects))
                    holder["id"] = info.job_id
                resp.accepted, resp.job_id, resp.message = True, info.job_id, "queued"
            except NolError as e:
                resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
                self.get_logger().error(f"SelectViews refused [{e.code}]: {e}")
            return resp

    return ViewSelectionNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
