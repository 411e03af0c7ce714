"""Training the NOL network (paper Sec. 3.2) on procedurally generated sets (nol_ros.nol.data).

    python -m nol_ros.nol.train --preset cpu --out runs/nol_cpu --sets 1000 --epochs 12

Per step one sample (a target and K = n_sources_train sources of one set) goes through
encode -> projection (perturbed source poses) -> ConvLSTM -> weights -> X_S -> WDSR-B -> X_phi;
loss L_i (lambda_i L1 + lambda_f feature L1) + L_s (smoothness) on M_D; gradients are
accumulated over ``accumulate`` samples (paper: 10) before an Adam step (paper: lr 1e-3, divided
by 10 after epoch 20 of 35: here after the same fraction of the run's epochs). An epoch visits
every set once in a seeded random order, each time with a freshly drawn target, sources,
augmentation and pose noise.

After every epoch OUT/last.pt (network + optimiser + epoch) is written atomically, and
OUT/epoch_NNN.pt when ``keep_every`` says so; ``--resume`` continues from OUT/last.pt and gives
the same weights as an uninterrupted run (the sample stream depends only on seed, epoch and
step, never on the process). OUT/log.csv gets one row per optimiser step, OUT/train.json the
config and timings; TensorBoard events too when the tensorboard package is installed.
The exported model (OUT/model.pt, for nol_ros.nol.renderer) has no optimiser state.

Several processes (nol_ros.distributed), e.g. 2 CPU processes or 8 GPUs on one machine:

    torchrun --standalone --nproc_per_node 2 -m nol_ros.nol.train --preset cpu --out runs/x

The ``accumulate`` samples of an optimiser step are dealt out over the ranks (sample j of a
step to rank j mod world size; each sample's random draws depend on (seed, epoch, j) only, so
the samples are those of a single process) and DDP sums their gradients: the same global batch
and learning rate as one process. Rank 0 writes the checkpoints, log and summary.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nol_ros import distributed
from nol_ros.enums import NolPreset, parse_field
from nol_ros.errors import ConfigError, NolError
from nol_ros.io_utils import atomic_write_bytes, atomic_write_json
from nol_ros.nol.config import NolConfig
from nol_ros.nol.data import DataConfig, RenderSet, make_sample, make_set
from nol_ros.nol.losses import NolLoss, make_psi
from nol_ros.nol.network import NolNet, default_device, save_checkpoint
from nol_ros.nol.projection import project_features


@dataclass(frozen=True)
class TrainConfig:
    """A training run. ``net`` is the network preset (``cpu`` or ``paper``) with overrides in
    ``net_overrides`` (NolConfig fields)."""

    preset: NolPreset = NolPreset.CPU
    net_overrides: dict = field(default_factory=dict)
    n_sets: int = 1000
    epochs: int = 12
    accumulate: int = 10
    lr: float = 1e-3
    lr_drop_at: float = 20.0 / 35.0     # fraction of the epochs after which lr /= 10
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    keep_every: int = 0                 # also keep epoch_NNN.pt every n epochs (0: never)
    max_steps: int = 0                  # stop after this many samples in total (0: no limit)
    grad_clip: float = 1.0

    def __post_init__(self):
        parse_field(self, "preset", NolPreset, "NOL preset")

    def net_config(self) -> NolConfig:
        base = NolConfig.preset(self.preset)
        try:
            return dataclasses.replace(base, **{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in self.net_overrides.items()})
        except TypeError as e:
            raise ConfigError(f"net_overrides {sorted(self.net_overrides)}: {e}") from e

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"]["full_intrinsics"] = dataclasses.asdict(self.data.full_intrinsics)
        return d


def generate_sets(cfg: TrainConfig, progress=None) -> list[RenderSet]:
    """The run's training sets (deterministic by cfg.seed)."""
    net = cfg.net_config()
    dcfg = dataclasses.replace(cfg.data, crop_size=net.crop_size,
                               n_sources=net.n_sources_train)
    sets = []
    for i in range(cfg.n_sets):
        sets.append(make_set(cfg.seed, i, dcfg))
        if progress is not None:
            progress(i + 1, cfg.n_sets)
    return sets


