"""A training set rendered by several workers: the pose grid of one object dealt out in batches
to N workers (torchrun ranks on one or several machines, or plain processes on hosts without a
shared file system), the parts merged into one render set that is the single worker's set --
the same files, byte for byte, and the same annotations.

One machine (or a torchrun job over several with a shared file system)::

    torchrun --standalone --nproc_per_node 2 $(which nol-ros) render mug --workspace ws

``nol-ros render`` (``nol_ros.learn.render_training_set``) sees the torchrun environment and
calls :func:`render_training_set_sharded`: rank 0 prepares the renderer once (the source poses
refined, the NOL network fine-tuned on the object) and sends the result to the others, every
rank renders its part, rank 0 merges and swaps the set into place.

Hosts without a shared file system (copy the object's workspace to each, e.g. with the
transfer node, and the parts back)::

    python -m nol_ros.recognition.render_shards refine ws mug --out poses.json
    python -m nol_ros.recognition.render_shards part ws mug --shard 0/8 --poses poses.json --out p0
    ...                                                      (--shard 7/8 on the 8th host)
    python -m nol_ros.recognition.render_shards merge --out ws/mug/renders p0 p1 ... p7

Why the parts are exact: batch b of ``batch`` views goes to worker b mod N, so every worker
hands its renderer the very batches the single worker does (batched float kernels need not give
the same bits for another batch composition); every worker renders from the same prepared
renderer (refined source poses, fine-tuned network: ``refine --out poses.json`` also writes
poses.json.net.pt, which ``part --poses`` reads from beside the JSON); the merge sorts every
annotation file by image id, as one writer writes them. The same
bits also need the same code, torch build and threads per process on every worker (torchrun
sets one thread per process). Only wall-clock fields differ (``seconds`` in render_set.json,
render_report.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from nol_ros import distributed
from nol_ros.device import release_memory
from nol_ros.enums import Preset, RenderStageMethod
from nol_ros.errors import FileFormatError, InputError, NolError
from nol_ros.io_utils import atomic_write_json
from nol_ros.learn import (
    RenderStageConfig,
    finish_render_set,
    load_renderer,
    render_report_head,
)
from nol_ros.progress import ProgressFn, noop_progress, prefixed
from nol_ros.recognition.pipeline import recognition_preset
from nol_ros.recognition.trainset import write_render_set
from nol_ros.workspace import RENDER_SET_FILE, LearntObject, Workspace

SCENE_FILES = ("scene_camera.json", "scene_gt.json", "scene_gt_info.json", "scene_stamps.json")
IMAGE_DIRS = ("rgb", "depth", "mask", "mask_visib")


def source_poses(renderer) -> np.ndarray:
    """(K, 4, 4) float64 T_camera_object of the renderer's source views (after refinement)."""
    return np.stack([np.asarray(s.T_camera_object, np.float64) for s in renderer.sources])


def apply_source_poses(renderer, T: np.ndarray) -> None:
    """Give a freshly loaded renderer the (refined) source poses another worker computed: its
    state is then the refining renderer's (what NolRenderer.refine_sources sets at its end)."""
    T = np.asarray(T, np.float64)
    if T.shape != (len(renderer.sources), 4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"source poses {T.shape}: need ({len(renderer.sources)}, 4, 4) finite "
                         "values, one per source view of this object (refine the same object)")
    renderer._set_poses(T)  # the renderer's own update of its sources and their cached maps


def prepared_state(renderer) -> dict:
    """What the one-off preparation of a renderer (nol_ros.nol.renderer.prepare_renderer: the
    source poses refined, the network fine-tuned) changed, to hand to other workers: the
    source poses and the network's weights (None for the IBR methods)."""
    net = renderer.net
    return {"T_camera_object": source_poses(renderer),
            "net": None if net is None else {k: v.detach().cpu().clone()
                                             for k, v in net.state_dict().items()}}


def apply_prepared_state(renderer, state: dict) -> None:
    """Give a renderer loaded without preparation (load_renderer(prepare=False)) the state
    another worker's preparation reached (:func:`prepared_state`): the same renders follow."""
    apply_source_poses(renderer, state["T_camera_object"])
    if state.get("net") is not None:
        if renderer.net is None:
            raise InputError("the prepared state has network weights but this renderer has no "
                             "network: prepare and render with the same method")
        net = copy.deepcopy(renderer.net)   # the shipped / shared model is never changed
        net.load_state_dict(state["net"])
        renderer.net = net.eval()


def render_part(workspace, name: str, obj_id: int, cfg, shard: tuple[int, int],
                out_dir: str | Path, device: str | None = None, prepared: dict | None = None,
                progress: ProgressFn = noop_progress) -> dict:
    """Render part ``shard`` = (k, n) of the object's set into ``out_dir`` (a render set
    holding only that part). workspace: the learnt object's folder (or LearntObject); cfg:
    nol_ros.learn.RenderStageConfig (method, preset, batch). prepared: the renderer state to
    render from (:func:`prepare`); None = prepared here (every part must use the same)."""
    r, _ = load_renderer(workspace, name, cfg, device, prepare=prepared is None)
    if prepared is not None:
        apply_prepared_state(r, prepared)
    return write_render_set(r, r.mesh, obj_id, out_dir, recognition_preset(cfg.preset).grid,
                            source=r.cfg.method, name=name, batch=cfg.batch,
                            progress=progress, shard=shard)


