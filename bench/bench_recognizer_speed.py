"""Seconds per frame of the recogniser as the recognizer node runs it: the models folder's own
configuration (its score threshold, the turn by the print on), RGB-D frames of the test
scenes, after one warm-up frame (the first frame builds each object's turns and ray-casting
scenes: reported apart). The pose workers (``RecognizerConfig.pose_workers``) are compared
with posing one detection after another, frame by frame in the same process (the settings
alternate, so both see the same load), and the poses of the two are compared. With
--colour-only the frames go without their depth (a colour-only camera: PnP, the turn and the
range by the print), and the range by the print (``RecognizerConfig.appearance_range``) is
compared off and on instead, with the models folder's pose workers.

Run: .venv/bin/python bench/bench_recognizer_speed.py --models build/rec22c/s0/nol/models \
        [--data .nol_demo/data_demo] [--threads 2] [--workers 1,4] [--colour-only]
        [--json out.json]
"""

import argparse
import dataclasses
import time
from pathlib import Path

import nol_ros  # noqa: F401  first: OpenMP waits passive before torch and open3d load it


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".nol_demo/data_demo")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", default="1,4", help="comma-separated pose_workers settings; "
                    "the first is the baseline of the ratio")
    ap.add_argument("--max-images", type=int, default=0, help="per scene (0: all)")
    ap.add_argument("--score-thresh", type=float, default=None, help="the detector score "
                    "threshold (default: the models folder's, as the node runs; the accuracy "
                    "benchmarks use 0.05 and pose more detections)")
    ap.add_argument("--colour-only", action="store_true", help="frames without depth; "
                    "compares the range by the print off (the baseline) and on")
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    import numpy as np
    import open3d  # noqa: F401  (loaded now, so that set_threads sets its OpenMP too)

    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.io_utils import atomic_write_json
    from nol_ros.recognition.recognizer import Recognizer
    from nol_ros.threads import set_threads

    set_threads(a.threads)
    if a.colour_only:
        settings = {"range off": {"appearance_range": False}, "range on": {}}
    else:
        settings = {w: {"pose_workers": int(w)} for w in a.workers.split(",")}
    frames = []
    for sd in sorted((Path(a.data) / "test").iterdir()):
        seq = read_bop_scene(sd)
        fs = seq.frames[:a.max_images] if a.max_images else seq.frames
        frames += [(f.load_rgb(), None if a.colour_only else f.load_depth(), seq.intrinsics)
                   for f in fs]
    thr = "the models' own" if a.score_thresh is None else a.score_thresh
    kind = "colour-only" if a.colour_only else "RGB-D"
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {len(frames)} {kind} frames of {a.data}, "
          f"{a.threads} threads, score threshold {thr}\n")
    print(f"| models | {'setting' if a.colour_only else 'pose_workers'} | s per frame (mean) | "
          "median | CPU-s per frame | vs the first | posed per frame | first frame s | max pose "
          "difference mm / deg |")
    print("|---|---|---|---|---|---|---|---|---|")
    out = []
    for m in a.models:
        rec = Recognizer.load(m)
        base = rec.config
        recs = {}
        for w, kw in settings.items():
            r = Recognizer.load(m)
            r.config = dataclasses.replace(base, **kw)
            recs[w] = r
        first = {}
        for w, r in recs.items():   # warm-up, timed apart
            t0 = time.perf_counter()
            r.recognize(frames[0][0], frames[0][2], frames[0][1], score_thresh=a.score_thresh)
            first[w] = time.perf_counter() - t0
        wall = {w: [] for w in settings}
        cpu = {w: [] for w in settings}
        poses = {w: [] for w in settings}
        for rgb, depth, intr in frames[1:]:
            for w, r in recs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                res = r.recognize(rgb, intr, depth, score_thresh=a.score_thresh)
                wall[w].append(time.perf_counter() - t0)
                cpu[w].append(time.process_time() - c0)
                poses[w].append([x.T_camera_object for x in res])
        ref = next(iter(settings))
        for w in settings:
            dt, dr = 0.0, 0.0
            for pa, pb in zip(poses[ref], poses[w]):
                for Ta, Tb in zip(pa, pb):
                    if (Ta is None) != (Tb is None):
                        dt = dr = float("inf")
                    elif Ta is not None:
                        dt = max(dt, 1000 * float(np.linalg.norm(Ta[:3, 3] - Tb[:3, 3])))
                        c = (np.trace(Ta[:3, :3].T @ Tb[:3, :3]) - 1) / 2
                        dr = max(dr, float(np.degrees(np.arccos(np.clip(c, -1, 1)))))
            row = {"models": m, "pose_workers" if not a.colour_only else "setting": w,
                   "s_per_frame": float(np.mean(wall[w])),
                   "median_s": float(np.median(wall[w])), "cpu_s": float(np.mean(cpu[w])),
                   "ratio": float(np.mean(wall[w]) / np.mean(wall[ref])),
                   "posed_per_frame": float(np.mean([sum(T is not None for T in p)
                                                     for p in poses[w]])),
                   "score_thresh": a.score_thresh, "first_frame_s": first[w],
                   "max_pose_diff_mm": dt, "max_pose_diff_deg": dr,
                   "frames": len(wall[w])}
            out.append(row)
            print(f"| {m} | {w} | {row['s_per_frame']:.3f} | {row['median_s']:.3f} | "
                  f"{row['cpu_s']:.3f} | {row['ratio']:.2f}x | {row['posed_per_frame']:.2f} | "
                  f"{first[w]:.2f} | "
                  f"{dt:.3g} / {dr:.3g} |", flush=True)
        if a.json:
            atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