def sample_loss(net: NolNet, loss_fn: NolLoss, sample, device) -> dict[str, torch.Tensor]:
    """Forward one sample in training mode and return the loss terms (see NolLoss)."""
    F_k = net.encode_sources(sample.src_rgb.to(device), sample.src_angle.to(device))
    geom = sample.geom
    if device.type != "cpu":
        geom = dataclasses.replace(geom, **{f.name: getattr(geom, f.name).to(device)
                                            for f in dataclasses.fields(geom)})
    proj = project_features(geom, F_k, append_angle=False)
    out = net(proj.P[None], proj.valid[None], decode=True)
    m_d = out["m_d"] & sample.target_mask[None].to(device)
    return loss_fn(out, sample.target[None].to(device), m_d)


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    return cfg.lr * (0.1 if epoch >= int(round(cfg.lr_drop_at * cfg.epochs)) else 1.0)


def _save_state(path: Path, net: NolNet, opt, epoch: int, step: int, cfg: TrainConfig) -> None:
    buf = io.BytesIO()
    torch.save({"config": net.config.to_dict(), "state_dict": net.state_dict(),
                "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                "train_config": json.loads(json.dumps(cfg.to_dict()))}, buf)
    atomic_write_bytes(path, buf.getvalue())


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
          device: str | None = None, sets: list[RenderSet] | None = None,
          backbone_weights: str | None = None, progress: bool = True) -> dict:
    """Run (or resume) a training run; returns the summary (also OUT/train.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = distributed.setup(device)            # SINGLE (all no-ops) outside torchrun
    dev = default_device(ctx.device(device))
    progress = progress and ctx.is_main
    torch.manual_seed(cfg.seed)
    ncfg = cfg.net_config()
    net = NolNet(ncfg, backbone_weights=backbone_weights, device=dev)
    psi = make_psi(ncfg, backbone_weights, dev)
    loss_fn = NolLoss(ncfg, psi)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    start_epoch, step = 0, 0
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise NolError(f"--resume: no checkpoint {last}; start without --resume")
        ck = torch.load(last, map_location="cpu", weights_only=True)
        if NolConfig.from_dict(ck["config"]) != ncfg:
            raise ConfigError(f"{last} was trained with another network config; use a new "
                              "output folder or the same preset/overrides")
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, step = int(ck["epoch"]) + 1, int(ck["step"])
    t0 = time.perf_counter()
    if sets is None:
        bar = tqdm(total=cfg.n_sets, desc="generating sets", disable=not progress, leave=False)
        sets = generate_sets(cfg, lambda i, n: bar.update(1))
        bar.close()
    t_data = time.perf_counter() - t0
    dcfg = dataclasses.replace(cfg.data, crop_size=ncfg.crop_size,
                               n_sources=ncfg.n_sources_train)
    log_path = out / "log.csv" if ctx.is_main else Path(os.devnull)
    new_log = not (resume and log_path.exists())
    log_f = open(log_path, "w" if new_log else "a", newline="")
    log = csv.writer(log_f)
    if new_log:
        log.writerow(["epoch", "step", "lr", "total", "image", "feature", "smooth", "wall_s"])
    tb = None
    try:
        # lazy: optional, torch.utils.tensorboard may be missing (the except below)
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb")) if ctx.is_main else None
    except Exception:  # noqa: BLE001 - tensorboard is optional
        tb = None
    ddp = ctx.wrap(distributed.loss_module(net, lambda m, s: sample_loss(m, loss_fn, s, dev)),
                   dev) if ctx.enabled else None
    summary = {"config": cfg.to_dict(), "device": str(dev), "data_s": t_data,
               "epochs": [], "resumed_from_epoch": start_epoch if resume else None}
    if (out / "train.json").exists() and resume:
        summary["epochs"] = json.loads((out / "train.json").read_text()).get("epochs", [])
    net.train()
    t_train = time.perf_counter()
    done = False
    for epoch in range(start_epoch, cfg.epochs):
        lr = _lr_at(cfg, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        order = np.random.default_rng([cfg.seed, 5, epoch]).permutation(len(sets))
        acc = {k: 0.0 for k in ("total", "image", "feature", "smooth")}
        n_acc, ep_losses = 0, []
        opt.zero_grad(set_to_none=True)
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        t_ep = time.perf_counter()
        for j, si in enumerate(bar):
            if ctx.enabled:
                _ddp_sample(ctx, ddp, cfg, sets, si, epoch, j, len(order), step, dcfg, acc)
            else:
                rng = np.random.default_rng([cfg.seed, 7, epoch, j])
                sample = make_sample(sets[si], rng, dcfg)
                terms = sample_loss(net, loss_fn, sample, dev)
                (terms["total"] / cfg.accumulate).backward()
                for k in acc:
                    acc[k] += float(terms[k].detach())
            n_acc += 1
            step += 1
            if n_acc == cfg.accumulate or j == len(order) - 1:
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                row = {k: ctx.sum(v) / n_acc for k, v in acc.items()}
                ep_losses.append(row["total"])
                log.writerow([epoch, step, lr, *(f"{row[k]:.5f}" for k in acc),
                              f"{time.perf_counter() - t_train:.1f}"])
                log_f.flush()
                if tb is not None:
                    for k, v in row.items():
                        tb.add_scalar(f"loss/{k}", v, step)
                bar.set_postfix(loss=f"{row['total']:.3f}")
                acc = {k: 0.0 for k in acc}
                n_acc = 0
            if cfg.max_steps and step >= cfg.max_steps:
                done = True
                break
        summary["epochs"].append({"epoch": epoch, "lr": lr, "mean_loss": float(np.mean(ep_losses))
                                  if ep_losses else None, "s": time.perf_counter() - t_ep})
        ctx.sync_buffers(net)                  # BatchNorm statistics averaged over ranks
        if ctx.is_main:
            _save_state(out / "last.pt", net, opt, epoch, step, cfg)
            if cfg.keep_every and (epoch + 1) % cfg.keep_every == 0:
                _save_state(out / f"epoch_{epoch + 1:03d}.pt", net, opt, epoch, step, cfg)
            save_checkpoint(net, out / "model.pt", trained_epochs=epoch + 1, samples=step,
                            train_seed=cfg.seed, n_sets=cfg.n_sets)
        summary["train_s"] = time.perf_counter() - t_train
        if ctx.is_main:
            atomic_write_json(out / "train.json", summary)
        if done:
            break
    log_f.close()
    if tb is not None:
        tb.close()
    ctx.barrier()                              # every rank returns once the model is written
    return summary


def _ddp_sample(ctx, ddp, cfg: TrainConfig, sets, si: int, epoch: int, j: int, n_order: int,
                step: int, dcfg, acc: dict) -> None:
    """Sample j of an epoch in a distributed run: its rank (j mod world size within the
    optimiser step's window) computes it, gradients accumulate locally, and each rank's last
    backward of the window synchronises (DDP averages over ranks, hence the world-size factor:
    the sum is that of one process). A rank without a sample in a short window joins the
    synchronisation with a zero loss."""
    A, W = cfg.accumulate, ctx.world_size
    p = j % A                                   # position in the window
    length = min(A, n_order - (j - p))          # the window's samples (short at the epoch end
    if cfg.max_steps:                           # or at max_steps)
        length = min(length, cfg.max_steps - (step - p))
    if p % W == ctx.rank:
        rng = np.random.default_rng([cfg.seed, 7, epoch, j])
        sample = make_sample(sets[si], rng, dcfg)
        with ctx.no_sync(ddp, p + W < length):  # not this rank's last sample of the window
            terms = ddp(sample)
            (terms["total"] / A * W).backward()
        for k in acc:
            acc[k] += float(terms[k].detach())
    elif ctx.rank >= length and p == length - 1:
        ddp(None)["total"].backward()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m nol_ros.nol.train",
        description="Train the NOL network on procedural sets (random meshes and textures, "
                    "10 renders per set). Example: --preset cpu --out runs/nol_cpu --sets 1000 "
                    "--epochs 12 (about 2 h on 2 CPU cores); add --resume to continue.")
    ap.add_argument("--preset", default="cpu", choices=list(NolPreset))
    ap.add_argument("--out", required=True, help="run folder (checkpoints, log.csv)")
    ap.add_argument("--sets", type=int, default=1000, help="number of training sets")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--accumulate", type=int, default=10, help="samples per optimiser step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after N samples")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a NolConfig field, e.g. --set feature_loss_net=none")
    ap.add_argument("--backbone-weights", default=None,
                    help="local torchvision densenet121 state dict (paper preset only)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    over = {}
    for kv in a.set:
        if "=" not in kv:
            ap.error(f"--set {kv}: use KEY=VALUE")
        k, v = kv.split("=", 1)
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    try:
        cfg = TrainConfig(preset=a.preset, net_overrides=over, n_sets=a.sets, epochs=a.epochs,
                          accumulate=a.accumulate, lr=a.lr, seed=a.seed, max_steps=a.max_steps)
        cfg.net_config()
        s = train(cfg, a.out, resume=a.resume, device=a.device,
                  backbone_weights=a.backbone_weights, progress=not a.quiet)
    except NolError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 2
    last = s["epochs"][-1] if s["epochs"] else {}
    print(f"trained {len(s['epochs'])} epochs, last mean loss {last.get('mean_loss')}, "
          f"{s.get('train_s', 0):.0f} s; model {Path(a.out) / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
