"""Scale-out on one machine: sharded training-set rendering and data-parallel training, 1 -> N
processes (torchrun, gloo on the CPU), against one process in the same run.

    .venv/bin/python bench/bench_scale.py render            # demo grid (378 images), NOL
    .venv/bin/python bench/bench_scale.py train             # detector / pose net / NOL steps

``render``: a learnt object (``--object-workspace WS --name NAME``, a folder LearnObject wrote;
by default the mustard bottle of the small synthetic world, self-annotated once into
.nol_bench/scale/) is rendered on the grid of ``--preset`` three ways, each a fresh process:
one process with one thread, one process with ``--workers`` threads, ``--workers`` torchrun
ranks with one thread each (the render stage of ``nol-ros render``, learn.render_training_set,
under torchrun: the path users run). Prints the render-stage and whole-process wall times, the
busiest rank's CPU time (the speed-up free cores would give, on a loaded machine), the
speed-ups, and checks the sets are identical.

``train``: seconds per optimiser step of the ``cpu`` presets of the detector (global batch 8
images 240x320) and the pose net (global batch 32 crops at 64 px) and of the NOL ``cpu``
network (accumulate 10), one process vs ``--workers`` ranks at the same global batch, plus the
share of a detector step spent preparing the global batch (which every rank repeats).

Every figure is wall time on a shared machine: the load average is printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".nol_bench" / "scale"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def default_object() -> tuple[Path, str]:
    """The small world's mustard bottle, self-annotated once (cached)."""
    ws = CACHE / "learnt"
    name = "mustard_bottle"
    if (ws / name / "objects" / name / "views.json").is_file():
        return ws, name
    from nol_ros.datasets.bop import read_bop_scene, read_models_info
    from nol_ros.datasets.synthetic.generate import generate
    from nol_ros.selfannotate import ObjectSpec, run_self_annotation

    world = CACHE / "world"
    if not (world / "train").is_dir():
        generate(world, "small", seed=0, progress=False)
    seq = read_bop_scene(world / "train" / "000001", world / "models")
    info = read_models_info(world / "models" / "models_info.json")
    o = next(o for o in seq.objects if info[o.obj_id]["name"] == name)
    run_self_annotation(seq, [ObjectSpec(name=name, mesh_path=o.mesh_path, obj_id=1)],
                        ws / name)
    (ws / "object_ids.json").write_text(json.dumps({name: 1}))
    return ws, name


def _cpu_children() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd, env) -> tuple[float, str, float]:
    """(wall s, stdout, CPU s of the process and every process it waited for)."""
    t0, c0 = time.perf_counter(), _cpu_children()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt, p.stdout, _cpu_children() - c0


def bench_render(a) -> dict:
    root, name = (Path(a.object_workspace), a.name) if a.object_workspace else default_object()
    runs = [("1 process x 1 thread", 1, 1), (f"1 process x {a.workers} threads", 1, a.workers),
            (f"{a.workers} processes x 1 thread (torchrun)", a.workers, 1)]
    out = {"preset": a.preset, "method": a.method, "object": name, "runs": []}
    sets = {}
    for label, procs, threads in runs * a.repeat:     # interleaved rounds
        scratch = CACHE / f"render_{procs}x{threads}"
        if scratch.exists():
            shutil.rmtree(scratch)
        shutil.copytree(root / name / "objects", scratch / name / "objects")
        shutil.copy(root / "object_ids.json", scratch / "object_ids.json")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "_render", str(scratch), name, a.preset, a.method]
        if procs > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(procs), *cmd[1:]]
        before = load()
        wall, stdout, cpu = _run(cmd, env)
        stage = json.loads([x for x in stdout.splitlines() if x.startswith("{")][-1])
        rep = json.loads((scratch / name / "renders" / "render_report.json").read_text())
        row = {"run": label, "render_s": rep["seconds"]["render"],
               "refine_s": rep["seconds"].get("refine", 0.0), "stage_wall_s": stage["wall_s"],
               "stage_cpu_s_per_rank": stage["cpu_s"],
               "stage_cpu_s_max_rank": max(stage["cpu_s"]), "process_wall_s": wall,
               "process_cpu_s": cpu, "images": rep["images"], "load_before": before,
               "load_after": load()}
        out["runs"].append(row)
        sets[label] = scratch / name / "renders"
        print(json.dumps(row), flush=True)
    out["median"] = _medians(out["runs"], "run", ("render_s", "stage_wall_s",
                                                    "stage_cpu_s_max_rank", "process_wall_s",
                                                    "process_cpu_s"))
    base = out["median"][runs[0][0]]
    for m in out["median"].values():
        m["speedup_render"] = base["render_s"] / m["render_s"]
        m["speedup_stage_wall"] = base["stage_wall_s"] / m["stage_wall_s"]
        # what free cores would give: the busiest rank's CPU time against one process's
        m["speedup_cpu_bound"] = base["stage_cpu_s_max_rank"] / m["stage_cpu_s_max_rank"]
        m["speedup_wall"] = base["process_wall_s"] / m["process_wall_s"]
    a_set, b_set = sets[runs[0][0]], sets[runs[2][0]]
    files = sorted(p.relative_to(a_set) for p in a_set.rglob("*")
                   if p.is_file() and p.suffix != ".json" or p.name.startswith("scene_"))
    out["identical_files"] = all((a_set / f).read_bytes() == (b_set / f).read_bytes()
                                 for f in files)
    out["files_compared"] = len(files)
    return out


