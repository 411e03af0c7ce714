"""NOL on REAL scanned textures: the learnt renderer against image blending and texture mapping.

Every object folder under ``--objects`` (``NAME/textured.obj`` + .mtl + texture image, the layout
of ``../shared/realdata/ycb_real_textures``) is placed on the table of ``--sets`` cluttered
synthetic scenes (nol_ros.datasets.synthetic: room, table, clutter, two neighbours that occlude
it; nol_ros.nol.evaluate.make_scene_case). Per scene a robot sees it in 6 full Xtion frames
(25-50 deg elevation, 0.8-1.2 m, the sensor's colour and depth artefacts); the self-annotation
is imitated at four pose-noise levels (0; 5 mm, 1 deg; 1 cm, 3 deg; 2 cm, 5 deg: each source
pose moved by exactly that in a random direction), with masks derived at the annotated poses
by the self-annotation's depth rule and 256 px NOL crops (nol_ros.nol.evaluate.annotated_sources).
Targets: ``--targets`` 256 px crops per scene at 10-60 deg, 0.6-0.9 m; ground truth = the clean
render of the object under the scene's light.

Rows (masked PSNR dB / SSIM / LPIPS on the target silhouette, of the uint8 images the
renderer's ``render`` returns -- what a training set is written from):
  fit, learnobject        nol_ros.nol.renderer.prepare_renderer with the configuration
                          LearnObject's render stage runs for method fit (learn.
                          RenderStageConfig(method="fit").object_renderer_config(): per-object
                          refinement, a second coarse-to-fine one, the views aligned to
                          their own depth after the first and around a third, the surface
                          colour fitted at those and at the given poses, the best fit kept),
                          the SAME function and object
  fit, exposure_known     the same images divided by the sources' mean colour gain in the
                          sensor model (geometric mean of the frames' auto exposure x white
                          balance; the truth is at 1): a diagnostic, not a method -- no
                          renderer can know that gain, the views only tell their ratios
  nol, learnobject        the same for method nol (per-object refinement, per-object
                          fine-tuning); its render ends with the network's restorer when it
                          has one
  nol, restored           the same renderer with the network's restorer switched on (off in
                          LearnObject's configuration; "nol, unrestored" when it is on)
  nol, refined_untuned    (--finetune-ablation) the same refined sources with the network as
                          shipped: what fine-tuning adds (row "nol, finetuned" instead when
                          learn.render.finetune is switched off)
  nol, none               the network as shipped, the poses and masks as annotated
  ibr_angle / ibr_mean / ibr_best / texture, learnobject refinement
                          the blends (visibility- and angle-weighted, plain mean, most
                          frontal per pixel) and texture mapping (per-face view selection),
                          given exactly the sources fit's preparation chose
  ibr_angle / ibr_mean / ibr_best / texture, none   the same, poses as annotated

Objects the network was trained on (the checkpoint's ``real_train_objects``) and objects it
never saw are reported separately. LPIPS needs a local AlexNet state dict (``--lpips-weights``;
the ``lpips`` package downloads its backbone at run time, which cannot happen offline), else
it is reported as not measured.

    .venv/bin/python bench/bench_nol_real.py --objects ../shared/realdata/ycb_real_textures \\
        --out /tmp/nol_real [--sets 2 --targets 6 --checkpoint nol_ros/models/nol_cpu.pt]

writes OUT/results.json (every score, the configuration, the command, machine load, date) and
OUT/table.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nol_ros.datasets.scanned import load_textured_objects
from nol_ros.learn import RenderStageConfig
from nol_ros.nol.evaluate import NOISE_LEVELS, annotated_sources, make_scene_case
from nol_ros.nol.network import load_checkpoint
from nol_ros.nol.renderer import (
    SHIPPED_MODEL,
    FinetuneConfig,
    NolRenderer,
    ObjectRendererConfig,
    RefineConfig,
    prepare_renderer,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OBJECTS = ROOT.parent / "shared" / "realdata" / "ycb_real_textures"
BLENDS = ("ibr_angle", "ibr_mean", "ibr_best", "texture")
NONE = RefineConfig(method="none")


def learn_object_config(method: str = "nol") -> ObjectRendererConfig:
    """What LearnObject's render stage runs with its default parameters (config/nol.yaml:
    learn.render.*) and the render method ``method``."""
    return RenderStageConfig(method=method).object_renderer_config()


def level_key(tm: float, rd: float) -> str:
    return f"{tm * 1000:.0f}mm_{rd:.0f}deg"


def _scores(r: NolRenderer, case, lpips_w: str | None, gain: np.ndarray | None = None
            ) -> list[list[float]]:
    """[[PSNR, SSIM, LPIPS]] per target of r's uint8 renders; with ``gain`` (3,) the renders
    divided by it first (and quantised again)."""
    from skimage.metrics import structural_similarity

    from nol_ros.metrics import lpips_distance, masked_psnr

    out = []
    for T, intr, gt, gm in zip(case.T_targets, case.intr_targets, case.gt_rgb, case.gt_mask):
        rgb, _ = r.render(T[None], intr)
        img = rgb[0].astype(np.float32) / 255.0
        if gain is not None:
            img = (np.round(np.clip(img / gain, 0, 1) * 255) / 255).astype(np.float32)
        p = masked_psnr(img, gt, gm)
        _, smap = structural_similarity(img, gt, channel_axis=2, data_range=1.0, full=True)
        s = float(smap[gm].mean())
        lp = lpips_distance(img, gt, lpips_w, gm) if lpips_w else float("nan")
        out.append([float(p), s, float(lp)])
    return out


def run_level(case, src, net, cfg: ObjectRendererConfig, lpips_w,
              blends_unrefined=BLENDS, finetune_ablation: FinetuneConfig | None = None
              ) -> dict:
    """Every row of one (object, scene, noise level); see the module docstring.
    finetune_ablation: also score the other side of the fine-tuning switch (the LearnObject
    sources with the network fine-tuned by this config when LearnObject does not fine-tune,
    or as shipped when it does)."""
    other_nol = "nol/refined_untuned" if cfg.finetune.steps > 0 else "nol/finetuned"
    if finetune_ablation is not None and cfg.finetune.steps > 0:
        finetune_ablation = FinetuneConfig(steps=0)
    row: dict = {}
    t0 = time.perf_counter()
    r, info = prepare_renderer(case.mesh, src, net, cfg)
    row["prepare"] = {"s": info["seconds"], "refine": info["refine"],
                      "finetune": info.get("finetune")}
    t1 = time.perf_counter()
    row["nol/learnobject"] = _scores(r, case, lpips_w)
    row["s_per_image"] = {"nol/learnobject": (time.perf_counter() - t1) / len(case.T_targets)}
    t1 = time.perf_counter()   # method fit, as LearnObject runs it: its own preparation
    rf, info_f = prepare_renderer(case.mesh, src, None, learn_object_config("fit"))
    row["prepare"]["fit"] = {"s": info_f["seconds"], "fit": info_f["fit"],
                             "poses": info_f["poses"]}
    row["fit/learnobject"] = _scores(rf, case, lpips_w)
    row["s_per_image"]["fit/learnobject"] = (time.perf_counter() - t1) / len(case.T_targets)
    mean_gain = np.exp(np.log(case.sensor_gain).mean(0)).astype(np.float32)
    row["fit/exposure_known"] = _scores(rf, case, lpips_w, mean_gain)
    if net.restorer is not None:   # the restorer's switch the other way, same renderer
        t1 = time.perf_counter()
        key = "nol/unrestored" if r.cfg.restore else "nol/restored"
        r.cfg = dataclasses.replace(r.cfg, restore=not r.cfg.restore)
        row[key] = _scores(r, case, lpips_w)
        row["s_per_image"][key] = (time.perf_counter() - t1) / len(case.T_targets)
    refined = list(rf.full)   # the poses LearnObject ends with ("auto" renders with fit)
    plain = dataclasses.replace(cfg.render, refine=NONE)
    if finetune_ablation:   # the same refined sources, the network fine-tuned / as shipped
        t1 = time.perf_counter()
        rr = NolRenderer(case.mesh, refined, net, cfg.render)
        row["prepare"]["ablation_finetune"] = rr.finetune(finetune_ablation)
        row[other_nol] = _scores(rr, case, lpips_w)
        row["s_per_image"][other_nol] = (time.perf_counter() - t1) / len(case.T_targets)
    variants = [("nol/none", src, "nol", plain)]
    for m in BLENDS:
        variants.append((f"{m}/learnobject", refined, m, dataclasses.replace(cfg.render, method=m)))
        if m in blends_unrefined:
            variants.append((f"{m}/none", src, m, dataclasses.replace(plain, method=m)))
    for key, sources, m, rc in variants:
        t1 = time.perf_counter()
        rr = NolRenderer(case.mesh, sources, net if m == "nol" else None,
                         dataclasses.replace(rc, method=m))
        row[key] = _scores(rr, case, lpips_w)
        row["s_per_image"][key] = (time.perf_counter() - t1) / len(case.T_targets)
    row["wall_s"] = time.perf_counter() - t0
    return row


def run(args) -> dict:
    objs = load_textured_objects(args.objects)
    if args.only:
        keep = set(args.only.split(","))
        objs = {k: v for k, v in objs.items() if k in keep}
    net, extra = load_checkpoint(args.checkpoint, "cpu")
    trained = set(extra.get("real_train_objects", []))
    cfg = learn_object_config()
    res: dict = {"command": "python " + " ".join(sys.argv), "checkpoint": str(args.checkpoint),
                 "objects_dir": str(args.objects), "trained_on": sorted(trained),
                 "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
                 "sets": args.sets, "targets": args.targets,
                 "lpips": "measured" if args.lpips_weights else
                 "not measured: no local AlexNet weights (--lpips-weights); the lpips package "
                 "downloads its backbone at run time, which cannot happen offline",
                 "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.node(),
                 "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                 "load_start": os.getloadavg()[0], "objects": {}}
    for name, mesh in sorted(objs.items(), key=lambda kv: args.order.index(kv[0])
                             if kv[0] in args.order else len(args.order)):
        per = res["objects"].setdefault(name, {"split": "trained" if name in trained
                                               else "held_out", "levels": {}})
        for si in range(args.sets):
            seed = 1000 * args.seed + 17 * si + sum(map(ord, name))
            t0 = time.perf_counter()
            case = make_scene_case(mesh, seed=seed, n_targets=args.targets, name=name)
            t_case = time.perf_counter() - t0
            for li, (tm, rd) in enumerate(NOISE_LEVELS):
                key = level_key(tm, rd)
                src = annotated_sources(case, tm, rd, seed=seed + li)
                row = run_level(case, src, net, cfg, args.lpips_weights,
                                args.unrefined_blends.split(","),
                                FinetuneConfig() if args.finetune_ablation else None)
                row["case_s"] = t_case
                per["levels"].setdefault(key, []).append(row)
                print(f"{name} set {si} {key}: " + ", ".join(
                    f"{k} {np.mean([x[0] for x in row[k]]):.2f}" for k in
                    ("fit/learnobject", "fit/exposure_known", "nol/learnobject",
                     "nol/unrestored", "nol/restored",
                     "nol/none",
                     "ibr_angle/learnobject",
                     "ibr_mean/learnobject", "ibr_best/learnobject", "texture/learnobject")
                    if k in row)
                    + f" ({row['wall_s']:.0f} s)", flush=True)
            res["load_end"] = os.getloadavg()[0]
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "results.json").write_text(json.dumps(res, indent=1))
    return res


ROWS = ["fit/learnobject", "fit/exposure_known", "nol/learnobject", "nol/unrestored",
        "nol/restored", "nol/finetuned", "nol/refined_untuned", "nol/none"] + [
            f"{m}/{r}" for m in BLENDS for r in ("learnobject", "none")]


def summary(res: dict, split: str) -> dict:
    """{row: {level: [psnr, ssim, lpips] mean over objects, sets and targets}} of a split."""
    out: dict = {}
    objs = [o for o in res["objects"].values() if o["split"] == split]
    for row in ROWS:
        out[row] = {}
        for tm, rd in NOISE_LEVELS:
            k = level_key(tm, rd)
            v = [x for o in objs for lv in o["levels"].get(k, []) for x in lv.get(row, [])]
            out[row][k] = np.nanmean(np.array(v), 0).tolist() if v else None
    return out


def tables(res: dict) -> str:
    keys = [level_key(tm, rd) for tm, rd in NOISE_LEVELS]
    lines = []
    for split, title in (("held_out", "objects the network never trained on"),
                         ("trained", "objects the network trained on")):
        names = sorted(n for n, o in res["objects"].items() if o["split"] == split)
        if not names:
            continue
        s = summary(res, split)
        n_t = sum(len(lv) for n in names for lv in
                  [x.get("nol/learnobject", []) for x in
                   res["objects"][n]["levels"].get(keys[0], [])])
        lines += [f"**{title}** ({', '.join(names)}; {n_t} targets per noise level): masked "
                  "PSNR dB / SSIM" + (" / LPIPS" if res["lpips"] == "measured" else ""), "",
                  "| method | refinement | " + " | ".join(k.replace("_", ", ") for k in keys)
                  + " |", "|---|---|" + "---|" * len(keys)]
        for row in ROWS:
            if all(s[row][k] is None for k in keys):
                continue
            m, ref = row.split("/")
            cells = []
            for k in keys:
                v = s[row][k]
                if v is None:
                    cells.append("-")
                    continue
                c = f"{v[0]:.2f} / {v[1]:.3f}"
                if res["lpips"] == "measured":
                    c += f" / {v[2]:.3f}"
                cells.append(c)
            lines.append(f"| {m} | {ref} | " + " | ".join(cells) + " |")
        for method in ("fit", "nol"):
            best = []
            for k in keys:
                b = max((s[f"{m}/learnobject"][k][0], m) for m in BLENDS
                        if s[f"{m}/learnobject"][k])
                gain = s[f"{method}/learnobject"][k][0] - b[0]
                best.append(f"{gain:+.2f} ({b[1]})")
            lines += ["", f"{method} (learnobject) minus the best blend with the same "
                      "refinement: " + ", ".join(f"{k.replace('_', ', ')} {g}"
                                                 for k, g in zip(keys, best))]
        lines.append("")
    # per object at 1 cm, 3 deg
    k = keys[2]
    lines += [f"Per object at {k.replace('_', ', ')} (PSNR dB):", "",
              "| object | split | fit learnobject | nol learnobject | nol restorer switched | "
              "nol other fine-tuning | nol none | ibr_angle | ibr_mean | ibr_best | texture |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, o in sorted(res["objects"].items()):
        lv = o["levels"].get(k, [])

        def mean(row, lv=lv):
            v = [x[0] for s in lv for x in s.get(row, [])]
            return f"{np.mean(v):.2f}" if v else "-"
        other = mean("nol/refined_untuned")
        other = mean("nol/finetuned") if other == "-" else other
        switched = mean("nol/unrestored")
        switched = mean("nol/restored") if switched == "-" else switched
        lines.append(f"| {n} | {o['split']} | {mean('fit/learnobject')} | "
                     f"{mean('nol/learnobject')} | "
                     f"{switched} | {other} | {mean('nol/none')} | "
                     + " | ".join(mean(f"{m}/learnobject") for m in BLENDS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", default=str(DEFAULT_OBJECTS),
                    help="folder of NAME/textured.obj (+ .mtl + texture) object folders")
    ap.add_argument("--only", default="", help="comma-separated object names (default: all)")
    ap.add_argument("--checkpoint", default=str(SHIPPED_MODEL))
    ap.add_argument("--sets", type=int, default=2, help="scenes (source sets) per object")
    ap.add_argument("--targets", type=int, default=6, help="target crops per scene")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--order", default="", help="objects to run first (comma separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lpips-weights", default="",
                    help="local torchvision AlexNet state dict for LPIPS (else not measured)")
    ap.add_argument("--finetune-ablation", action="store_true",
                    help="also score the other side of LearnObject's fine-tuning switch "
                         "(nol/finetuned or nol/refined_untuned)")
    ap.add_argument("--unrefined-blends", default=",".join(BLENDS),
                    help="blends also scored without refinement (comma separated)")
    ap.add_argument("--results", default="", help="re-make the table from a results.json")
    ap.add_argument("--out", default="build/bench/nol_real")
    a = ap.parse_args(argv)
    a.order = a.order.split(",") if a.order else []
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = json.loads(Path(a.results).read_text()) if a.results else run(a)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = tables(res)
    (out / "table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
