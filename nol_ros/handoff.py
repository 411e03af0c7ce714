"""What the robot hands the workstation: a learnt object's *package*, written on the robot after
view selection and read on the workstation by the render and training stages.

The robot reconstructs and selects views (it has the camera); the workstation renders the
training set and trains the recognisers (it has the GPU). The package is what those later
stages read of a learnt object's workspace, and nothing else::

    PKG/objects/NAME/       mesh.ply, object.json, views.json, views/ (the source crops the
                            renderer reads), frames.json, masks/ (of the keyframes only)
    PKG/sequence/           the keyframes as a BOP scene: rgb/, depth/ (PNG as recorded),
                            scene_camera.json (intrinsics, T_world_camera), scene_stamps.json
    PKG/report.json         the self-annotation report, PKG/trajectory.json
    PKG/package.json        what it is: object, keyframes, where it came from

Keyframes: the frames of the selected views and every ``keyframe_step``-th frame (the robot's
own frames are the detector's scene backgrounds, with the objects' masks painted out). The
package has the layout of a learnt-object workspace (``ROOT/NAME/``), so on the workstation it
*is* the object's workspace (LearnObject with source SOURCE_WORKSPACE renders it) whether it
arrived by a transfer (nol_ros.transfer) or lies on a shared file system.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nol_ros.errors import FileFormatError, InputError
from nol_ros.io_utils import atomic_write_json
from nol_ros.workspace import AnnotationFiles

PACKAGE_JSON = "package.json"
PACKAGES = "packages"     # a view-selection workspace keeps its packages in packages/NAME


def pack_learnt_object(workspace: str | Path, name: str, sequence_dir: str | Path,
                       out_dir: str | Path, keyframe_step: int = 4) -> Path:
    """Write the package of object ``name`` of a self-annotated ``workspace`` (as
    run_self_annotation wrote it) and its ``sequence_dir`` (a BOP scene) into ``out_dir``
    (replaced whole: written beside it, then renamed). Returns ``out_dir``."""
    ws, seq, out = Path(workspace), Path(sequence_dir), Path(out_dir)
    odir = AnnotationFiles(ws).object(name)
    for need in (odir.views_json, odir.mesh, odir.object_json):
        if not need.is_file():
            raise FileFormatError(f"'{need}' is missing: '{ws}' holds no selected views of "
                                  f"'{name}' (view selection failed or ran elsewhere)")
    if not (seq / "scene_camera.json").is_file():
        raise FileFormatError(f"'{seq}' is not a BOP scene (no scene_camera.json)")
    if keyframe_step < 1:
        raise InputError(f"keyframe_step {keyframe_step} must be >= 1")
    cams = json.loads((seq / "scene_camera.json").read_text())
    ids = sorted(int(k) for k in cams)
    views = [int(v["frame"]) for v in json.loads(odir.views_json.read_text())["views"]]
    keys = sorted(set(views) | set(ids[::keyframe_step]))
    missing = [k for k in keys if str(k) not in cams]
    if missing:
        raise FileFormatError(f"selected frames {missing[:5]} are not in '{seq}': the views "
                              "were selected on another sequence")
    tmp = out.parent / f".{out.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    dst = AnnotationFiles(tmp).object(name)
    shutil.copytree(odir.dir, dst.dir, ignore=shutil.ignore_patterns(odir.masks_dir.name))
    if odir.masks_dir.is_dir():
        dst.masks_dir.mkdir()
        for k in keys:
            if odir.mask(k).is_file():
                shutil.copy2(odir.mask(k), dst.mask(k))
    sq = AnnotationFiles(tmp).sequence
    for k in keys:
        for sub in ("rgb", "depth"):
            src = next((p for p in (seq / sub / f"{k:06d}{e}" for e in (".png", ".jpg"))
                        if p.is_file()), None)
            if src is None:
                raise FileFormatError(f"'{seq}/{sub}/{k:06d}.png' is missing")
            (sq / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, sq / sub / src.name)
    atomic_write_json(sq / "scene_camera.json", {str(k): cams[str(k)] for k in keys})
    if (seq / "scene_stamps.json").is_file():
        st = json.loads((seq / "scene_stamps.json").read_text())
        atomic_write_json(sq / "scene_stamps.json", {str(k): st[str(k)] for k in keys
                                                     if str(k) in st})
    for f in ("report.json", "trajectory.json"):
        if (ws / f).is_file():
            shutil.copy2(ws / f, tmp / f)
    atomic_write_json(tmp / PACKAGE_JSON, {"object": name, "keyframes": keys,
                                           "views": views, "keyframe_step": keyframe_step,
                                           "frames_in_sequence": len(ids),
                                           "workspace": str(ws.resolve()),
                                           "sequence": str(seq.resolve())})
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def check_package(folder: str | Path, name: str) -> Path:
    """FileFormatError unless ``folder`` holds a learnt object ``name`` the render stage can use
    (objects/NAME/ with views.json, mesh.ply, object.json). Returns the folder."""
    d = Path(folder)
    odir = AnnotationFiles(d).object(name)
    missing = [f.name for f in (odir.views_json, odir.mesh, odir.object_json) if not f.is_file()]
    if missing:
        raise FileFormatError(f"'{d}' is not a learnt object '{name}' (no objects/{name}/"
                              f"{', '.join(missing)}); send the package view selection wrote "
                              f"(<workspace>/{PACKAGES}/{name})")
    return d