def _medians(rows, key, fields) -> dict:
    import statistics

    out: dict = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return {k: {f: statistics.median(x[f] for x in v) for f in fields} | {"n": len(v)}
            for k, v in out.items()}


# -- training --------------------------------------------------------------------------------
def _train_data() -> Path:
    d = CACHE / "train_data"
    if (d / "det" / "annotations.json").is_file():
        return d
    from nol_ros.datasets.synthetic.objects import make_object
    from nol_ros.recognition.detset import DetectionSetConfig, write_detection_set
    from nol_ros.recognition.poses import PoseGridConfig
    from nol_ros.recognition.renderers import TexturedMeshRenderer
    from nol_ros.recognition.trainset import load_paste_samples, write_render_set

    grid = PoseGridConfig(az_step_deg=30, el_step_deg=20, el_max_deg=60, inplane_step_deg=15,
                          crop_size=128)
    for oid in (1, 3):
        m = make_object(oid, 0)
        write_render_set(TexturedMeshRenderer(m), m, oid, d / "render", grid, source="gt",
                         name=m.name)
    paste = {o: load_paste_samples(d / "render" / f"{o:06d}", o) for o in (1, 3)}
    write_detection_set(paste, d / "det", DetectionSetConfig(n_images=96, objects=(1, 3),
                                                             n_backgrounds=8),
                        {1: "a", 3: "b"})
    return d


def train_worker(kind: str, data: Path, out: Path, steps: int) -> None:
    """One training run (plain or a torchrun rank): prints its wall time per step (rank 0)."""
    import torch

    from nol_ros import distributed

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.perf_counter()
    if kind == "detector":
        from nol_ros.recognition.detector import detector_config, train_detector

        cfg = detector_config("cpu", epochs=1, warmup_steps=2)
        r = train_detector(data / "det" / "annotations.json", out, cfg, seed=0)
        n = r["steps"]
    elif kind == "pose":
        from nol_ros.datasets.synthetic.objects import make_object
        from nol_ros.recognition.posenet import posenet_config, train_posenet
        from nol_ros.recognition.trainset import load_pose_samples

        cfg = posenet_config("cpu", steps=steps, ckpt_every=steps)
        m = make_object(1, 0)
        s = [load_pose_samples(data / "render" / "000001", 1, m, cfg.store_size, wide=cfg.wide)]
        t0 = time.perf_counter()
        r = train_posenet(s, {1: m.vertices}, out, cfg, {1: "a"}, seed=0)
        n = r["steps"]
    else:
        from nol_ros.nol.train import TrainConfig, generate_sets, train

        cfg = TrainConfig(preset="cpu", n_sets=20, epochs=1, accumulate=10, seed=0)
        sets = generate_sets(cfg)
        t0 = time.perf_counter()
        train(cfg, out, sets=sets, progress=False)
        n = 2
    dt = time.perf_counter() - t0
    cpus = [time.process_time()]       # CPU of the whole run (data generation included)
    ctx = distributed.current()
    if ctx.enabled:
        import torch.distributed as dist

        cpus = [None] * ctx.world_size
        dist.all_gather_object(cpus, time.process_time())
    if ctx.is_main:
        print(json.dumps({"kind": kind, "steps": n, "s_per_step": dt / max(1, n),
                          "cpu_s_per_rank": cpus}), flush=True)


