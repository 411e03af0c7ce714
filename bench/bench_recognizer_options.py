"""The recogniser's inference options on trained models folders: the pose from the colour image
alone (PnP) or from the depth (3D-3D RANSAC), boxes from the detector or from the pose
network's visible mask, the turn by the learnt print after ICP, ICP's finest stage, the
colour-only pose's range by the print; mAP@0.5 and ADD(-S) with and without ICP on the test
scenes.

Run: .venv/bin/python bench/bench_recognizer_options.py --data .nol_demo/data_demo \
        --models .nol_demo/workspace_demo/_models --workspace .nol_demo/workspace_demo \
        [--threads 2] [--rows 2]

The models folders come from bench/bench_recognition.py (--work W: W/SOURCE/models) or a
workspace's training (WORKSPACE/_models). Nothing is trained here, so the rows differ only in
the option. Scored by nol_ros.recognition.evaluate.score_models, as bench_recognition.py scores:
with --workspace (the workspace the objects were learnt into, from the data's train scene
000001) ADD(-S) is in the learnt frames; with --appearance-frames instead, in the frames of the
models folder's learnt appearance (nol_ros.recognition.evaluate.learnt_frames_from_appearance:
models trained on a workspace that has since been replaced); otherwise in the mesh files'
frames. Prints a markdown table.
"""

import argparse
import dataclasses
import time
from pathlib import Path

import nol_ros  # noqa: F401  first: OpenMP waits passive before torch and open3d load it

OPTIONS = [("detector boxes, PnP + ICP", dict(refine_boxes=False, solver="pnp")),
           ("mask boxes, PnP + ICP", dict(refine_boxes=True, solver="pnp")),
           ("detector boxes, 3D-3D + ICP, print turn off",
            dict(refine_boxes=False, solver="rgbd", appearance=False)),
           ("detector boxes, 3D-3D + ICP + turn by the print (the default)",
            dict(refine_boxes=False, solver="rgbd", appearance=True)),
           ("the default, ICP point to point in every stage",
            dict(refine_boxes=False, solver="rgbd", appearance=True, icp_plane_kernel_m=0.0)),
           ("the default, mask boxes",
            dict(refine_boxes=True, solver="rgbd", appearance=True)),
           ("the default, colour only without the range by the print",
            dict(refine_boxes=False, solver="rgbd", appearance=True, appearance_range=False))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".nol_demo/data_demo")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--workspace", default="", help="the workspace the models' objects were "
                    "learnt into: ADD(-S) in their learnt frames (default: the mesh files')")
    ap.add_argument("--appearance-frames", action="store_true", help="without --workspace: "
                    "ADD(-S) in the frames of the models folder's learnt appearance (for models "
                    "whose workspace was replaced; the data needs models_textured)")
    ap.add_argument("--json", default="", help="also write every row's figures, per object "
                    "too (nol_ros.recognition.evaluate.Score.summary), to this JSON file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="", help="comma-separated row numbers (0-based) of "
                    "OPTIONS to run (default: all)")
    a = ap.parse_args()
    rows = [OPTIONS[int(i)] for i in a.rows.split(",")] if a.rows else OPTIONS

    import open3d  # noqa: F401  (loaded now, so that set_threads sets its OpenMP too)

    from nol_ros.io_utils import atomic_write_json
    from nol_ros.recognition.evaluate import score_models
    from nol_ros.recognition.recognizer import Recognizer
    from nol_ros.threads import set_threads

    set_threads(a.threads)   # torch and every OpenMP runtime, as the nodes run
    root = Path(a.data)
    tests = sorted((root / "test").iterdir())
    frames = (f"learnt frames of {a.workspace}" if a.workspace else "the frames of the learnt "
              "appearance" if a.appearance_frames else "the mesh files' frames")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {len(tests)} test scenes of {root}, ADD(-S) in "
          f"{frames}\n")
    print("| models | option | mAP@0.5 | ADD(-S) RGB | ADD(-S) +ICP | s per image | CPU-s per "
          "image |")
    print("|---|---|---|---|---|---|---|")
    out = []
    for m in a.models:
        for label, kw in rows:
            rec = Recognizer.load(m)
            rec.config = dataclasses.replace(rec.config, **kw)
            sc = score_models(rec, tests, root / "models", a.workspace or None,
                              root / "train" / "000001", appearance_frames=a.appearance_frames)
            r = sc.result
            out.append({"models": m, "option": label, **sc.summary()})
            if a.json:
                atomic_write_json(a.json, out)
            print(f"| {m} | {label} | {100 * r.map50:.1f} | {100 * r.mean(r.add_rgb):.1f} | "
                  f"{100 * r.mean(r.add_icp):.1f} | {r.seconds_per_image:.2f} | "
                  f"{r.cpu_seconds_per_image:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
