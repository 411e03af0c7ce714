"""python -m nol_ros.datasets.synthetic --preset small --out DIR [--seed N] [--objects DIR
[--object-names A,B]]"""

import argparse
import sys

from nol_ros.datasets.synthetic.generate import generate
from nol_ros.enums import WorldPreset
from nol_ros.errors import NolError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m nol_ros.datasets.synthetic",
        description="Generate the synthetic SMOT-like dataset (BOP scenes, models, rosbag2, "
                    "contact sheet). Example: --preset small --out /tmp/nol_small")
    ap.add_argument("--preset", default="small", choices=list(WorldPreset))
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--objects", default="", metavar="DIR",
                    help="scanned textured objects to put on the table instead of the "
                         "procedural ones: one subfolder per object holding textured.obj, its "
                         ".mtl and texture (the layout of ../shared/realdata/ycb_real_textures)")
    ap.add_argument("--object-names", default="",
                    help="with --objects: the subfolders to put on the table, comma separated "
                         "(default: the first four)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    try:
        s = generate(a.out, a.preset, a.seed, progress=not a.quiet, objects_dir=a.objects or None,
                     object_names=[n for n in a.object_names.split(",") if n] or None)
    except NolError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 2
    for name, q in s["sequences"].items():
        print(f"{name}: {q['frames']} frames, {q['s_per_frame']:.2f} s/frame")
    print(f"objects {s['objects']} (symmetric: {s['symmetric']}); total {s['total_s']:.1f} s; "
          f"contact sheet {a.out}/contact_sheet.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
