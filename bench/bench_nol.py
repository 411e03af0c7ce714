"""Evaluate the NOL renderer against the IBR baselines on held-out objects (issue 5).

For every held-out object (the synthetic world's catalogue: never produced by the training
generator) a case of nol_ros.nol.evaluate is built: 6 sources on a 35-45 deg circle, targets at
10-60 deg, ground truth = the clean render. Source poses get a fixed error (0, 5 mm / 1 deg,
1 cm / 3 deg, 2 cm / 5 deg). Methods: nol (the checkpoint), fit (the surface colour fitted to
the sources, nol_ros.nol.surface_fit), ibr_angle (a), ibr_mean (b), ibr_best (c).
Refinement: none; per object (se3 photometric bundle adjustment of the sources
on the full-resolution colour crops, once per object, with LearnObject's configuration
(learn.RenderStageConfig().object_renderer_config().refine_object); the refined poses serve
every method; no per-object fine-tuning here -- bench/bench_nol_real.py measures the whole
LearnObject path);
per target (the paper's Sec. 3.3 per image, se3, moving consensus); per object with the
reference code's Euler heuristic. Scores: masked PSNR / SSIM on the target silhouette, of the
images ``render`` returns (uint8, holes inpainted, then the checkpoint's restorer for nol;
nol_ros.nol.evaluate.evaluate_renderer).

    .venv/bin/python bench/bench_nol.py --checkpoint nol_ros/models/nol_cpu.pt --out /tmp/nol_bench

writes OUT/results.json, OUT/table.md (the tables for BENCHMARKS.md), OUT/noise_curve.png
(PSNR vs pose noise, like the paper's Fig. 6), OUT/grid.png (GT | sources | baseline | NOL |
NOL refined | NOL weights) and, with --timing, per-image times (cpu and paper presets), peak
memory and the time of a 1296-view hemisphere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nol_ros.datasets.synthetic.objects import CATALOGUE, make_object
from nol_ros.nol.evaluate import NOISE_LEVELS, evaluate_renderer, make_case, noisy_sources
from nol_ros.nol.network import load_checkpoint
from nol_ros.nol.renderer import NolRenderer, RefineConfig, RenderConfig


def learn_object_config():
    """What LearnObject's render stage runs (learn.RenderStageConfig, method nol)."""
    from nol_ros.learn import RenderStageConfig

    return RenderStageConfig(method="nol").object_renderer_config()


METHODS = ("nol", "fit", "ibr_angle", "ibr_mean", "ibr_best")
NONE = RefineConfig(method="none")
OBJ = learn_object_config().refine_object   # the "object" rows: LearnObject's refinement
TARGET = RefineConfig(max_iters=25, patience=6)   # a study, not what LearnObject runs
EULER = dataclasses.replace(OBJ, method="euler")


def _render(r: NolRenderer, T, intr, refine) -> np.ndarray:
    """What ``r.render`` does (restorer included), with the per-target refinement given."""
    return r.finish(r.render_detailed(T[None], intr, refine, cues=r.wants_cues))


def _renderer(case_mesh, sources, method, net):
    return NolRenderer(case_mesh, sources, net if method == "nol" else None,
                       RenderConfig(method=method))


