"""Recognisers trained on each training source, tested on the synthetic world's test sequences
(the paper's SMOT evaluation, Table 3 / C.1): mAP@IoU0.5, ADD(-S) recall with RGB only and
with ICP on the depth, per object and on average; training and inference times.

Run: .venv/bin/python bench/bench_recognition.py --data data/full --sources gt,real \
        [--preset cpu] [--work build/bench_rec] [--image-step 1] [--threads 2]

Sources: gt (ground-truth textured models, Lambertian, rendered on the preset's grid), real
(crops of train/000001 where the object is visible >= 50 %, ground-truth poses and masks), nol /
ibr (the training sets LearnObject rendered: --workspace ROOT, a workspace root whose objects
were learnt with render.method nol / ibr and render.preset = --preset, e.g. by `nol-ros learn`
or the demo). Training is the one pipeline the trainer node runs
(nol_ros.recognition.pipeline.train), scoring the one scorer of `nol-ros evaluate`
(nol_ros.recognition.evaluate.score_models). Every stage's artefacts stay under --work/SOURCE
and are reused by a second run. Prints markdown tables; writes --work/results.json and BOP
CSVs.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nol_ros  # noqa: F401  first: OpenMP waits passive before torch and open3d load it


def _progress(source):
    last = {"t": 0.0, "stage": ""}

    def f(stage, frac, msg=""):
        now = time.monotonic()
        if stage != last["stage"] or now - last["t"] > 30 or frac >= 1.0:
            print(f"  [{source}] {time.strftime('%H:%M:%S')} {stage} {100 * frac:5.1f}% {msg}",
                  flush=True)
            last.update(t=now, stage=stage)
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/full")
    ap.add_argument("--sources", default="gt,real")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--work", default="build/bench_rec")
    ap.add_argument("--tests", default="", help="comma-separated test scenes (default: all)")
    ap.add_argument("--image-step", type=int, default=1)
    ap.add_argument("--workspace", default="",
                    help="workspace root of the learnt objects (sources nol, ibr)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="training seed (TrainPlan.seed)")
    ap.add_argument("--no-train", action="store_true", help="only evaluate existing models")
    ap.add_argument("--scenes", default="",
                    help="workspace root whose learnt objects' frames (objects removed) become "
                         "detector backgrounds for gt (the learnt sources use their own frames, "
                         "as the trainer node does; real uses none)")
    ap.add_argument("--override", default="",
                    help='JSON of preset fields to change, e.g. \'{"detset": {"distractors": '
                         '[0, 0]}}\' (the ablations in BENCHMARKS.md)')
    a = ap.parse_args()

    import numpy as np
    import open3d  # noqa: F401  (loaded now, so that set_threads sets its OpenMP too)

    from nol_ros.config import override
    from nol_ros.errors import NolError
    from nol_ros.recognition.evaluate import score_models, write_bop_csv
    from nol_ros.recognition.pipeline import (
        TrainPlan,
        recognition_preset,
        synthetic_objects,
        train,
    )
    from nol_ros.recognition.recognizer import Recognizer
    from nol_ros.threads import set_threads
    from nol_ros.workspace import Workspace

    set_threads(a.threads)   # torch and every OpenMP runtime, as the nodes run
    preset = override(recognition_preset(a.preset), json.loads(a.override or "{}"),
                      "--override: ")
    root = Path(a.data)
    tests = [root / t for t in a.tests.split(",")] if a.tests else \
        sorted((root / "test").iterdir())
    work = Path(a.work)
    sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    results: dict = {"command": " ".join([Path(sys.executable).name] + sys.argv),
                     "machine": f"{platform.node()} {platform.processor() or platform.machine()}"
                                f" {os.cpu_count()} cores",
                     "date": time.strftime("%Y-%m-%d %H:%M"), "preset": a.preset,
                     "override": a.override, "scenes": a.scenes,
                     "tests": [str(t) for t in tests], "image_step": a.image_step,
                     "threads": a.threads, "seed": a.seed, "sources": {}}
    names: dict[int, str] = {}
    for src in sources:
        print(f"== source {src}", flush=True)
        wdir = work / src
        try:
            objects = synthetic_objects(root, src, wdir, preset.grid,
                                        workspace_root=a.workspace or None,
                                        progress=_progress(src))
        except NolError as e:
            print(f"  skipped: [{e.code}] {e}", flush=True)
            results["sources"][src] = {"skipped": str(e)}
            continue
        names.update({o.obj_id: o.name for o in objects})
        load0 = os.getloadavg()[0]
        if not a.no_train:
            backgrounds = None                     # learnt sources: their own frames
            if src == "real":
                backgrounds = ()
            elif src == "gt":
                sw = Workspace(a.scenes) if a.scenes else None
                backgrounds = tuple(sw.learnt(n).dir for n in sw.names()) if sw else ()
            plan = TrainPlan(preset, tuple(objects), wdir, wdir / "models", seed=a.seed,
                             backgrounds=backgrounds)
            rep = train(plan, progress=_progress(src))
        else:
            rep = json.loads((wdir / "train_report.json").read_text())
        # the models folder keeps the recognizer options it was trained with; an override of
        # them (e.g. the solver) applies to the evaluation, also with --no-train
        rec = Recognizer.load(wdir / "models", config=preset.recognizer
                              if "recognizer" in json.loads(a.override or "{}") else None)
        t0 = time.perf_counter()
        # learnt objects: ADD in their learnt frames (the dataset's up to a symmetry of the
        # untextured mesh: nol_ros.recognition.evaluate, "Learnt frames")
        learnt = src in ("nol", "ibr")
        sc = score_models(rec, tests, root / "models", a.workspace if learnt else None,
                          root / "train" / "000001", image_step=a.image_step,
                          progress=_progress(src))
        res, frames = sc.result, sc.learnt_frames
        for o, f in frames.items():
            print(f"  [{src}] learnt frame of {names[o]}: the model's turned by "
                  f"{f['sym_deg']:.1f} deg (a symmetry of its mesh); registration error "
                  f"beyond it {f['residual_deg']:.2f} deg ({f['frames']} views)", flush=True)
        write_bop_csv(wdir / f"results_{src}.csv", res.rows)
        results["sources"][src] = {
            "train": rep, "map50": res.map50, "ap50": res.ap50, "add_rgb": res.add_rgb,
            "add_icp": res.add_icp, "n_pose": res.n_pose, "learnt_frames": frames,
            "add_rgb_model_frame": res.add_rgb_model_frame,
            "add_icp_model_frame": res.add_icp_model_frame, "n_images": res.n_images,
            "pose_errors": res.pose_errors(),
            "s_per_image": res.seconds_per_image, "cpu_s_per_image": res.cpu_seconds_per_image,
            "eval_s": time.perf_counter() - t0,
            "load_avg_start": load0, "load_avg_end": os.getloadavg()[0]}
        print(f"  mAP@0.5 {res.map50:.3f}  ADD RGB {res.mean(res.add_rgb):.3f}  "
              f"ADD RGB+ICP {res.mean(res.add_icp):.3f} (in the model's frame "
              f"{res.mean(res.add_rgb_model_frame):.3f} / {res.mean(res.add_icp_model_frame):.3f}"
              f")  {res.seconds_per_image:.3f} s/image", flush=True)
        from nol_ros.io_utils import atomic_write_json

        atomic_write_json(work / "results.json", results)
    done = [s for s in sources if "map50" in results["sources"].get(s, {})]
    if not done:
        return 1
    ids = sorted(names)
    R = results["sources"]

    def cell(v):
        return "-" if v is None else f"{100 * v:.1f}"

    print(f"\nADD(-S) < 10 % diameter, % of instances visible >= 50 % ({a.preset} presets; "
          f"{len(tests)} test sequences, every {a.image_step}. image)\n")
    head = " | ".join([f"RGB {s}" for s in done] + [f"RGB+ICP {s}" for s in done])
    print(f"| object | {head} |")
    print("|---|" + "---|" * (2 * len(done)))
    for o in ids:
        row = [cell(R[s]["add_rgb"].get(o)) for s in done] + \
              [cell(R[s]["add_icp"].get(o)) for s in done]
        print(f"| {names[o]} | " + " | ".join(row) + " |")
    avg = [cell(float(np.mean(list(R[s]["add_rgb"].values())))) for s in done] + \
          [cell(float(np.mean(list(R[s]["add_icp"].values())))) for s in done]
    print("| **average** | " + " | ".join(avg) + " |")
    mf = [s for s in done if R[s].get("learnt_frames")]
    if mf:
        print("\nthe same against the ground truth in the model's own frame (the learnt frame "
              "not stated)\n")
        print("| object | " + " | ".join([f"RGB {s}" for s in mf] + [f"RGB+ICP {s}" for s in mf])
              + " | learnt frame vs model's |")
        print("|---|" + "---|" * (2 * len(mf) + 1))
        for o in ids:
            row = [cell(R[s]["add_rgb_model_frame"].get(o)) for s in mf] + \
                  [cell(R[s]["add_icp_model_frame"].get(o)) for s in mf]
            fr = R[mf[0]]["learnt_frames"].get(o, {})
            nan = float("nan")
            row.append(f"{fr.get('sym_deg', nan):.0f} deg (+{fr.get('residual_deg', nan):.1f})")
            print(f"| {names[o]} | " + " | ".join(row) + " |")
    print("\nwhere the poses (with ICP) are off, in the learnt frame: median tilt of the model's z "
          "axis, median turn about it, share turned > 30 deg, median translation error\n")
    print("| object | " + " | ".join(f"{s} tilt / turn deg, > 30 deg, t mm" for s in done) + " |")
    print("|---|" + "---|" * len(done))
    for o in ids:
        row = []
        for s in done:
            e = R[s].get("pose_errors", {}).get(o)
            row.append("-" if not e else f"{e['median_tilt_deg']:.1f} / {e['median_turn_deg']:.1f}"
                       f", {100 * e['turned_share']:.0f} %, {e['median_t_mm']:.1f}")
        print(f"| {names[o]} | " + " | ".join(row) + " |")
    print("\nmAP@IoU0.5 (%)\n")
    print("| object | " + " | ".join(done) + " |")
    print("|---|" + "---|" * len(done))
    for o in ids:
        print(f"| {names[o]} | " + " | ".join(cell(R[s]["ap50"].get(o)) for s in done) + " |")
    print("| **mAP** | " + " | ".join(cell(R[s]["map50"]) for s in done) + " |")
    print("\nwall-clock s (CPU s in brackets: all threads; on a busy machine the CPU time is "
          "what the stage costs)\n")
    print("| source | render | detector set | detector train | pose crops | pose train | "
          "inference per image |")
    print("|---|---|---|---|---|---|---|")
    for s in done:
        t = R[s]["train"]["seconds"]
        c = R[s]["train"].get("cpu_seconds", {})

        def tc(k, t=t, c=c):   # a stage reused from an earlier run has no time
            if k not in t:
                return "reused"
            return f"{t[k]:.0f} ({c[k]:.0f})" if k in c else f"{t[k]:.0f}"
        print(f"| {s} | {tc('render')} | {tc('detection_set')} | {tc('detector')} | "
              f"{tc('pose_crops')} | {tc('pose')} | {R[s]['s_per_image']:.3f} "
              f"({R[s].get('cpu_s_per_image', float('nan')):.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
