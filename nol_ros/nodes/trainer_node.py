"""trainer node: train the recognisers (2D detector, 6D pose estimator) on learnt objects, as jobs.

Services (answer at once with a job id; the work runs on the job worker thread):
  ~/train_detector (nol_ros/srv/TrainDetector)          -> job id, or accepted=false + code
  ~/train_pose_estimator (nol_ros/srv/TrainPoseEstimator)
  ~/get_job_status (nol_ros/srv/GetJobStatus), ~/cancel_job (nol_ros/srv/CancelJob)
Topic:
  ~/progress (nol_ros/msg/JobProgress): every state/progress change (stage, job fraction 0..1)

The work is nol_ros.services.training (one stage of the one training pipeline per request, in
ROOT/_training/PRESET_NAMES/; whichever stage completes the pair writes the models folder
`train.models_dir`, default ROOT/_models, swapped in whole; a stage already trained for the
same objects, renders and configuration is reused at once). Objects: the learnt objects of
`train.workspace_root`; empty object_names = all. preset: tiny | demo | cpu | paper (empty =
`train.preset`). options_yaml: `detector.epochs: 4`, `pose.steps: 200`, `detset.n_images`,
`recognizer.score_thresh`, `seed`, `max_seconds` (nol_ros.recognition.pipeline.train_plan).
Refusals (accepted=false): NO_OBJECTS, UNKNOWN_OBJECT, BAD_CONFIG, BAD_INPUT, BAD_PATH,
QUEUE_FULL. All parameters are read-only (set them at start).
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from nol_ros.errors import NolError
from nol_ros.jobs import JobInfo, JobState
from nol_ros.msg import JobProgress
from nol_ros.ros.job_services import JobNodeShutdown, attach_job_services, job_progress_msg
from nol_ros.ros.params import declare_and_read
from nol_ros.ros.runtime import device_for, offer_service, run_nodes
from nol_ros.services.training import TrainingConfig, TrainingService, result_message
from nol_ros.srv import TrainDetector, TrainPoseEstimator

RANGES = {"max_queued": (0, 1000), "max_job_s": (0.0, 1e7), "train.max_seconds": (0.0, 1e7)}


class TrainerNode(JobNodeShutdown, Node):
    def __init__(self, node_name: str = "trainer", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.cfg: TrainingConfig = declare_and_read(self, TrainingConfig, "trainer",
                                                    ranges=RANGES)
        device = device_for(self, self.cfg.device)
        self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
        self.service = TrainingService(self.cfg, device, self._on_update)
        self.jobs = self.service.jobs
        offer_service(self, TrainDetector, "~/train_detector",
                      lambda q, r: self._on_train("detector", q, r))
        offer_service(self, TrainPoseEstimator, "~/train_pose_estimator",
                      lambda q, r: self._on_train("pose", q, r))
        attach_job_services(self, self.jobs)
        t = self.cfg.train
        self.get_logger().info(f"trainer ready (device {device}, learnt objects in "
                               f"{t.workspace_root}, models -> {t.models_path}, preset "
                               f"{t.preset})")

    def _on_update(self, info: JobInfo) -> None:
        if not self.context.ok():
            return
        self.progress_pub.publish(job_progress_msg(info, self.get_clock().now().to_msg()))
        if info.state == JobState.FAILED:
            self.get_logger().error(f"job {info.job_id} failed [{info.error_code}]: "
                                    f"{info.message}")
        elif info.state == JobState.SUCCEEDED:
            res = self.service.result(info.job_id)
            self.get_logger().info(f"job {info.job_id} done: "
                                   f"{result_message(res) if res else info.result_path}")

    def _on_train(self, stage, req, resp):
        try:
            info, resp.message = self.service.submit(stage, req.object_names, req.preset,
                                                     req.options_yaml)
            resp.accepted, resp.job_id = True, info.job_id
        except NolError as e:
            resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
            srv = "TrainDetector" if stage == "detector" else "TrainPoseEstimator"
            self.get_logger().error(f"{srv} refused [{e.code}]: {e}")
        return resp


def main(argv: list[str] | None = None) -> int:
    return run_nodes([TrainerNode], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