def prepare(workspace, name: str, cfg, device: str | None = None) -> dict:
    """The object's renderer prepared once (source poses refined, network fine-tuned, as
    ``cfg`` says): :func:`prepared_state`, for :func:`render_part` on every host."""
    r, _ = load_renderer(workspace, name, cfg, device)
    return prepared_state(r)


def save_prepared(state: dict, out: str | Path, name: str) -> None:
    """``out`` (JSON: the object and its source poses) and, with network weights, OUT.net.pt."""
    out = Path(out)
    doc = {"object": name, "T_camera_object": np.asarray(state["T_camera_object"]).tolist()}
    if state.get("net") is not None:
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        net = out.with_name(out.name + ".net.pt")
        torch.save(state["net"], net)
        doc["net"] = net.name
    atomic_write_json(out, doc)


def load_prepared(path: str | Path) -> dict:
    p = Path(path)
    doc = _load(p)
    state = {"T_camera_object": np.asarray(doc["T_camera_object"], np.float64), "net": None}
    if doc.get("net"):
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        f = p.parent / Path(doc["net"]).name     # beside the JSON, never elsewhere
        if not f.is_file():
            raise FileFormatError(f"'{f}' (the fine-tuned network of '{p}') is missing; copy it "
                                  "with the poses")
        state["net"] = torch.load(f, map_location="cpu", weights_only=True)
    return state


