"""trainer node: train the recognisers (2D detector, 6D pose estimator) on learnt objects, as jobs.

Services (answer at once with a job id; the work runs on the job worker thread):
  ~/train_detector (nol_ros/srv/TrainDetector)          -> job id, or accepted=false + code
  ~/train_pose_estimator (nol_ros/srv/TrainPoseEstimator)
  ~/get_job_status (nol_ros/srv/GetJobStatus), ~/cancel_job (nol_ros/srv/CancelJob)
Topic:
  ~/progress (nol_ros/msg/JobProgress): every state/progress change (stage, job fraction 0..1)

Objects: the learnt objects of `train.workspace_root` (what the nol node's LearnObject wrote:
ROOT/NAME/renders/, the object's training set rendered by NOL or its IBR baseline); a request's
empty object_names means all of them. preset: tiny | demo | cpu | paper (empty = `train.preset`).
options_yaml overrides the preset: `detector.epochs: 4`, `pose.steps: 200`, `detset.n_images`,
`recognizer.score_thresh`, `seed`, `max_seconds` (see nol_ros.recognition.pipeline.train_plan).

How the two services map onto the recognition pipeline (nol_ros.recognition.pipeline trains a
detector and a pose network for one object set into one models folder):
  - one work folder per (object set, preset): ROOT/_training/PRESET_NAME1+NAME2/;
  - TrainDetector runs the detector stage there (detector set pasted from the objects' renders
    + the detector), TrainPoseEstimator the pose stage (crops of the renders + the pose net);
  - whichever of the two completes the pair writes the models folder `train.models_dir`
    (default ROOT/_models/, what the recognizer node loads by default; swapped in whole, so a
    recogniser never reads a half-written folder). Until then the job's result says which
    stage is still missing. A stage already trained for the same objects, renders and
    configuration is reused at once; an interrupted (cancelled) one resumes from its last
    checkpoint; re-learnt objects (new renders) are trained afresh.
  So `TrainDetector` + `TrainPoseEstimator` with the same objects and preset, in any order,
  give one models folder; training only the detector again (e.g. more epochs) keeps the pose
  network.

Errors before queueing (reply accepted=false): NO_OBJECTS (nothing learnt), UNKNOWN_OBJECT,
BAD_CONFIG (preset, options_yaml), BAD_INPUT (repeated names), QUEUE_FULL. Queue policy: the
nol node's (nol_ros.jobs): one job at a time per node and device, in order, up to `max_queued`
waiting; a second request while one runs is QUEUED.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

from nol_ros.errors import NolError
from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.recognition.pipeline import TrainConfig, run_stage, train_plan


@dataclass(frozen=True)
class TrainerNodeConfig:
    device: str = "cpu"
    max_queued: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)


JOB_TYPES = {"detector": "train_detector", "pose": "train_pose_estimator"}


def result_message(res: dict) -> str:
    """One line for a finished stage (what was trained, where the models are)."""
    what = "detector" if res["stage"] == "detector" else "pose estimator"
    how = "reused (already trained)" if res.get("reused") else (
        f"trained: {res.get('steps', 0)} steps, loss {res.get('loss') or 0:.3f}")
    if res.get("models_dir"):
        tail = f"models folder {res['models_dir']}"
    else:
        other = "TrainPoseEstimator" if res["stage"] == "detector" else "TrainDetector"
        tail = (f"the models folder is written once {other} ran for the same objects and "
                f"preset ({res['preset']})")
    took = f" in {res['seconds']:.0f} s ({res['cpu_seconds']:.0f} CPU-s)" if "seconds" in res \
        else ""
    return f"{what} of {', '.join(res['objects'])} {how}{took}; {tail}"


def make_node(node_name: str = "trainer", **node_kwargs):
    from rclpy.node import Node

    from nol_ros.learn import resolve_device
    from nol_ros.msg import JobProgress
    from nol_ros.ros.job_services import JobNodeShutdown, attach_job_services, job_progress_msg
    from nol_ros.ros.params import declare_and_read
    from nol_ros.srv import TrainDetector, TrainPoseEstimator

    class TrainerNode(JobNodeShutdown, Node):
        def __init__(self):
            super().__init__(node_name, **node_kwargs)
            self.cfg: TrainerNodeConfig = declare_and_read(self, TrainerNodeConfig)
            self.device = resolve_device(self.cfg.device)
            if self.device != self.cfg.device:
                self.get_logger().warning(f"device '{self.cfg.device}' is not available: "
                                          f"running on {self.device}")
            self.progress_pub = self.create_publisher(JobProgress, "~/progress", 10)
            self.jobs = JobManager(max_queued=self.cfg.max_queued, on_update=self._on_update,
                                   name="trainer")
            self.results: dict[str, dict] = {}   # job id -> run_stage's result
            self._lock = threading.RLock()
            self.create_service(TrainDetector, "~/train_detector",
                                lambda q, r: self._on_train("detector", q, r))
            self.create_service(TrainPoseEstimator, "~/train_pose_estimator",
                                lambda q, r: self._on_train("pose", q, r))
            attach_job_services(self, self.jobs)
            t = self.cfg.train
            self.get_logger().info(f"trainer ready (device {self.device}, learnt objects in "
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
                with self._lock:  # (held by _on_train until the job is registered)
                    res = self.results.get(info.job_id, {}).get("result")
                self.get_logger().info(f"job {info.job_id} done: "
                                       f"{result_message(res) if res else info.result_path}")

        def _on_train(self, stage, req, resp):
            srv = "TrainDetector" if stage == "detector" else "TrainPoseEstimator"
            try:
                plan = train_plan(self.cfg.train, list(req.object_names), req.preset,
                                  req.options_yaml)
                holder: dict = {}

                def run(progress):
                    # the objects may have been learnt again since the request: plan again
                    p = train_plan(self.cfg.train, plan.names, plan.preset.name,
                                   req.options_yaml)
                    holder["result"] = run_stage(p, stage, self.device, progress.report)
                    return holder["result"]["models_dir"] or holder["result"]["work_dir"]

                with self._lock:
                    info = self.jobs.submit(JOB_TYPES[stage], run,
                                            plan.names[0] if len(plan.names) == 1 else "")
                    self.results[info.job_id] = holder
                resp.accepted, resp.job_id = True, info.job_id
                state = self.jobs.get(info.job_id).state
                resp.message = (f"{'queued' if state == JobState.QUEUED else 'running'}: "
                                f"{stage} stage for {', '.join(plan.names)} (preset "
                                f"{plan.preset.name}) in {plan.work_dir}")
            except NolError as e:
                resp.accepted, resp.error_code, resp.message = False, e.code, str(e)
                self.get_logger().error(f"{srv} refused [{e.code}]: {e}")
            return resp

    return TrainerNode()


def main(argv: list[str] | None = None) -> int:
    from nol_ros.ros.runtime import run_nodes

    return run_nodes([make_node], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())