def run(args) -> dict:
    net = None
    if args.checkpoint:
        net, extra = load_checkpoint(args.checkpoint, "cpu")
    methods = [m for m in METHODS if m != "nol" or net is not None]
    results: dict = {"checkpoint": args.checkpoint, "objects": {}, "noise_levels": NOISE_LEVELS}
    grid_rows = []
    for oid in args.objects:
        name = next(o.name for o in CATALOGUE if o.obj_id == oid)
        case = make_case(make_object(oid, 0), seed=oid, n_targets=args.targets, name=name)
        per_obj = results["objects"].setdefault(name, {})
        for li, (tm, rd) in enumerate(NOISE_LEVELS):
            key = f"{tm * 1000:.0f}mm_{rd:.0f}deg"
            src = noisy_sources(case.sources, tm, rd, seed=100 * oid + li)
            row: dict = {}
            t0 = time.perf_counter()
            # per-object refinement (method independent with maps="source"): once, se3 + euler
            ref = _renderer(case.mesh, src, "ibr_angle", None)
            info = ref.refine_sources(OBJ)
            src_ref = [dataclasses.replace(s, T_camera_object=r.T_camera_object)
                       for s, r in zip(src, ref.full)]
            eul = _renderer(case.mesh, src, "ibr_angle", None)
            info_e = eul.refine_sources(EULER)
            src_eul = [dataclasses.replace(s, T_camera_object=r.T_camera_object)
                       for s, r in zip(src, eul.full)]
            row["refine_object_s"] = info["seconds"]
            for m in methods:
                r0 = _renderer(case.mesh, src, m, net)
                e0 = evaluate_renderer(r0, case, NONE)
                r1 = _renderer(case.mesh, src_ref, m, net)
                e1 = evaluate_renderer(r1, case, NONE)
                e2 = evaluate_renderer(_renderer(case.mesh, src_eul, m, net), case, NONE)
                row[m] = {"none": [e0["psnr"], e0["ssim"]], "object": [e1["psnr"], e1["ssim"]],
                          "object_euler": [e2["psnr"], e2["ssim"]],
                          "coverage": e0["coverage"], "s_per_image": e0["seconds_per_image"]}
                if m in ("nol", "ibr_angle") and not args.no_target_refine:
                    e3 = evaluate_renderer(r0, case, TARGET)
                    row[m]["target"] = [e3["psnr"], e3["ssim"]]
                    row[m]["s_per_image_target_refine"] = e3["seconds_per_image"]
                if li == 2 and m in ("ibr_angle", "nol"):
                    row[m]["_images"] = (e0, e1)
            row["wall_s"] = time.perf_counter() - t0
            row["object_refine_error"] = [info["before"], info["after"]]
            row["object_refine_error_euler"] = [info_e["before"], info_e["after"]]
            if li == 2:
                grid_rows.append(_grid_row(case, src, row, "nol" if net is not None
                                           else "ibr_angle"))
            for m in methods:
                row[m].pop("_images", None)
            per_obj[key] = row
            print(f"{name} {key}: " + ", ".join(
                f"{m} {row[m]['none'][0]:.2f}/{row[m]['object'][0]:.2f}" for m in methods)
                + f" ({row['wall_s']:.0f} s)", flush=True)
    results["grid_rows"] = len(grid_rows)
    return results, grid_rows


def _grid_row(case, src, row, m) -> np.ndarray:
    """GT | 3 sources | ibr_angle | method | method + object refinement | method weights."""
    import cv2

    t = 0
    S = case.gt_rgb.shape[1]
    ib0, _ = row["ibr_angle"]["_images"]
    n0, n1 = row[m]["_images"]
    w = n0["results"][t].weights[0]  # (K, H, W)
    wv = np.zeros((S, S, 3), np.float32)
    cols = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]])
    for k in range(min(len(w), 6)):
        wv += w[k][..., None] * cols[k]
    tiles = [case.gt_rgb[t]] + [cv2.resize(s.rgb, (S, S)) for s in src[:3]] + \
        [e["images"][t].astype(np.float32) / 255 for e in (ib0, n0, n1)] + [np.clip(wv, 0, 1)]
    return np.hstack(tiles)


