"""What a renderer costs per render against the blending baseline, and a 1296-view hemisphere.

``--method`` (default: what LearnObject's "auto" resolves to, nol_ros.nol.renderer.
default_method) against ``ibr_angle``. One real scanned object (``--object`` under
``--objects``, placed in a cluttered synthetic scene as in bench/bench_nol_real.py) with 6
annotated sources at 1 cm / 3 deg. Both renderers are prepared the way LearnObject prepares
them (nol_ros.nol.renderer.prepare_renderer with learn.RenderStageConfig(method).
object_renderer_config(); the per-object refinement, fine-tuning (nol) and surface fit (fit)
are timed separately), then render full 640 x 480 Xtion views of the object at 0.5-1.0 m,
one per call as RenderViews does:

* time: the two methods alternate target by target in ONE process (the machine is shared;
  the ratio of the medians is the robust figure); the load average is recorded;
* memory: each method in its own child process; the peak RSS of the render phase minus the
  RSS before it (after imports, scene, sources, network and preparation), and the absolute
  peak RSS (the CPU build of torch, open3d and OpenCV alone take ~700 MB here);
* ``--hemisphere``: the paper's pose grid (72 x 18 = 1296 views, 256 px crops, 0.7 m) rendered
  by the prepared renderer in batches of 16 as write_render_set does (in-plane rotations
  are image warps there and are not rendered), preparation included.

    .venv/bin/python bench/bench_nol_cost.py [--method fit] [--targets 12] [--hemisphere] \
        [--out /tmp/nol_cost]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OBJECTS = ROOT.parent / "shared" / "realdata" / "ycb_real_textures"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(a):
    from nol_ros.datasets.scanned import load_textured_objects
    from nol_ros.learn import RenderStageConfig
    from nol_ros.nol.evaluate import annotated_sources, make_scene_case
    from nol_ros.nol.network import load_checkpoint
    from nol_ros.nol.renderer import SHIPPED_MODEL

    mesh = load_textured_objects(a.objects)[a.object]
    case = make_scene_case(mesh, seed=a.seed, n_targets=1, name=a.object)
    src = annotated_sources(case, 0.01, 3.0, seed=a.seed)
    net = load_checkpoint(a.checkpoint or SHIPPED_MODEL, "cpu")[0] if "nol" in (
        a.method, a.child) else None
    return case, src, net, RenderStageConfig(method=a.method).object_renderer_config()


def _targets(case, n: int, seed: int) -> np.ndarray:
    from nol_ros.nol.evaluate import _view

    rng = np.random.default_rng(seed)
    return np.stack([_view(rng.uniform(0, 2 * np.pi), rng.uniform(10, 60), rng.uniform(0.5, 1.0))
                     for _ in range(n)])


def child(a) -> dict:
    """One method in this process: prepare, then render the targets; memory figures."""
    import dataclasses

    from nol_ros.camera import SMOT_XTION
    from nol_ros.nol.renderer import prepare_renderer

    torch.set_num_threads(a.threads)
    case, src, net, cfg = _setup(a)
    cfg = dataclasses.replace(cfg, render=dataclasses.replace(cfg.render, method=a.child))
    t0 = time.perf_counter()
    r, info = prepare_renderer(case.mesh, src, net, cfg)
    t_prep = time.perf_counter() - t0
    Ts = _targets(case, a.targets, a.seed)
    import gc

    gc.collect()
    before = _rss_mb()
    for T in Ts:
        r.render(T[None], SMOT_XTION)
    return {"method": a.child, "rss_before_render_mb": before, "peak_mb": _peak_mb(),
            "render_increment_mb": _peak_mb() - before, "prepare_s": t_prep,
            "refine_s": info["refine"]["seconds"],
            "finetune_s": (info.get("finetune") or {}).get("seconds", 0.0),
            "fit_s": (info.get("fit") or {}).get("seconds", 0.0)}


def timing(a) -> dict:
    import dataclasses

    from nol_ros.camera import SMOT_XTION
    from nol_ros.nol.renderer import NolRenderer, prepare_renderer

    torch.set_num_threads(a.threads)
    case, src, net, cfg = _setup(a)
    load0 = os.getloadavg()[0]
    r_m, info = prepare_renderer(case.mesh, src, net, cfg)
    r_ibr = NolRenderer(case.mesh, list(r_m.full), None,
                        dataclasses.replace(cfg.render, method="ibr_angle"))
    Ts = _targets(case, a.targets, a.seed)
    for r in (r_m, r_ibr):
        r.render(Ts[:1], SMOT_XTION)   # warm-up
    t = {a.method: [], "ibr_angle": []}
    for T in Ts:
        for name, r in ((a.method, r_m), ("ibr_angle", r_ibr)):
            t0 = time.perf_counter()
            r.render(T[None], SMOT_XTION)
            t[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in t.items()}
    return {"method": a.method, "s_per_render_median": med,
            "ratio_to_ibr": med[a.method] / med["ibr_angle"],
            "s_per_render_min": {k: float(np.min(v)) for k, v in t.items()},
            "targets": len(Ts), "prepare": {k: (info.get(k) or {}).get("seconds", 0.0)
                                            for k in ("refine", "finetune", "fit")},
            "load": [load0, os.getloadavg()[0]]}


def hemisphere(a) -> dict:
    from nol_ros.nol.renderer import prepare_renderer
    from nol_ros.recognition.poses import (
        PoseGridConfig,
        bbox_centre,
        bounding_radius,
        crop_intrinsics,
        hemisphere_poses,
    )

    torch.set_num_threads(a.threads)
    case, src, net, cfg = _setup(a)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    r, info = prepare_renderer(case.mesh, src, net, cfg)
    t_prep = time.perf_counter() - t0
    g = PoseGridConfig()
    Ts = hemisphere_poses(bbox_centre(case.mesh.vertices), g)
    intr = crop_intrinsics(bounding_radius(case.mesh.vertices), g.distance_m, g.crop_size,
                           margin=g.margin)
    t1 = time.perf_counter()
    for i in range(0, len(Ts), 16):
        r.render(Ts[i:i + 16], intr)
    t_render = time.perf_counter() - t1
    return {"views": len(Ts), "crop": g.crop_size, "prepare_s": t_prep, "render_s": t_render,
            "total_s": t_prep + t_render, "s_per_view": t_render / len(Ts),
            "load": [load0, os.getloadavg()[0]], "peak_mb": _peak_mb()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", default=str(DEFAULT_OBJECTS))
    ap.add_argument("--object", default="008_pudding_box")
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--method", default="", help="renderer against ibr_angle (default: what "
                    "auto resolves to)")
    ap.add_argument("--targets", type=int, default=12)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hemisphere", action="store_true")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="build/bench/nol_cost")
    a = ap.parse_args(argv)
    if not a.method:
        from nol_ros.nol.renderer import default_method

        a.method = str(default_method())
    if a.child:
        print(json.dumps(child(a)))
        return 0
    res = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
           "method": a.method, "object": a.object, "threads": a.threads, "timing": timing(a),
           "memory": {}}
    print(json.dumps(res["timing"], indent=1), flush=True)
    for m in ("ibr_angle", a.method):
        cmd = [sys.executable, __file__, "--child", m, "--method", a.method, "--objects",
               a.objects, "--object",
               a.object, "--targets", str(a.targets), "--seed", str(a.seed), "--threads",
               str(a.threads)] + (["--checkpoint", a.checkpoint] if a.checkpoint else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        res["memory"][m] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(res["memory"][m]), flush=True)
    if a.hemisphere:
        res["hemisphere"] = hemisphere(a)
        print(json.dumps(res["hemisphere"]), flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "cost.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
