"""``nol-ros learn | render | train-detector | train-pose | evaluate``: the pipeline on your own
data, offline (no ROS graph): the same core functions the nodes call (nol_ros.learn)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from nol_ros.commands._common import EXIT_OK, add_command
from nol_ros.enums import Preset, RenderStageMethod
from nol_ros.errors import InputError
from nol_ros.workspace import LearntObject, Workspace

ORDER = 10  # before bringup/replay in --help


def _progress(args):
    """The command's progress on stderr: a bar for the running stage, a line per finished one
    (none with --quiet)."""
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.progress import TqdmProgress

    return TqdmProgress(f"  {getattr(args, 'command', '')}", stage_lines=True,
                        disable=args.quiet)


def _learn_config(args):
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.learn import LearnConfig, RenderStageConfig

    base = LearnConfig()
    inputs = {k: getattr(args, a) for k, a in (
        ("bag_rgb_topic", "rgb_topic"), ("bag_depth_topic", "depth_topic"),
        ("bag_camera_info_topic", "camera_info_topic"), ("smot_sequence", "smot_sequence"))
        if hasattr(args, a)}                       # learn reads a sequence; render does not
    return dataclasses.replace(
        base, workspace_root=args.workspace, **inputs,
        render=RenderStageConfig(enabled=not getattr(args, "no_render", False),
                                 method=args.method, checkpoint=args.checkpoint or "",
                                 preset=args.preset, refine_sources=not args.no_refine))


def run_learn(args) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.learn import SOURCE_BAG, SOURCE_DATASET, learn_object

    given = [a for a in (args.bag, args.dataset) if a]
    if len(given) != 1:
        raise InputError("give exactly one source: --bag BAG_FOLDER or --dataset FOLDER (a BOP "
                         "scene or a SMOT-layout root)")
    source = SOURCE_BAG if args.bag else SOURCE_DATASET
    with _progress(args) as progress:
        ws = learn_object(args.name, args.mesh, source, given[0], _learn_config(args),
                          progress, symmetric=args.symmetric, device=args.device)
    lo = LearntObject(Path(ws))
    rep = lo.read_report()
    entry = rep["objects"][args.name]
    sel = entry.get("selection", {})
    print(json.dumps({"workspace": ws, "views": len(sel.get("frames", [])),
                      "coverage": sel.get("coverage"),
                      "registration": {k: entry.get("registration", {}).get(k)
                                       for k in ("fitness", "rmse_m")},
                      "renders": str(lo.renders) if not args.no_render else None}))
    return EXIT_OK


def run_render(args) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.learn import render_training_set

    cfg = _learn_config(args).render
    ws = Workspace(args.workspace)
    lo = ws.learnt(args.name)
    oid = ws.object_id(args.name, assign=False)
    with _progress(args) as progress:
        rep = render_training_set(lo, args.name, oid, cfg, args.device, progress)
    print(json.dumps({k: rep.get(k) for k in ("method", "images", "seconds", "coverage")
                      if k in rep} | {"renders": str(lo.renders)}))
    return EXIT_OK


def _train(args, stage: str) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.recognition.pipeline import TrainConfig, run_stage, train_plan

    cfg = TrainConfig(workspace_root=args.workspace, models_dir=args.models or "",
                      preset=args.preset, max_seconds=args.max_seconds)
    names = [n for n in (args.objects or "").split(",") if n]
    plan = train_plan(cfg, names, args.preset, args.options or "")
    with _progress(args) as progress:
        out = run_stage(plan, stage, args.device, progress)
    print(json.dumps({k: out.get(k) for k in ("stage", "objects", "reused", "models_dir",
                                              "seconds", "steps", "loss")}))
    return EXIT_OK


def run_train_detector(args) -> int:
    return _train(args, "detector")


def run_train_pose(args) -> int:
    return _train(args, "pose")


def run_evaluate(args) -> int:
    # lazy: CLI start-up (nol-ros --help imports every command module)
    from nol_ros.recognition.evaluate import score_models, write_bop_csv
    from nol_ros.recognition.recognizer import Recognizer

    rec = Recognizer.load(args.models, device=args.device or None)
    learnt_root = train_scene = None
    if args.learnt_frames:
        if ":" not in args.learnt_frames:
            raise InputError(f"--learnt-frames '{args.learnt_frames}': use WORKSPACE_ROOT:"
                             "TRAIN_SCENE, e.g. ws:data/demo/train/000001")
        learnt_root, train_scene = (Path(p) for p in args.learnt_frames.rsplit(":", 1))
    with _progress(args) as progress:
        sc = score_models(rec, args.scene, args.bop_models, learnt_root, train_scene,
                          args.id_map, image_step=args.step,
                          max_images=args.max_images or None, progress=progress)
    if args.csv:
        write_bop_csv(args.csv, sc.result.rows)
    print(json.dumps({**sc.summary(), "csv": args.csv or None}, indent=1))
    return EXIT_OK


def _source_args(p) -> None:
    p.add_argument("--workspace", default="nol_workspace",
                   help="workspace root (one folder per object; default nol_workspace)")
    p.add_argument("--method", default="auto", choices=list(RenderStageMethod),
                   help="renderer: auto = the one the shipped model card measured best (nol, "
                        "fit: the surface colour fitted to the views, or IBR)")
    p.add_argument("--checkpoint", default="", help="NOL checkpoint for --method nol")
    p.add_argument("--preset", default="demo", choices=list(Preset),
                   help="pose grid of the training set (tiny 54, demo 378, cpu 756, paper "
                        "9072 images)")
    p.add_argument("--no-refine", action="store_true",
                   help="do not refine the source poses before rendering")
    p.add_argument("--device", default="", help="cpu | cuda (default: cuda when present)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _input_args(p) -> None:
    """Where learn reads the sequence from (render works on the learnt views)."""
    p.add_argument("--rgb-topic", default="/camera/rgb/image_raw")
    p.add_argument("--depth-topic", default="/camera/depth_registered/image_raw",
                   help="16UC1 mm or 32FC1 m")
    p.add_argument("--camera-info-topic", default="/camera/rgb/camera_info")
    p.add_argument("--smot-sequence", default="train/seq1",
                   help="sequence of a SMOT-layout root (default train/seq1)")


def _train_args(p) -> None:
    p.add_argument("--workspace", default="nol_workspace", help="workspace root")
    p.add_argument("--objects", default="", help="comma-separated names (default: all learnt)")
    p.add_argument("--preset", default="demo", choices=list(Preset))
    p.add_argument("--models", default="", help="models folder (default WORKSPACE/_models)")
    p.add_argument("--options", default="", metavar="YAML",
                   help="overrides, e.g. '{detector.epochs: 4, pose.steps: 200}'")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="wall-clock budget of the stage (0 = none)")
    p.add_argument("--device", default="")
    p.add_argument("--quiet", action="store_true")


def register(sub) -> None:
    p = add_command(
        sub, "learn", "learn an object from a bag or a dataset folder (self-annotation, "
        "views, training renders)",
        "Self-annotate the camera and the object (mesh in metres) in an RGB-D sequence, pick "
        "the source views and render the object's training set with NOL (or its IBR baseline) "
        "into WORKSPACE/NAME/. The sequence is a rosbag2 folder (Xtion topics by default) or "
        "a dataset folder: a BOP scene (scene_camera.json + scene_gt.json) or a SMOT-layout "
        "root (camera_intrinsic.json). Prints a JSON summary on stdout.",
        ["nol-ros learn mug --mesh mug.ply --bag my_bag --workspace ws",
         "nol-ros learn cracker --mesh models/obj_000001.ply --dataset data/demo/train/000001",
         "nol-ros learn drill --mesh drill.ply --dataset SMOT --smot-sequence train/seq2 "
         "--preset cpu"],
        run_learn)
    p.add_argument("name", help="object name (a folder name: no '/')")
    p.add_argument("--mesh", required=True, help="untextured mesh, PLY/OBJ in metres")
    p.add_argument("--bag", default="", help="rosbag2 folder with RGB, depth, CameraInfo")
    p.add_argument("--dataset", default="", help="BOP scene folder or SMOT-layout root")
    p.add_argument("--symmetric", action="store_true", help="the object is symmetric")
    p.add_argument("--no-render", action="store_true", help="stop after view selection")
    _source_args(p)
    _input_args(p)

    r = add_command(
        sub, "render", "render a learnt object's training set again",
        "Render a learnt object (WORKSPACE/NAME with selected views) on the pose grid of a "
        "preset into WORKSPACE/NAME/renders/ (a BOP render set), e.g. with another renderer "
        "or a finer grid.",
        ["nol-ros render mug --workspace ws --preset cpu",
         "nol-ros render mug --workspace ws --method ibr"],
        run_render)
    r.add_argument("name", help="learnt object name")
    _source_args(r)

    for name, fn, what in (("train-detector", run_train_detector, "the 2D detector"),
                           ("train-pose", run_train_pose, "the 6D pose estimator")):
        t = add_command(
            sub, name, f"train {what} on the renders of learnt objects",
            f"Train {what} on the render sets of learnt objects (pasted detector images or "
            "pose crops are made from them); when both the detector and the pose estimator "
            "are trained for the same objects and preset, the models folder the recognizer "
            "loads is written. A finished stage is skipped, an interrupted one resumed.",
            [f"nol-ros {name} --workspace ws --preset demo",
             f"nol-ros {name} --workspace ws --objects mug,cracker --preset cpu "
             "--options '{seed: 1}'"],
            fn)
        _train_args(t)

    e = add_command(
        sub, "evaluate", "measure a models folder on BOP test scenes (mAP, ADD)",
        "Run the recogniser of a models folder on BOP test scenes (rgb, depth, scene_gt, "
        "scene_gt_info) and print mAP@0.5 and ADD(-S) recall (< 10 % of the diameter) with "
        "and without ICP as JSON; --csv writes the poses in the BOP challenge format.",
        ["nol-ros evaluate --models ws/_models --scene data/demo/test/000001 "
         "--bop-models data/demo/models",
         "nol-ros evaluate --models ws/_models --scene S1 S2 --bop-models M --csv results.csv"],
        run_evaluate)
    e.add_argument("--models", required=True, help="models folder (recognition.json)")
    e.add_argument("--scene", nargs="+", required=True, help="BOP test scene folder(s)")
    e.add_argument("--bop-models", required=True,
                   help="BOP models folder of the ground truth (obj_%%06d.ply + models_info)")
    e.add_argument("--id-map", default="", metavar="NAME=ID,...",
                   help="ground-truth id of a learnt object whose name is not in models_info")
    e.add_argument("--max-images", type=int, default=0, help="per scene (0 = all)")
    e.add_argument("--step", type=int, default=1, help="every n-th image")
    e.add_argument("--csv", default="", help="write BOP CSV results here")
    e.add_argument("--learnt-frames", default="", metavar="WORKSPACE:TRAIN_SCENE",
                   help="score ADD in the frames the objects were learnt in: WORKSPACE the root "
                        "given to learn (--workspace), TRAIN_SCENE the BOP scene they were "
                        "learnt from (its scene_gt); an untextured mesh fixes its frame only up "
                        "to its symmetries (the recall in the mesh's own frame is printed too)")
    e.add_argument("--device", default="")
    e.add_argument("--quiet", action="store_true")
