"""Worker of test_distributed.py: trains the three trainers on tiny problems, either as a plain
process (the single-process reference) or as one rank of ``torchrun --nproc_per_node 2``
(gloo), and writes the loss curves rank 0 saw to OUT/curves.json (checkpoints in OUT/RUN/).

    python test/_ddp_worker.py DATA OUT
    python -m torch.distributed.run --standalone --nproc_per_node 2 test/_ddp_worker.py DATA OUT

DATA holds ``det/`` (a COCO detection set) and ``render/`` (a render set with object 1), made by
the test. Runs: ``detector``, ``pose``, ``nol`` as the project trains them, and ``detector_nobn``,
``pose_nobn`` with every BatchNorm layer replaced by the identity: BatchNorm's statistics over a
rank's slice of the batch are the one intended difference between the two launches, so without
it the curves must agree to float precision. Every process uses one thread and fixed seeds.
"""

from __future__ import annotations

import contextlib
import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

# the NOL data of test_nol_training.py; 7 sets in windows of 3 samples: windows of 3, 3 and 1
# samples, so two ranks share windows unevenly and one rank has no sample in the last one
NOL_DATA = dict(crop_size=32, renders_per_set=4, min_crop_half=40, texture_px=128,
                background_px=96)


@contextlib.contextmanager
def no_batchnorm():
    real = torch.nn.BatchNorm2d
    torch.nn.BatchNorm2d = lambda c, *a, **k: torch.nn.Identity()
    try:
        yield
    finally:
        torch.nn.BatchNorm2d = real


def train_detector(data: Path, out: Path) -> list[float]:
    from nol_ros.recognition.detector import detector_config, train_detector

    cfg = detector_config("tiny", epochs=3)
    r = train_detector(data / "det" / "annotations.json", out, cfg, seed=3)
    return [h["loss"] for h in r["history"]]


def train_pose(data: Path, out: Path) -> list[float]:
    from nol_ros.datasets.synthetic.objects import make_object
    from nol_ros.recognition.posenet import posenet_config, train_posenet
    from nol_ros.recognition.trainset import load_pose_samples

    cfg = posenet_config("tiny", steps=50, ckpt_every=25)
    mesh = make_object(1, 0)
    samples = [load_pose_samples(data / "render" / "000001", 1, mesh, cfg.store_size,
                                 wide=cfg.wide)]
    r = train_posenet(samples, {1: mesh.vertices}, out, cfg, {1: mesh.name}, seed=1)
    return [h["loss"] for h in r["history"]]


def train_nol(data: Path, out: Path) -> list[float]:
    from nol_ros.nol.data import DataConfig
    from nol_ros.nol.train import TrainConfig, generate_sets, train

    cfg = TrainConfig(net_overrides={"crop_size": 32}, n_sets=7, epochs=2, accumulate=3,
                      data=DataConfig(**NOL_DATA), seed=2)
    train(cfg, out, sets=generate_sets(cfg), progress=False)
    with open(out / "log.csv") as f:
        return [float(r["total"]) for r in csv.DictReader(f)]


RUNS = {"detector": (train_detector, False), "detector_nobn": (train_detector, True),
        "pose": (train_pose, False), "pose_nobn": (train_pose, True), "nol": (train_nol, False)}


def main() -> int:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    from nol_ros import distributed

    curves = {}
    for name, (fn, nobn) in RUNS.items():
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        with no_batchnorm() if nobn else contextlib.nullcontext():
            curves[name] = fn(data, out / name)
    ctx = distributed.current()
    if ctx.is_main:
        (out / "curves.json").write_text(json.dumps(
            {"world_size": ctx.world_size, "backend": ctx.backend, "curves": curves}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
