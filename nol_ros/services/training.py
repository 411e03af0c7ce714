"""Training the recognisers as jobs: what the trainer node offers, without ROS.

A request names the objects (empty = every learnt object of the workspace root), a preset and
options; :meth:`TrainingService.submit` checks it (the errors a reply reports: NO_OBJECTS,
UNKNOWN_OBJECT, BAD_CONFIG, BAD_INPUT, BAD_PATH, QUEUE_FULL) and queues one stage of the one
training pipeline (:func:`nol_ros.recognition.pipeline.run_stage`) on the job manager. The
stage's result (what was trained or reused, where the models are) is kept per job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nol_ros.jobs import JobInfo, JobManager, JobState
from nol_ros.recognition.pipeline import STAGES, TrainConfig, run_stage, train_plan

JOB_TYPES = {"detector": "train_detector", "pose": "train_pose_estimator"}


@dataclass(frozen=True)
class TrainingConfig:
    device: str = "cpu"
    max_queued: int = 4
    max_job_s: float = 86400.0       # a training stage's time budget; then TIME_BUDGET (0: none)
    train: TrainConfig = field(default_factory=TrainConfig)


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


class TrainingService:
    """Stages of the training pipeline as jobs, one at a time (see the module doc).
    ``on_update(JobInfo)`` is called for every job state/progress change."""

    def __init__(self, cfg: TrainingConfig, device: str,
                 on_update: Callable[[JobInfo], None] | None = None):
        self.cfg, self.device = cfg, device
        self.jobs = JobManager(max_queued=cfg.max_queued, on_update=on_update, name="trainer",
                               max_job_s=cfg.max_job_s)
        self.results: dict[str, dict] = {}   # job id -> run_stage's result, once done
        self._lock = threading.Lock()

    def submit(self, stage: str, object_names=(), preset: str = "",
               options_yaml: str = "") -> tuple[JobInfo, str]:
        """Check and queue one stage; returns the job and a one-line description ("queued:
        ..." or "running: ..."). Raises the NolError the reply reports."""
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r}")
        plan = train_plan(self.cfg.train, list(object_names), preset, options_yaml)

        def run(progress):
            # the objects may have been learnt again since the request: plan again
            p = train_plan(self.cfg.train, plan.names, plan.preset.name, options_yaml)
            res = run_stage(p, stage, self.device, progress.report)
            with self._lock:
                self.results[progress.job_id] = res
            # absolute: other hosts fetch it by this path (a transfer node's fetch)
            return str(Path(res["models_dir"] or res["work_dir"]).resolve())

        info = self.jobs.submit(JOB_TYPES[stage], run,
                                plan.names[0] if len(plan.names) == 1 else "")
        state = self.jobs.get(info.job_id).state
        return info, (f"{'queued' if state == JobState.QUEUED else 'running'}: {stage} stage "
                      f"for {', '.join(plan.names)} (preset {plan.preset.name}) in "
                      f"{plan.work_dir}")

    def result(self, job_id: str) -> dict | None:
        with self._lock:
            return self.results.get(job_id)

    def shutdown(self) -> None:
        self.jobs.shutdown()