# -- merging --------------------------------------------------------------------------------------
def _load(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FileFormatError(f"'{p}' is unreadable ({e}); render that part again") from e


def merge_parts(parts: list[str | Path], out_dir: str | Path) -> dict:
    """Merge the parts of a sharded render set into ``out_dir`` (created; an existing
    render_set.json there gains the object, as write_render_set does). The parts' image files
    are moved, not copied. Checks that the parts are the n shards of one set, each once, and that
    together they hold every image. Returns the merged render_set.json."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise InputError("no parts to merge")
    metas = [_load(p / RENDER_SET_FILE) for p in parts]
    first = metas[0]
    oids = sorted(first.get("objects", {}))
    if len(oids) != 1:
        raise FileFormatError(f"'{parts[0]}' holds objects {oids}: a part holds one object")
    oid = oids[0]
    shards = []
    for p, m in zip(parts, metas):
        e = m.get("objects", {}).get(oid)
        same = m.get("source") == first.get("source") and m.get("grid") == first.get("grid")
        if not same or e is None:
            raise FileFormatError(f"'{p}' is not a part of the same set as '{parts[0]}' (source, "
                                  "grid or object differ)")
        shards.append(tuple(e.get("shard", (0, 1))))
    n = shards[0][1]
    if sorted(shards) != [(k, n) for k in range(n)]:
        raise InputError(f"parts {[f'{k}/{c}' for k, c in shards]} are not the shards 0..{n - 1} "
                         f"of {n}, each once; render the missing ones")
    out = Path(out_dir)
    scene = out / f"{int(oid):06d}"
    merged: dict[str, dict] = {f: {} for f in SCENE_FILES}
    for p in parts:
        src = p / f"{int(oid):06d}"
        for f in SCENE_FILES:
            if not (src / f).is_file():
                if f == "scene_stamps.json":
                    continue
                raise FileFormatError(f"'{src / f}' is missing: the part is incomplete")
            d = _load(src / f)
            dup = set(d) & set(merged[f])
            if dup:
                raise InputError(f"image ids {sorted(dup, key=int)[:5]} are in two parts")
            merged[f].update(d)
    entry = dict(first["objects"][oid])
    n_images = sum(m["objects"][oid]["images"] for m in metas)
    n_empty = sum(m["objects"][oid]["empty_images"] for m in metas)
    expected = entry["views"] * len(entry["inplane_deg"])
    if n_images != expected or len(merged["scene_gt.json"]) != expected:
        raise InputError(f"the parts hold {n_images} images, the set has {expected}")
    if n_empty == n_images:
        raise InputError(f"object {oid}: the renderer produced no object pixels in any of "
                         f"{n_images} images; check the renderer and the mesh")
    for p in parts:
        src = p / f"{int(oid):06d}"
        for sub in IMAGE_DIRS:
            if not (src / sub).is_dir():
                continue
            (scene / sub).mkdir(parents=True, exist_ok=True)
            for f in sorted((src / sub).iterdir()):
                f.replace(scene / sub / f.name)
    for f, d in merged.items():
        if d:
            atomic_write_json(scene / f, {k: d[k] for k in sorted(d, key=int)})
    entry.pop("shard", None)
    entry.update(images=n_images, empty_images=n_empty,
                 seconds=max(m["objects"][oid]["seconds"] for m in metas))
    meta_path = out / RENDER_SET_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update({"source": first["source"], "grid": first["grid"]})
    meta.setdefault("objects", {})[oid] = entry
    atomic_write_json(meta_path, meta)
    return meta


# -- torchrun ----------------------------------------------------------------------------------
def render_training_set_sharded(workspace, name: str, obj_id: int, cfg,
                                device: str | None = None,
                                progress: ProgressFn = noop_progress) -> dict:
    """nol_ros.learn.render_training_set across the ranks of a torchrun job (the same files
    and report; the report also says how many workers). workspace: the learnt object's folder
    (or nol_ros.workspace.LearntObject). Rank 0 prepares the renderer (refinement, fine-tuning)
    and sends the result, every rank renders its part into renders.tmp/part_RANK, rank 0 merges
    and swaps renders/ in; every rank returns the report."""
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch.distributed as dist

    ctx = distributed.current()
    report = progress if ctx.is_main else noop_progress
    lo = workspace if isinstance(workspace, LearntObject) else LearntObject(Path(workspace))
    tmp = lo.renders_tmp
    t0, c0 = time.perf_counter(), time.process_time()
    if ctx.is_main and tmp.exists():
        shutil.rmtree(tmp)
    ctx.barrier()
    report("render_setup", 0.0, f"{name}: loading the {cfg.method} renderer on "
                                f"{ctx.world_size} workers")
    r, prep = load_renderer(lo, name, cfg, ctx.device(device), prepare=ctx.is_main,
                            progress=prefixed(report, name))
    box: list = [None, None]
    if ctx.is_main:
        box = [prepared_state(r), prep]   # the report's head reads what it needs of prep
    dist.broadcast_object_list(box, src=0)
    if not ctx.is_main:
        apply_prepared_state(r, box[0])
    prep = box[1]
    out = {**render_report_head(name, obj_id, r, cfg, prep, t0), "workers": ctx.world_size}
    part = tmp / f"part_{ctx.rank}"
    t2 = time.perf_counter()
    failed = None
    try:
        write_render_set(r, r.mesh, obj_id, part, recognition_preset(cfg.preset).grid,
                         source=r.cfg.method, name=name, batch=cfg.batch,
                         progress=prefixed(report, name, "render"),
                         shard=(ctx.rank, ctx.world_size))
    except NolError as e:
        failed = f"rank {ctx.rank}: {e}"
    if ctx.agree(failed is not None):            # every rank stops when one part failed
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(failed or "another worker failed to render its part")
    out["seconds"]["render"] = time.perf_counter() - t2
    if ctx.is_main:
        report("render", 1.0, f"{name}: merging {ctx.world_size} parts")
        meta = merge_parts([tmp / f"part_{k}" for k in range(ctx.world_size)], tmp)
        entry = meta["objects"][str(int(obj_id))]
        for k in range(ctx.world_size):
            shutil.rmtree(tmp / f"part_{k}")
        finish_render_set(lo, tmp, out, entry, t0, c0)
    ctx.barrier()
    if not ctx.is_main:
        out = json.loads(lo.render_report.read_text())
    del r
    release_memory()
    return out


# -- command line --------------------------------------------------------------------------------
def _cfg(a):
    return RenderStageConfig(method=a.method, checkpoint=a.checkpoint, preset=a.preset,
                             refine_sources=not a.no_refine, finetune=not a.no_finetune,
                             batch=a.batch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m nol_ros.recognition.render_shards",
        description="Render one object's training set in parts on several hosts and merge the "
                    "parts (one machine: torchrun ... nol-ros render NAME instead).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("refine", "part"):
        p = sub.add_parser(cmd)
        p.add_argument("root", help="workspace root (the object is ROOT/NAME)")
        p.add_argument("name")
        p.add_argument("--preset", default="demo", choices=list(Preset))
        p.add_argument("--method", default="auto", choices=list(RenderStageMethod))
        p.add_argument("--checkpoint", default="")
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--no-refine", action="store_true")
        p.add_argument("--no-finetune", action="store_true")
        p.add_argument("--device", default=None)
        p.add_argument("--out", required=True)
        if cmd == "part":
            p.add_argument("--shard", required=True, metavar="K/N")
            p.add_argument("--poses", default="", help="the prepared renderer state (refine --out)")
    m = sub.add_parser("merge")
    m.add_argument("--out", required=True, help="the render set folder (WORKSPACE/NAME/renders)")
    m.add_argument("parts", nargs="+")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "merge":
            meta = merge_parts(a.parts, a.out)
            print(json.dumps({k: v["images"] for k, v in meta["objects"].items()}))
            return 0
        root = Workspace(a.root)
        ws = root.learnt(a.name)
        if a.cmd == "refine":
            save_prepared(prepare(ws, a.name, _cfg(a), a.device), a.out, a.name)
            return 0
        k, _, n = a.shard.partition("/")
        try:
            shard = (int(k), int(n))
        except ValueError:
            ap.error(f"--shard {a.shard}: use K/N, e.g. 0/8")
        prepared = load_prepared(a.poses) if a.poses else None
        entry = render_part(ws, a.name, root.object_id(a.name, assign=False), _cfg(a),
                            shard, a.out, a.device, prepared)
        print(json.dumps({"images": entry["images"], "shard": entry.get("shard", [0, 1])}))
        return 0
    except NolError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