def tables(results: dict) -> str:
    objs = results["objects"]
    keys = [f"{tm * 1000:.0f}mm_{rd:.0f}deg" for tm, rd in NOISE_LEVELS]
    methods = [m for m in METHODS if any(m in objs[o][keys[0]] for o in objs)]
    out = ["| method | refinement | " + " | ".join(k.replace("_", ", ") for k in keys) + " |",
           "|---|---|" + "---|" * len(keys)]
    for m in methods:
        for ref in ("none", "object", "object_euler", "target"):
            vals = []
            for k in keys:
                v = [objs[o][k][m][ref] for o in objs if ref in objs[o][k][m]]
                vals.append(f"{np.mean([x[0] for x in v]):.2f} / {np.mean([x[1] for x in v]):.3f}"
                            if v else "-")
            if any(x != "-" for x in vals):
                out.append(f"| {m} | {ref} | " + " | ".join(vals) + " |")
    out.append("")
    out.append("| object | " + " | ".join(f"{m} (none / object)" for m in methods) + " |")
    out.append("|---|" + "---|" * len(methods))
    for o in objs:
        k = keys[2]
        out.append(f"| {o} | " + " | ".join(
            f"{objs[o][k][m]['none'][0]:.2f} / {objs[o][k][m]['object'][0]:.2f}"
            for m in methods) + " |")
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = results["objects"]
    keys = [f"{tm * 1000:.0f}mm_{rd:.0f}deg" for tm, rd in NOISE_LEVELS]
    labels = ["0", "5 mm, 1°", "1 cm, 3°", "2 cm, 5°"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m, c in zip(METHODS, ("C3", "C4", "C0", "C1", "C2")):
        for ref, ls in (("none", "--"), ("object", "-")):
            v = [np.mean([objs[o][k][m][ref][0] for o in objs]) for k in keys
                 if all(m in objs[o][k] for o in objs)]
            if len(v) == len(keys):
                how = "refined per object" if ref == "object" else "no refinement"
                ax.plot(range(len(keys)), v, ls, color=c, marker="o", label=f"{m} ({how})")
    ax.set_xticks(range(len(keys)), labels)
    ax.set_xlabel("source pose error (translation, rotation)")
    ax.set_ylabel("masked PSNR (dB)")
    ax.set_title(f"held-out objects ({len(objs)}), 6 sources, 256 px targets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def timing(args) -> dict:
    """Per-image times at 256 px with sources cached, for the cpu checkpoint and a random-init
    paper preset network; peak RSS; a 1296-view hemisphere with the cpu model."""
    from nol_ros.nol.config import NolConfig
    from nol_ros.nol.network import NolNet
    from nol_ros.recognition.poses import (
        PoseGridConfig,
        bbox_centre,
        bounding_radius,
        crop_intrinsics,
        hemisphere_poses,
    )

    case = make_case(make_object(1, 0), seed=1, n_targets=6)
    src = noisy_sources(case.sources, 0.01, 3.0, 0)
    out = {}
    nets = {"cpu": load_checkpoint(args.checkpoint, "cpu")[0] if args.checkpoint else None,
            "paper": NolNet(NolConfig.preset("paper"), device="cpu").eval()}
    for name, net in nets.items():
        if net is None:
            continue
        r = NolRenderer(case.mesh, src, net, RenderConfig(method="nol"))
        t0 = time.perf_counter()
        info = r.refine_sources(OBJ)
        t_obj = time.perf_counter() - t0
        _render(r, case.T_targets[0], case.intr_targets[0], NONE)  # warm-up
        t0 = time.perf_counter()
        for T, intr in zip(case.T_targets, case.intr_targets):
            _render(r, T, intr, NONE)
        t_img = (time.perf_counter() - t0) / len(case.T_targets)
        t0 = time.perf_counter()
        for T, intr in zip(case.T_targets, case.intr_targets):
            _render(r, T, intr, TARGET)
        t_ref = (time.perf_counter() - t0) / len(case.T_targets)
        out[name] = {"encode_s": r.encode_s, "object_refine_s": t_obj,
                     "object_refine_error": [info["before"], info["after"]],
                     "s_per_image": t_img, "s_per_image_target_refine_25": t_ref}
        print(name, out[name], flush=True)
    if nets["cpu"] is not None and args.hemisphere:
        r = NolRenderer(case.mesh, src, nets["cpu"], RenderConfig(method="nol", batch=4))
        t0 = time.perf_counter()
        r.refine_sources(OBJ)
        g = PoseGridConfig()
        Ts = hemisphere_poses(bbox_centre(case.mesh.vertices), g)
        intr = crop_intrinsics(bounding_radius(case.mesh.vertices), g.distance_m, g.crop_size,
                               margin=g.margin)
        per_target = RefineConfig() if args.hemisphere_target_refine else NONE
        r.cfg = dataclasses.replace(r.cfg, refine=per_target)
        for i in range(0, len(Ts), 16):
            r.render(Ts[i:i + 16], intr)     # what a training set is written with
        out["hemisphere"] = {"views": len(Ts), "s": time.perf_counter() - t0,
                             "per_target_refine": bool(args.hemisphere_target_refine)}
        print("hemisphere", out["hemisphere"], flush=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def ship(args, results: dict, table_md: str) -> str:
    """Install the checkpoint as the shipped model and write its card (atomically)."""
    import shutil

    from nol_ros.io_utils import atomic_write_text
    from nol_ros.nol.evaluate import choose_default_method

    if not args.checkpoint:
        raise SystemExit("--ship needs --checkpoint")
    dst = Path(args.ship)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tj = Path(args.train_json or Path(args.checkpoint).with_name("train.json"))
    train = json.loads(tj.read_text()) if tj.is_file() else {}
    decision = choose_default_method(results)
    card = {
        "default_method": decision["default_method"],
        "decision": decision,
        "checkpoint_source": str(args.checkpoint),
        "bench_command": results.get("command", "python " + " ".join(sys.argv)),
        "bench_date": time.strftime("%Y-%m-%d"),
        "bench_load_avg": os.getloadavg()[0],
        "training": {k: train.get(k) for k in ("config", "epochs", "resumed_from_epoch",
                                              "data_s", "device")},
        "table_md": table_md,
    }
    tmp = dst.with_suffix(".pt.tmp")
    shutil.copyfile(args.checkpoint, tmp)
    os.replace(tmp, dst)
    atomic_write_text(dst.with_suffix(".json"), json.dumps(card, indent=1))
    return (f"shipped {dst} ({dst.stat().st_size / 1e3:.0f} kB); default_method "
            f"{decision['default_method']} (mean PSNR {decision['mean_psnr']})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="NOL checkpoint (omit: baselines only)")
    ap.add_argument("--objects", default=",".join(str(o.obj_id) for o in CATALOGUE),
                    help="catalogue ids, comma separated (default: all 9)")
    ap.add_argument("--targets", type=int, default=6, help="target poses per object")
    ap.add_argument("--out", default="build/bench/nol_bench")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-target-refine", action="store_true",
                    help="skip the (slow) per-target refinement rows")
    ap.add_argument("--timing", action="store_true", help="also time cpu/paper presets")
    ap.add_argument("--hemisphere", action="store_true",
                    help="with --timing: render a 1296-view hemisphere (minutes)")
    ap.add_argument("--hemisphere-target-refine", action="store_true",
                    help="with --hemisphere: also refine the sources per view (25 it, early "
                         "stop) after the per-object refinement")
    ap.add_argument("--ship", default="",
                    help="copy the checkpoint to this .pt path and write the model card beside "
                         "it (.json: training run, these results, and default_method by "
                         "nol_ros.nol.evaluate.choose_default_method)")
    ap.add_argument("--train-json", default="",
                    help="with --ship: the training run's train.json (default: beside the "
                         "checkpoint)")
    ap.add_argument("--results", default="",
                    help="reuse OUT/results.json of an earlier run (tables, plot, --ship) "
                         "instead of evaluating again")
    args = ap.parse_args(argv)
    args.objects = [int(x) for x in args.objects.split(",") if x]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.results:
        results, rows = json.loads(Path(args.results).read_text()), []
    else:
        results, rows = run(args)
        results["wall_s"] = time.perf_counter() - t0
        results["command"] = "python " + " ".join(sys.argv)
        results["load_avg_start"] = os.getloadavg()[0]
    if args.timing:
        results["timing"] = timing(args)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = tables(results)
    (out / "table.md").write_text(md + "\n")
    plot(results, out / "noise_curve.png")
    if rows:
        from nol_ros.io_utils import atomic_write_image

        atomic_write_image(out / "grid.png", (np.clip(np.vstack(rows), 0, 1) * 255)
                           .astype(np.uint8))
    print(md)
    if args.ship:
        print(ship(args, results, md))
    print(f"wrote {out}/results.json, table.md, noise_curve.png, grid.png "
          f"({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
