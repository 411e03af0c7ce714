"""Does per-target refinement still pay after the per-object one? (the render stage's choice)

For held-out catalogue objects (nol_ros.nol.evaluate cases, 6 targets each) with source poses
moved by 5 mm / 1 deg and 1 cm / 3 deg: prepare the renderer as LearnObject does
(nol_ros.nol.renderer.prepare_renderer with learn.RenderStageConfig(method="nol"): per-object
refinement, masks re-derived, fine-tuning), then render every target without and with the
per-target refinement (se3, 25 iterations, early stop); masked PSNR and seconds per image.

    .venv/bin/python bench/bench_nol_refine_stack.py [--objects 1,3,4] [--checkpoint PATH]
"""

import argparse
import time

import torch

from nol_ros.datasets.synthetic.objects import make_object
from nol_ros.learn import RenderStageConfig
from nol_ros.nol.evaluate import evaluate_renderer, make_case, noisy_sources
from nol_ros.nol.network import load_checkpoint
from nol_ros.nol.renderer import SHIPPED_MODEL, RefineConfig, prepare_renderer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", default="1,3,4")
    ap.add_argument("--checkpoint", default=str(SHIPPED_MODEL))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    net, _ = load_checkpoint(a.checkpoint, "cpu")
    none = RefineConfig(method="none")
    cfg = RenderStageConfig(method="nol").object_renderer_config()
    print("| object | noise | per object | + per target | s/img | s/img with per target |")
    print("|---|---|---|---|---|---|")
    for oid in [int(x) for x in a.objects.split(",") if x]:
        case = make_case(make_object(oid, 0), seed=oid, n_targets=6)
        for li, (tm, rd) in enumerate(((0.005, 1.0), (0.01, 3.0))):
            src = noisy_sources(case.sources, tm, rd, seed=100 * oid + li + 1)
            r, _ = prepare_renderer(case.mesh, src, net, cfg)
            t0 = time.perf_counter()
            e0 = evaluate_renderer(r, case, none)
            t1 = time.perf_counter()
            e1 = evaluate_renderer(r, case, RefineConfig())
            t2 = time.perf_counter()
            n = len(case.T_targets)
            print(f"| {oid} | {tm * 1000:.0f} mm / {rd:.0f} deg | {e0['psnr']:.2f} | "
                  f"{e1['psnr']:.2f} | {(t1 - t0) / n:.2f} | {(t2 - t1) / n:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
