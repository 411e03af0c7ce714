"""``nol-ros track``: the self-annotated camera trajectory of a bag or a dataset folder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from nol_ros.commands._common import EXIT_OK, add_command
from nol_ros.enums import TumIntrinsics
from nol_ros.errors import InputError

ORDER = 15


def load_sequence(args, scratch: Path):
    """(Sequence, odometry prior or None) from --bag or --dataset (TUM RGB-D or BOP scene)."""
    if args.bag:
        # lazy: CLI start-up (nol-ros --help imports every command module)
        from nol_ros.datasets.bag_import import bag_to_bop_scene, load_odometry
        from nol_ros.datasets.bop import read_bop_scene

        if not Path(args.bag).exists():
            raise InputError(f"bag '{args.bag}' does not exist")
        scene = scratch / "frames"   # the bag as a BOP scene, for this run only
        bag_to_bop_scene(args.bag, scene, rgb_topic=args.rgb_topic, depth_topic=args.depth_topic,
                         camera_info_topic=args.camera_info_topic)
        seq = read_bop_scene(scene)
        odom = None if args.no_odometry else load_odometry(scene, len(seq.frames))
        return seq, odom
    d = Path(args.dataset)
    if not d.is_dir():
        raise InputError(f"dataset folder '{d}' does not exist")
    if (d / "scene_camera.json").is_file():
        # lazy: CLI start-up (nol-ros --help imports every command module)
        from nol_ros.datasets.bag_import import load_odometry
        from nol_ros.datasets.bop import read_bop_scene

        seq = read_bop_scene(d)
        return seq, None if args.no_odometry else load_odometry(d, len(seq.frames))
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.datasets.tum import read_tum_sequence

    return read_tum_sequence(d, intrinsics=args.intrinsics), None


def run_track(args) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.datasets.tum import write_tum_trajectory
    from nol_ros.progress import TqdmProgress
    from nol_ros.reconstruction.tracking import TrackerConfig
    from nol_ros.selfannotate import check_intrinsics, lost_stretches, track_frames

    with tempfile.TemporaryDirectory(prefix="nol_track_") as tmp:
        seq, odom = load_sequence(args, Path(tmp))
        frames = seq.frames
        if args.max_frames > 0:
            frames = frames[: args.max_frames]
            odom = None if odom is None else odom[: args.max_frames]
        check_intrinsics(seq)
        decode = [0.0]

        def load(i):
            t = time.perf_counter()
            out = frames[i].load_rgb(), frames[i].load_depth()
            decode[0] += time.perf_counter() - t
            return out

        t0 = time.perf_counter()
        with TqdmProgress("track", stages=("tracking",), disable=args.quiet) as progress:
            tracker = track_frames(seq.intrinsics, len(frames), load, TrackerConfig(),
                                   progress, odom, [f.index for f in frames], integrate=False,
                                   stamps_ns=[f.stamp_ns for f in frames])
        wall = time.perf_counter() - t0
    res = tracker.result
    ok = res.ok
    keep = [k for k in range(len(frames)) if ok[k] or args.all]
    stamps = [frames[k].stamp_ns * 1e-9 for k in keep]
    poses = [res.frames[k].T_world_camera for k in keep]
    out = write_tum_trajectory(args.out, stamps, poses, comment=(
        f"nol-ros track: {len(frames)} frames of {args.bag or args.dataset}; camera-to-world "
        f"T_world_camera, world = the first camera; "
        + ("all frames (untrusted ones are predictions)" if args.all
           else "trusted frames only")))
    lost = lost_stretches(res, 1)
    n_reloc = sum(f.state == "relocalised" for f in res.frames)
    print(f"frames {len(frames)}: tracked {int(ok.sum())}, lost {int((~ok).sum())}"
          f" (re-localised {n_reloc}), keyframes {len(tracker.keyframes)}, loop closures "
          f"{len(tracker.loop_closures)}")
    if lost:
        print("untrusted frames: " + ", ".join(
            f"{frames[a].index}-{frames[b].index}" if b > a else f"{frames[a].index}"
            for a, b in lost[:20]) + (" ..." if len(lost) > 20 else ""))
    print(f"fps {len(frames) / wall:.1f} (incl. image decoding; "
          f"{len(frames) / max(wall - decode[0], 1e-9):.1f} on decoded frames)")
    gt = [f.T_world_camera for f in frames]
    if all(g is not None for g in gt):
        # lazy: CLI start-up (nol-ros --help imports every command module)
        from nol_ros.metrics import ate_rmse

        ate, _ = ate_rmse([res.frames[k].T_world_camera for k in range(len(frames)) if ok[k]],
                          [gt[k] for k in range(len(frames)) if ok[k]])
        print(f"ATE against the sequence's ground truth (trusted frames): {ate * 100:.2f} cm")
    print(f"trajectory -> {out}")
    return EXIT_OK


def register(sub) -> None:
    p = add_command(
        sub, "track", help="self-annotated camera trajectory of a bag or dataset (TUM format)",
        description="Track the camera through an RGB-D sequence with nol_ros's tracker (the "
        "offline path of the self-annotation chain: keyframe tracking, re-localisation, loop "
        "closure) and write the trajectory in TUM format: 'timestamp tx ty tz qx qy qz qw' per "
        "line, camera-to-world (T_world_camera), world = the first camera's frame. Prints the "
        "frames tracked and lost and the speed.",
        examples=["nol-ros track --dataset ../shared/realdata/rgbd_sequences/tum_fr1_desk "
                  "--out fr1_desk.txt",
                  "nol-ros track --bag my_bag --out trajectory.txt   # Xtion topics, /tf odometry"
                  " as prior",
                  "evo_ape tum groundtruth.txt trajectory.txt -a   # score it with evo"],
        func=run_track)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", help="rosbag2 folder with RGB-D (Xtion topic names by default)")
    src.add_argument("--dataset", help="TUM RGB-D folder (associations.txt or rgb.txt + "
                     "depth.txt) or a BOP scene folder")
    p.add_argument("--out", required=True, help="output trajectory file (TUM format)")
    p.add_argument("--intrinsics", default="auto", choices=list(TumIntrinsics),
                   help="TUM folders: calibrated = the RGB calibration in intrinsics.json, "
                   "images undistorted; ros_default = the OpenNI pinhole (fx=fy=525); auto "
                   "(default) = calibrated when intrinsics.json has it, else ros_default")
    p.add_argument("--rgb-topic", default="/camera/rgb/image_raw")
    p.add_argument("--depth-topic", default="/camera/depth_registered/image_raw")
    p.add_argument("--camera-info-topic", default="/camera/rgb/camera_info")
    p.add_argument("--no-odometry", action="store_true",
                   help="ignore the bag's /tf odometry (vision only)")
    p.add_argument("--max-frames", type=int, default=0, help="first n frames only (0 = all)")
    p.add_argument("--all", action="store_true",
                   help="also write untrusted frames (their pose is a prediction)")
    p.add_argument("--quiet", action="store_true")
