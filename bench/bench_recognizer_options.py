"""The recogniser's inference options on trained models folders: the pose from the colour image
alone (PnP) or from the depth (3D-3D RANSAC), boxes from the detector or from the pose
network's visible mask; mAP@0.5 and ADD(-S) with and without ICP on the test scenes.

Run: .venv/bin/python bench/bench_recognizer_options.py --data .nol_demo/data_demo \
        --models /tmp/rec_demo_nol/nol/models /tmp/rec_demo/real/models [--threads 2] \
        [--rows 2]

The models folders come from bench/bench_recognition.py (--work W: W/SOURCE/models). Nothing is
trained here, so the rows differ only in the option. Prints a markdown table.
"""

import argparse
import dataclasses
import time
from pathlib import Path

OPTIONS = [("detector boxes, PnP + ICP", dict(refine_boxes=False, solver="pnp")),
           ("mask boxes, PnP + ICP", dict(refine_boxes=True, solver="pnp")),
           ("mask boxes, 3D-3D + ICP (solver rgbd)", dict(refine_boxes=True, solver="rgbd"))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".nol_demo/data_demo")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="", help="comma-separated row numbers (0-based) of "
                    "OPTIONS to run (default: all)")
    a = ap.parse_args()
    rows = [OPTIONS[int(i)] for i in a.rows.split(",")] if a.rows else OPTIONS

    import torch

    from nol_ros.recognition.evaluate import evaluate_scenes, load_object_models
    from nol_ros.recognition.recognizer import Recognizer

    torch.set_num_threads(a.threads)
    root = Path(a.data)
    tests = sorted((root / "test").iterdir())
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {len(tests)} test scenes of {root}\n")
    print("| models | option | mAP@0.5 | ADD(-S) RGB | ADD(-S) +ICP | s per image |")
    print("|---|---|---|---|---|---|")
    for m in a.models:
        for label, kw in rows:
            rec = Recognizer.load(m)
            rec.config = dataclasses.replace(rec.config, **kw)
            models = load_object_models(root / "models", sorted(rec.objects))
            r = evaluate_scenes(rec, tests, models)
            print(f"| {m} | {label} | {100 * r.map50:.1f} | {100 * r.mean(r.add_rgb):.1f} | "
                  f"{100 * r.mean(r.add_icp):.1f} | {r.seconds_per_image:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