def detector_prep_share(data: Path) -> float:
    """Seconds to prepare one global detector batch (load + augment 8 images) over seconds of
    one training step on it (one process): what each extra rank repeats."""
    import numpy as np
    import torch

    from nol_ros.recognition.detector import (
        _load_rgb,
        augment_detection,
        build_detector,
        detector_config,
    )
    from nol_ros.recognition.detset import read_coco

    torch.set_num_threads(1)
    images, cats = read_coco(data / "det" / "annotations.json")
    label_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
    cfg = detector_config("cpu")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    batch = []
    for im in images[:cfg.batch_size * 4]:
        img, b, lab = augment_detection(_load_rgb(im.path), im.boxes_xyxy, im.labels, rng)
        batch.append((img, b, lab))
    prep = (time.perf_counter() - t0) / 4
    model = build_detector(cfg, 2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t1 = time.perf_counter()
    for k in range(3):
        imgs = [torch.from_numpy(x).permute(2, 0, 1).float().div(255)
                for x, _, _ in batch[k * 8:(k + 1) * 8]]
        tg = [{"boxes": torch.from_numpy(np.asarray(b, np.float32)).reshape(-1, 4),
               "labels": torch.as_tensor([label_of[int(v)] for v in lab], dtype=torch.int64)}
              for _, b, lab in batch[k * 8:(k + 1) * 8]]
        ld = model(imgs, tg)
        opt.zero_grad()
        (ld["classification"] + ld["bbox_regression"]).backward()
        opt.step()
    step = (time.perf_counter() - t1) / 3
    return prep / (prep + step)


def bench_train(a) -> dict:
    data = _train_data()
    out = {"workers": a.workers, "runs": []}
    for kind in a.kinds.split(","):
        for procs, threads in ((1, 1), (1, a.workers), (a.workers, 1)) * a.repeat:
            scratch = CACHE / f"train_{kind}_{procs}x{threads}"
            if scratch.exists():
                shutil.rmtree(scratch)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            cmd = [sys.executable, __file__, "_worker", kind, str(data), str(scratch),
                   str(a.steps)]
            if procs > 1:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node", str(procs), *cmd[1:]]
            before = load()
            wall, stdout, cpu = _run(cmd, env)
            row = json.loads([x for x in stdout.splitlines() if x.startswith("{")][-1])
            row.update(processes=procs, threads=threads, process_wall_s=wall,
                       process_cpu_s=cpu, load_before=before, load_after=load(),
                       run=f"{kind} {procs}x{threads}")
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
    out["median"] = _medians(out["runs"], "run", ("s_per_step", "process_wall_s",
                                                    "process_cpu_s"))
    out["detector_prep_share"] = detector_prep_share(data)
    print(json.dumps({"detector_prep_share": out["detector_prep_share"]}), flush=True)
    return out


def render_worker(ws_root: Path, name: str, preset: str, method: str) -> None:
    """The render stage as `nol-ros render` runs it (learn.render_training_set, which hands the
    grid to the ranks under torchrun); prints its wall time and every rank's CPU time."""
    import torch

    from nol_ros import distributed
    from nol_ros.learn import RenderStageConfig, render_training_set
    from nol_ros.workspace import Workspace

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = RenderStageConfig(method=method, preset=preset)
    oid = Workspace(ws_root).object_id(name, assign=False)
    t0, c0 = time.perf_counter(), time.process_time()
    render_training_set(ws_root / name, name, oid, cfg, "cpu")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ctx = distributed.current()
    cpus = [cpu]
    if ctx.enabled:
        import torch.distributed as dist

        cpus = [None] * ctx.world_size
        dist.all_gather_object(cpus, cpu)
    if ctx.is_main:
        print(json.dumps({"wall_s": wall, "cpu_s": cpus}), flush=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_render":
        render_worker(Path(argv[1]), argv[2], argv[3], argv[4])
        return 0
    if argv and argv[0] == "_worker":
        train_worker(argv[1], Path(argv[2]), Path(argv[3]), int(argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("render")
    r.add_argument("--object-workspace", default="", help="workspace root holding NAME/")
    r.add_argument("--name", default="")
    r.add_argument("--preset", default="demo")
    r.add_argument("--method", default="nol")
    r.add_argument("--workers", type=int, default=2)
    t = sub.add_parser("train")
    t.add_argument("--kinds", default="detector,pose,nol")
    t.add_argument("--steps", type=int, default=40, help="pose-net steps")
    t.add_argument("--workers", type=int, default=2)
    for p in (r, t):
        p.add_argument("--out", default="", help="also write the results as JSON here")
        p.add_argument("--repeat", type=int, default=2, help="interleaved rounds (medians)")
    a = ap.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    res = bench_render(a) if a.what == "render" else bench_train(a)
    res.update(date=time.strftime("%Y-%m-%d %H:%M"), cpus=os.cpu_count())
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
