"""Write the small piece of TUM RGB-D fr1/desk that the tests use (test/data/tum_fr1_desk_piece).

Frames 520-594 of ../shared/realdata/rgbd_sequences/tum_fr1_desk, every 2nd (38 RGB-D pairs,
the slow end of the sequence: ~1.2 cm and ~1.3 deg between kept frames), undistorted with
TUM's fr1 RGB calibration (depth nearest-neighbour), then halved to 320x240 (colour area
average, depth: block mean with edge blocks invalid, nol_ros.reconstruction.tracking
.downscale_depth), written in TUM layout: rgb/*.jpg (quality 92), depth/*.png (uint16,
metres x 5000), associations.txt, groundtruth.txt (the original lines covering the piece),
intrinsics.json (pinhole, the scaled calibrated K, distortion already removed). ~2 MB.

Run: .venv/bin/python tools/make_tum_test_piece.py [--src DIR] [--out test/data/tum_fr1_desk_piece]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from nol_ros.datasets.tum import read_tum_sequence, tum_intrinsics
from nol_ros.reconstruction.tracking import downscale_depth

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "realdata" / "rgbd_sequences"
                                         / "tum_fr1_desk"))
    ap.add_argument("--out", default=str(ROOT / "test" / "data" / "tum_fr1_desk_piece"))
    ap.add_argument("--start", type=int, default=520)
    ap.add_argument("--end", type=int, default=595)
    ap.add_argument("--step", type=int, default=2)
    a = ap.parse_args()
    src, out = Path(a.src), Path(a.out)
    seq = read_tum_sequence(src, intrinsics="calibrated", start=a.start,
                            max_frames=(a.end - a.start) // a.step, step=a.step)
    if out.exists():
        shutil.rmtree(out)
    (out / "rgb").mkdir(parents=True)
    (out / "depth").mkdir()
    intr, _ = tum_intrinsics(src, "calibrated")
    assoc, t_min, t_max = [], np.inf, -np.inf
    for f in seq.frames:
        rgb, depth = f.load_rgb(), f.load_depth()  # undistorted
        rgb2 = cv2.resize(rgb, (intr.width // 2, intr.height // 2), interpolation=cv2.INTER_AREA)
        d2 = downscale_depth(depth, 2)
        tr, td = f.stamp_ns * 1e-9, f.depth_stamp_ns * 1e-9
        cv2.imwrite(str(out / "rgb" / f"{tr:.6f}.jpg"), rgb2[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        cv2.imwrite(str(out / "depth" / f"{td:.6f}.png"),
                    np.clip(np.round(d2 * 5000), 0, 65535).astype(np.uint16))
        assoc.append(f"{tr:.6f} rgb/{tr:.6f}.jpg {td:.6f} depth/{td:.6f}.png")
        t_min, t_max = min(t_min, tr, td), max(t_max, tr, td)
    (out / "associations.txt").write_text("\n".join(assoc) + "\n")
    gt = [ln for ln in (src / "groundtruth.txt").read_text().splitlines()
          if ln and not ln.startswith("#") and t_min - 0.05 <= float(ln.split()[0]) <= t_max + 0.05]
    (out / "groundtruth.txt").write_text("# timestamp tx ty tz qx qy qz qw (TUM fr1/desk, "
                                         "original lines)\n" + "\n".join(gt) + "\n")
    s = 2
    meta = {"source": f"TUM RGB-D freiburg1_desk frames {a.start}-{a.end - 1} every {a.step} "
                      "(../shared/realdata/rgbd_sequences/tum_fr1_desk), made by "
                      "tools/make_tum_test_piece.py; CC BY 4.0, cite Sturm et al. IROS 2012",
            "width": intr.width // s, "height": intr.height // s,
            "intrinsics": {"fx": intr.fx / s, "fy": intr.fy / s,
                           "cx": (intr.cx + 0.5) / s - 0.5, "cy": (intr.cy + 0.5) / s - 0.5,
                           "note": "TUM fr1 RGB calibration halved; images already undistorted"},
            "depth_scale": 5000.0}
    (out / "intrinsics.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(seq.frames)} frames -> {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
