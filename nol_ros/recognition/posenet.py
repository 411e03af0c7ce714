"""Pix2Pose-style pose network (Park et al., ICCV 2019; GAN and discriminator removed, as in the
NOL paper): from an object crop, predict per pixel the normalised object coordinates (x, y, z)
of the surface point seen there, an error map (the expected |coordinate error|, used to reject
pixels before PnP) and two masks (the whole silhouette, occluded parts included, and the visible
part, used for ICP).

One network serves all objects of a models folder: it outputs six channels per object and the
loss of a crop only touches the channels of its object (Pix2Pose trains one network per object;
the shared encoder costs one training run instead of one per object, which is what fits the
CPU budget). Coordinates are normalised per object to [-1, 1] over its bounding box.

Presets (:data:`POSE_PRESETS`): ``paper`` (ResNet-50 encoder -- random init unless
``encoder_weights`` names a local torchvision state dict -- U-Net decoder, 128 px crops),
``cpu`` (a small U-Net, 64 px crops; chosen by measurement, BENCHMARKS.md "Recognition"),
``tiny`` (tests, 32 px). Training: crops of the training images with online augmentation
(random backgrounds where the crop shows no object, occluding shapes, crop jitter like a
detector's boxes, small in-plane rotations, colour), AdamW with warm-up + cosine decay, a
checkpoint every ``ckpt_every`` steps, exact resume.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from nol_ros import distributed
from nol_ros.config import from_dict, to_dict
from nol_ros.enums import Backbone, parse_field
from nol_ros.errors import ConfigError, InputError
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.recognition.augment import BackgroundPool, color_jitter, draw_shape
from nol_ros.recognition.detector import (
    _schedule_free,
    check_classes,
    load_checkpoint,
    lr_at,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from nol_ros.recognition.evaluate import box_iou
from nol_ros.recognition.pnp import PnPResult, pnp_ransac, rigid_ransac
from nol_ros.recognition.scenes import ScenePool
from nol_ros.recognition.trainset import PoseSamples

CKPT_KIND = "nol_ros.recognition.posenet"
CH = 6  # per object: x, y, z, error, amodal mask, visible mask


# upper bounds of a pose net configuration (options_yaml of TrainPoseEstimator cannot exceed them)
MAX_INPUT_SIZE, MAX_BATCH, MAX_STEPS, MAX_LR = 1024, 4096, 10_000_000, 1.0


@dataclass(frozen=True)
class PoseNetConfig:
    """encoder: "convnet" (widths ``channels``: stem + 4 stride-2 stages) or "resnet50".
    input_size: crop side (px). out_stride: 1 = the decoder runs up to the input resolution;
    2 = up to half of it and the outputs are upsampled (bilinear), a quarter of the compute.
    pad: the crop side is pad * max(w, h) of the object's box.
    wide: training crops are stored at wide * max(w, h) so jitter stays inside.
    Augmentation: bg_prob (replace non-object pixels by a random background), occlusion_prob,
    shift (std of the box-centre jitter, fraction of the box), scale (range of the side jitter),
    rot_deg (in-plane rotation range). Loss weights: w_xyz, w_err, w_mask.
    Inference: mask_thresh, err_thresh (normalised units; when fewer than min_pixels silhouette
    pixels pass it, the min_pixels with the lowest predicted error are used), min_inliers,
    ransac_px (reprojection threshold in crop pixels), ransac_iters. canonical_turns: see
    :func:`nol_ros.recognition.pipeline.label_axis` (measured: `demo` models ADD(-S)+ICP 61.3
    -> 81.9 %, `cpu` 89.8 -> 90.8 %; BENCHMARKS.md "Recognition")."""

    name: str = "cpu"
    encoder: Backbone = Backbone.CONVNET
    channels: tuple[int, ...] = (32, 48, 64, 96, 128)
    input_size: int = 64
    out_stride: int = 2
    pad: float = 1.2
    wide: float = 1.6
    batch_size: int = 32
    steps: int = 3000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 5.0
    ckpt_every: int = 500
    bg_prob: float = 0.9
    occlusion_prob: float = 0.4
    shift: float = 0.06
    scale: tuple[float, float] = (0.85, 1.2)
    rot_deg: float = 15.0
    w_xyz: float = 3.0
    w_err: float = 1.0
    w_mask: float = 1.0
    mask_thresh: float = 0.5
    err_thresh: float = 0.15
    min_pixels: int = 60
    min_inliers: int = 12
    ransac_px: float = 1.5
    ransac_iters: int = 150
    encoder_weights: str = ""
    canonical_turns: bool = True  # printed objects of revolution (a can) get labels unique
    #                               about the shape's axis too; the recogniser's print step turns

    def __post_init__(self):
        parse_field(self, "encoder", Backbone, "pose encoder")
        if self.encoder == "convnet" and len(self.channels) != 5:
            raise ConfigError(f"convnet needs 5 widths (stem + 4 stages), got {self.channels}")
        if self.input_size % 16 or self.input_size < 16:
            raise ConfigError(f"input_size {self.input_size} must be a multiple of 16 (>= 16)")
        if not (1.0 <= self.pad < self.wide):
            raise ConfigError(f"need 1 <= pad ({self.pad}) < wide ({self.wide})")
        if self.out_stride not in (1, 2):
            raise ConfigError(f"out_stride must be 1 or 2, got {self.out_stride}")
        if self.batch_size < 1 or self.steps < 0 or self.lr <= 0 or self.min_inliers < 4:
            raise ConfigError("batch_size >= 1, steps >= 0, lr > 0, min_inliers >= 4 needed")
        # bounds on what a request's options_yaml can make big or senseless
        if self.input_size > MAX_INPUT_SIZE or self.batch_size > MAX_BATCH or \
                self.steps > MAX_STEPS or self.lr > MAX_LR or self.ransac_iters > 100_000:
            raise ConfigError(f"pose: input_size {self.input_size} <= {MAX_INPUT_SIZE} px, "
                              f"batch_size {self.batch_size} <= {MAX_BATCH}, steps {self.steps} "
                              f"<= {MAX_STEPS}, lr {self.lr} <= {MAX_LR}, ransac_iters "
                              f"{self.ransac_iters} <= 100000 needed")

    @property
    def store_size(self) -> int:
        """Side (px) of the stored wide training crops."""
        return int(round(self.input_size * self.wide / self.pad))

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PoseNetConfig:
        return from_dict(cls, d, "pose-net config: ")

    def replace(self, **kw) -> PoseNetConfig:
        return dataclasses.replace(self, **kw)


POSE_PRESETS: dict[str, PoseNetConfig] = {
    "paper": PoseNetConfig(name="paper", encoder="resnet50", input_size=128, out_stride=1,
                           batch_size=32,
                           steps=14000, lr=1e-4, ransac_px=3.0, warmup_steps=500),
    "cpu": PoseNetConfig(),
    "tiny": PoseNetConfig(name="tiny", channels=(8, 12, 16, 24, 32), input_size=32,
                          batch_size=8, steps=40, lr=3e-3, warmup_steps=5, ckpt_every=20,
                          min_inliers=6),
}


def posenet_config(preset: str | PoseNetConfig, **overrides) -> PoseNetConfig:
    if isinstance(preset, PoseNetConfig):
        return preset.replace(**overrides) if overrides else preset
    if preset not in POSE_PRESETS:
        raise ConfigError(f"pose preset '{preset}' unknown; use one of {sorted(POSE_PRESETS)}")
    c = POSE_PRESETS[preset]
    return c.replace(**overrides) if overrides else c


# -- network ---------------------------------------------------------------------------------------
def build_posenet(cfg: PoseNetConfig, n_classes: int):
    """U-Net: (B, 3, S, S) in [0, 1] -> (B, 6 * n_classes, S, S) raw outputs."""
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if n_classes < 1:
        raise InputError("the pose network needs at least one object")

    def cbr(i, o, s=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(inplace=True))

    class Up(nn.Module):
        def __init__(self, c_in, c_skip, c_out):
            super().__init__()
            self.conv = nn.Sequential(cbr(c_in + c_skip, c_out), cbr(c_out, c_out))

        def forward(self, x, skip):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            return self.conv(torch.cat([x, skip], 1))

    class ConvEncoder(nn.Module):
        def __init__(self, ch):
            super().__init__()
            st = cfg.out_stride
            self.stem = nn.Sequential(cbr(3, ch[0], st), cbr(ch[0], ch[0]))
            self.downs = nn.ModuleList([nn.Sequential(cbr(ch[i], ch[i + 1], 2),
                                                      cbr(ch[i + 1], ch[i + 1]))
                                        for i in range(4)])
            self.widths = list(ch)

        def forward(self, x):
            feats = [self.stem(x)]
            for d in self.downs:
                feats.append(d(feats[-1]))
            return feats  # strides (1 or 2) x (1, 2, 4, 8, 16)

    class ResNetEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            # lazy: torchvision (~6 s) to import, loaded only when this runs
            from torchvision.models import resnet50

            r = resnet50(weights=None)
            if cfg.encoder_weights:
                p = Path(cfg.encoder_weights)
                if not p.is_file():
                    raise ConfigError(f"encoder weights '{p}' do not exist; give a local "
                                      "torchvision ResNet-50 state dict or none")
                sd = torch.load(str(p), map_location="cpu", weights_only=True)
                r.load_state_dict(sd, strict=False)
            self.stem0 = cbr(3, 32)
            self.l0 = nn.Sequential(r.conv1, r.bn1, r.relu)
            self.l1 = nn.Sequential(r.maxpool, r.layer1)
            self.l2, self.l3 = r.layer2, r.layer3
            self.widths = [32, 64, 256, 512, 1024]

        def forward(self, x):
            f0 = self.stem0(x)
            f1 = self.l0(x)
            f2 = self.l1(f1)
            f3 = self.l2(f2)
            return [f0, f1, f2, f3, self.l3(f3)]

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = ResNetEncoder() if cfg.encoder == "resnet50" else \
                ConvEncoder(cfg.channels)
            w = self.enc.widths
            d = [max(16, c // 2) if cfg.encoder == "resnet50" else c for c in w]
            self.up3 = Up(w[4], w[3], d[3])
            self.up2 = Up(d[3], w[2], d[2])
            self.up1 = Up(d[2], w[1], d[1])
            self.up0 = Up(d[1], w[0], d[0])
            self.head = nn.Conv2d(d[0], CH * n_classes, 1)

        def forward(self, x):
            f = self.enc(x)
            y = self.up3(f[4], f[3])
            y = self.up2(y, f[2])
            y = self.up1(y, f[1])
            y = self.head(self.up0(y, f[0]))
            if y.shape[-2:] != x.shape[-2:]:
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return y

    return UNet()


def split_outputs(raw, class_idx):
    """raw (B, 6 * n, S, S), class_idx (B,) long -> dict of the crop's own channels:
    xyz (B, 3, S, S) in [-1, 1], err (B, S, S) in [0, 1], amodal / visib logits (B, S, S)."""
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    B, C, S, _ = raw.shape
    r = raw.view(B, C // CH, CH, S, S)[torch.arange(B, device=raw.device), class_idx]
    return {"xyz": torch.tanh(r[:, :3]), "err": torch.sigmoid(r[:, 3]), "amodal": r[:, 4],
            "visib": r[:, 5]}


# -- training data ---------------------------------------------------------------------------------
@dataclass
class ObjectNorm:
    """Per-object coordinate normalisation: n = (xyz - centre) / half (per axis)."""

    obj_id: int
    centre: np.ndarray
    half: np.ndarray

    @classmethod
    def from_vertices(cls, obj_id: int, V: np.ndarray) -> ObjectNorm:
        lo, hi = V.min(0), V.max(0)
        return cls(obj_id, 0.5 * (lo + hi), np.maximum(0.5 * (hi - lo), 1e-3))

    def to_dict(self) -> dict:
        return {"obj_id": self.obj_id, "centre": self.centre.tolist(),
                "half": self.half.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ObjectNorm:
        return cls(int(d["obj_id"]), np.asarray(d["centre"], float),
                   np.asarray(d["half"], float))


def make_batch(samples: list[PoseSamples], norms: list[ObjectNorm], cfg: PoseNetConfig,
               rng: np.random.Generator, pool, n: int):
    """n augmented crops: (x (n, S, S, 3) uint8, class index (n,), xyz_n (n, S, S, 3) float32
    normalised coords, amodal (n, S, S) bool, visib (n, S, S) bool)."""
    S, R = cfg.input_size, cfg.store_size
    xs = np.zeros((n, S, S, 3), np.uint8)
    cls = np.zeros(n, np.int64)
    xyz = np.zeros((n, S, S, 3), np.float32)
    amo = np.zeros((n, S, S), bool)
    vis = np.zeros((n, S, S), bool)
    box = R / cfg.wide  # the object's box side in stored pixels
    for i in range(n):
        c = int(rng.integers(len(samples)))
        ps = samples[c]
        j = int(rng.integers(len(ps)))
        side = cfg.pad * box * rng.uniform(*cfg.scale)
        # pixel centres are integers in both grids: the crop centre is (S - 1) / 2
        ctr = (R - 1) / 2 + rng.normal(0, cfg.shift * box, 2)
        ang = rng.uniform(-cfg.rot_deg, cfg.rot_deg)
        s = S / side
        M = cv2.getRotationMatrix2D((float(ctr[0]), float(ctr[1])), float(ang), s)
        M[:, 2] += np.array([(S - 1) / 2 - ctr[0], (S - 1) / 2 - ctr[1]])
        img = cv2.warpAffine(ps.rgb[j], M, (S, S), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        v = cv2.warpAffine(ps.visib[j].astype(np.uint8), M, (S, S), flags=cv2.INTER_NEAREST) > 0
        a = cv2.warpAffine(ps.amodal[j].astype(np.uint8), M, (S, S), flags=cv2.INTER_NEAREST) > 0
        q = cv2.warpAffine(ps.xyz[j].astype(np.float32), M, (S, S), flags=cv2.INTER_NEAREST)
        if rng.random() < (cfg.bg_prob * (0.6 if ps.keep_background else 1.0)):
            bg = pool.background(rng, S, S, shapes=3)
            img = np.where(v[..., None], img, bg)
        if rng.random() < cfg.occlusion_prob and v.any():
            ys, xs_ = np.nonzero(v)
            occ = draw_shape(img, rng, pool, (int(xs_.min()), int(ys.min()), int(xs_.max()) + 1,
                                              int(ys.max()) + 1))
            v &= ~occ
        xs[i] = color_jitter(img, rng, 1.0)
        cls[i] = c
        nm = norms[c]
        xyz[i] = np.where(a[..., None], (q - nm.centre) / nm.half, 0).astype(np.float32)
        amo[i], vis[i] = a, v
    return xs, cls, np.clip(xyz, -1, 1), amo, vis


def posenet_loss(out: dict, xyz_t, amo_t, vis_t, cfg: PoseNetConfig, norm=None):
    """Pix2Pose-style loss: L1 on the coordinates inside the silhouette, L2 of the error map
    against the (detached, capped at 1) per-pixel coordinate error, BCE on both masks.
    norm: (silhouette pixels, pixels) of the whole batch when this is one rank's slice of it
    (then the slices' losses add up to the batch's); None = of the given batch."""
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch
    import torch.nn.functional as F

    m = amo_t.float()
    n_fg = m.sum().clamp(min=1.0) if norm is None else max(1.0, float(norm[0]))
    d = (out["xyz"] - xyz_t).abs().mean(1)                       # (B, S, S)
    l_xyz = (d * m).sum() / n_fg
    err_t = torch.clamp(d.detach(), max=1.0)
    l_err = (((out["err"] - err_t) ** 2) * m).sum() / n_fg
    if norm is None:
        l_mask = F.binary_cross_entropy_with_logits(out["amodal"], m) + \
            F.binary_cross_entropy_with_logits(out["visib"], vis_t.float())
    else:
        bce = partial(F.binary_cross_entropy_with_logits, reduction="sum")
        l_mask = (bce(out["amodal"], m) + bce(out["visib"], vis_t.float())) / float(norm[1])
    total = cfg.w_xyz * l_xyz + cfg.w_err * l_err + cfg.w_mask * l_mask
    return total, {"xyz": float(l_xyz.detach()), "err": float(l_err.detach()),
                   "mask": float(l_mask.detach())}


def _to_tensor(x: np.ndarray, dev):
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div(255).to(dev)


def train_posenet(samples: list[PoseSamples], vertices: dict[int, np.ndarray], out_dir: str | Path,
                  cfg: PoseNetConfig, names: dict[int, str] | None = None, seed: int = 0,
                  resume: bool = True, device: str | None = None,
                  max_seconds: float | None = None, progress: ProgressFn = noop_progress,
                  scenes=None, scene_prob: float = 0.5) -> dict:
    """Train the shared pose network on the crops of every object (one PoseSamples each, at
    cfg.store_size px: :func:`nol_ros.recognition.trainset.load_pose_samples` with size =
    cfg.store_size and wide = cfg.wide). vertices: obj_id -> (V, 3) mesh vertices (for the
    coordinate normalisation). Writes out_dir/posenet_last.pt every cfg.ckpt_every steps and
    out_dir/posenet.pt at the end; resumes from posenet_last.pt. scenes: views of the robot's
    frames (:class:`~nol_ros.recognition.scenes.SceneBackgrounds`) for ``scene_prob`` of the
    replaced crop backgrounds. Returns {steps, history, seconds}.

    Under torchrun (nol_ros.distributed) every rank draws the same global batch of
    ``cfg.batch_size`` crops and trains on its slice with DDP; rank 0 writes the checkpoints."""
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    if not samples:
        raise InputError("no training crops: the object set is empty")
    for ps in samples:
        if len(ps) == 0:
            raise InputError(f"object {ps.obj_id} has no training crops (no rendered images)")
        if ps.rgb.shape[1] != cfg.store_size:
            raise InputError(f"object {ps.obj_id}: crops are {ps.rgb.shape[1]} px, the config "
                             f"needs {cfg.store_size} (load them with size=cfg.store_size)")
    names = names or {}
    classes = [{"obj_id": int(ps.obj_id), "name": names.get(int(ps.obj_id), "")}
               for ps in samples]
    if len({c["obj_id"] for c in classes}) != len(classes):
        raise InputError("two PoseSamples of the same object; merge them first")
    norms = [ObjectNorm.from_vertices(ps.obj_id, np.asarray(vertices[ps.obj_id]))
             for ps in samples]
    ctx = distributed.setup(device)           # SINGLE (all no-ops) outside torchrun
    if ctx.enabled and cfg.batch_size < ctx.world_size:
        raise ConfigError(f"pose batch_size {cfg.batch_size} < {ctx.world_size} processes: "
                          "every rank needs at least one crop of each batch")
    if not ctx.is_main:
        progress = noop_progress
    dev = torch.device(ctx.device(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "posenet_last.pt"
    torch.manual_seed(seed)
    model = build_posenet(cfg, len(classes)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, history, spent = 0, [], 0.0
    if resume and last.exists():
        ck = load_checkpoint(last, CKPT_KIND)
        if _schedule_free(ck["config"]) != _schedule_free(cfg.to_dict()):
            raise ConfigError(f"'{last}' was trained with another pose config; delete it or use "
                              "resume=False")
        check_classes(ck["classes"], classes, f"checkpoint '{last}'")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, history, spent = int(ck["step"]), list(ck["history"]), float(ck["seconds"])
        set_rng_state(ck["rng"])
    step0 = step
    pool = ScenePool(BackgroundPool(24, seed + 1, size=256), scenes, scene_prob, zoom=(2.5, 5.0))
    net = ctx.wrap(model, dev)                # the model itself outside torchrun
    t_start = time.perf_counter()
    model.train()
    run: list[dict] = []

    def ckpt(path, with_opt=True):
        ctx.sync_buffers(model)
        if not ctx.is_main:
            return
        ck = {"kind": CKPT_KIND, "version": 1, "config": cfg.to_dict(), "classes": classes,
              "norms": [nm.to_dict() for nm in norms], "model": model.state_dict(),
              "step": step, "history": history, "rng": rng_state(),
              "seconds": spent + time.perf_counter() - t_start}
        if with_opt:
            ck["optimizer"] = opt.state_dict()
        save_checkpoint(path, ck)

    while step < cfg.steps:
        rng = np.random.default_rng([seed, 23, step])  # batch content depends on the step only
        x, c, q, a, v = make_batch(samples, norms, cfg, rng, pool, cfg.batch_size)
        norm = None
        if ctx.enabled:  # this rank's slice of the global batch, its loss normalised like it
            norm = (int(a.sum()), a.size)
            x, c, q, a, v = (ctx.shard(t) for t in (x, c, q, a, v))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps)
        raw = net(_to_tensor(x, dev))
        o = split_outputs(raw, torch.from_numpy(c).to(dev))
        loss, parts = posenet_loss(o, torch.from_numpy(q).permute(0, 3, 1, 2).to(dev),
                                   torch.from_numpy(a).to(dev), torch.from_numpy(v).to(dev), cfg,
                                   norm)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pose-net loss became {float(loss)} at step {step}; "
                                     f"lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        if ctx.enabled:  # DDP averages over ranks; the slices' losses add up to the batch's
            (loss * ctx.world_size).backward()
            parts = {k: ctx.sum(val) for k, val in parts.items()}
        else:
            loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        run.append({"loss": ctx.sum(float(loss.detach())), **parts})
        if step % 25 == 0 or step == cfg.steps:
            history.append({"step": step, **{k: float(np.mean([r[k] for r in run]))
                                             for k in run[0]}})
            run = []
            progress("train pose", step / max(1, cfg.steps),
                     f"step {step}/{cfg.steps} loss {history[-1]['loss']:.4f}")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            ckpt(last)
        if ctx.agree(max_seconds is not None
                     and spent + time.perf_counter() - t_start > max_seconds):
            progress("train pose", 1.0, f"time budget {max_seconds:.0f} s reached at step {step}")
            ckpt(last)
            break
    if run:
        history.append({"step": step, **{k: float(np.mean([r[k] for r in run])) for k in run[0]}})
    ckpt(out / "posenet.pt", with_opt=False)
    ctx.barrier()                             # every rank returns once the model is written
    return {"steps": step, "new_steps": step - step0, "history": history,
            "seconds": spent + time.perf_counter() - t_start, "classes": classes}


# -- inference -------------------------------------------------------------------------------------
@dataclass
class CoordPrediction:
    """Network outputs for one crop, (S, S) maps: xyz in object coordinates (m), err
    (normalised units), amodal / visib probabilities."""

    xyz: np.ndarray
    err: np.ndarray
    amodal: np.ndarray
    visib: np.ndarray


class PoseNet:
    """A trained pose network: :meth:`predict` crops -> coordinate maps."""

    def __init__(self, model, cfg: PoseNetConfig, classes: list[dict], norms: list[ObjectNorm],
                 device=None):
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        self.model = model.eval()
        self.cfg = cfg
        self.classes = classes
        self.norms = {nm.obj_id: nm for nm in norms}
        self.index = {c["obj_id"]: i for i, c in enumerate(classes)}
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)

    @classmethod
    def load(cls, path: str | Path, classes=None, device: str | None = None) -> PoseNet:
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        ck = load_checkpoint(path, CKPT_KIND)
        cfg = PoseNetConfig.from_dict(ck["config"])
        if classes is not None:
            check_classes(ck["classes"], classes, f"pose network '{path}'")
        model = build_posenet(cfg, len(ck["classes"]))
        model.load_state_dict(ck["model"])
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model, cfg, ck["classes"], [ObjectNorm.from_dict(d) for d in ck["norms"]],
                   dev)

    def predict(self, crops: np.ndarray, obj_ids: list[int]) -> list[CoordPrediction]:
        """crops (B, S, S, 3) uint8 (S = cfg.input_size), one object id per crop."""
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        crops = np.asarray(crops)
        S = self.cfg.input_size
        if crops.ndim != 4 or crops.shape[1:] != (S, S, 3) or crops.dtype != np.uint8:
            raise InputError(f"crops must be (B, {S}, {S}, 3) uint8, got {crops.shape} "
                             f"{crops.dtype}")
        if len(obj_ids) != len(crops):
            raise InputError(f"{len(obj_ids)} object ids for {len(crops)} crops")
        unknown = [o for o in obj_ids if o not in self.index]
        if unknown:
            raise InputError(f"objects {unknown} are not in this pose network "
                             f"({sorted(self.index)})")
        if len(crops) == 0:
            return []
        idx = torch.as_tensor([self.index[o] for o in obj_ids], dtype=torch.long,
                              device=self.device)
        with torch.no_grad():
            o = split_outputs(self.model(_to_tensor(crops, self.device)), idx)
        out = []
        for b, oid in enumerate(obj_ids):
            nm = self.norms[oid]
            xyz = o["xyz"][b].permute(1, 2, 0).cpu().numpy().astype(np.float64) * nm.half + \
                nm.centre
            out.append(CoordPrediction(xyz, o["err"][b].cpu().numpy(),
                                       torch.sigmoid(o["amodal"][b]).cpu().numpy(),
                                       torch.sigmoid(o["visib"][b]).cpu().numpy()))
        return out


def projected_box(points: np.ndarray, T: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """(x0, y0, x1, y1) of the model points projected at pose T, or None when any point is
    behind the camera."""
    P = points @ T[:3, :3].T + T[:3, 3]
    if np.any(P[:, 2] <= 1e-3):
        return None
    uv = (P @ np.asarray(K, float).T)[:, :2] / P[:, 2:3]
    return np.concatenate([uv.min(0), uv.max(0)])


def pose_from_prediction(pred: CoordPrediction, box: tuple[float, float, float], K: np.ndarray,
                         cfg: PoseNetConfig, seed: int = 0, det_box_xywh=None,
                         model_points: np.ndarray | None = None, min_box_iou: float = 0.3,
                         depth: np.ndarray | None = None, rgbd_thresh_m: float = 0.015,
                         min_extent: float = 0.1):
    """PnP-RANSAC on the confident pixels of one crop's prediction. box: the crop (x0, y0, side)
    in image pixels; K: the image's (3, 3) intrinsics. With det_box_xywh (the detection) and
    model_points ((N, 3) m), a pose whose projected model box overlaps the detection less than
    min_box_iou is refused (a degenerate PnP solution, e.g. from coordinates collapsed onto a
    line, can have many inliers), and the score is the inlier fraction times that overlap.
    With ``depth`` ((H, W) float32 m of the image, 0 = invalid) the confident, visible pixels
    that have depth become 3D-3D correspondences and the pose is a rigid RANSAC fit to them
    (:func:`~nol_ros.recognition.pnp.rigid_ransac`, inlier distance ``rgbd_thresh_m``), refused
    when its inlier coordinates spread less than ``min_extent`` times the model points' RMS
    radius (a poorly trained net's coordinates collapse to a point: 4-5 mm RMS, 0.07 of the
    radius, on the test suite's tiny models, which then fit the depth on a patch with the origin
    10-21 cm off; 0.25 also refused good poses of the cpu-preset models: ADD+ICP 28.5 -> 23.7 %,
    0.1: 29.1 %).
    Returns a :class:`~nol_ros.recognition.pnp.PnPResult` (T_camera_object None = no pose)."""
    S = cfg.input_size
    fg = pred.amodal > cfg.mask_thresh
    vv, uu = np.nonzero(fg)
    if len(vv) < cfg.min_inliers:
        return PnPResult(None, 0, len(vv), 0.0, f"only {len(vv)} silhouette pixels")
    e = pred.err[vv, uu]
    keep = e < cfg.err_thresh
    if keep.sum() < cfg.min_pixels:
        keep = np.argsort(e, kind="stable")[:min(len(e), cfg.min_pixels)]
    vv, uu = vv[keep], uu[keep]
    x0, y0, side = box
    s = side / S
    img_pts = np.stack([x0 + (uu + 0.5) * s - 0.5, y0 + (vv + 0.5) * s - 0.5], 1)
    if depth is None:
        res = pnp_ransac(pred.xyz[vv, uu], img_pts, K, reproj_px=cfg.ransac_px * s,
                         iterations=cfg.ransac_iters, min_inliers=cfg.min_inliers, seed=seed)
    else:
        d = np.asarray(depth)
        H, W = d.shape
        ui = np.clip(np.rint(img_pts[:, 0]).astype(int), 0, W - 1)
        vi = np.clip(np.rint(img_pts[:, 1]).astype(int), 0, H - 1)
        z = d[vi, ui].astype(np.float64)
        # only pixels where the object is seen: behind an occluder the depth is the occluder's
        ok = np.isfinite(z) & (z > 0) & (pred.visib[vv, uu] > 0.5)
        K = np.asarray(K, np.float64)
        cam = np.stack([(img_pts[ok, 0] - K[0, 2]) * z[ok] / K[0, 0],
                        (img_pts[ok, 1] - K[1, 2]) * z[ok] / K[1, 1], z[ok]], 1)
        ext = 0.0
        if model_points is not None and len(model_points):
            mp = np.asarray(model_points, np.float64).reshape(-1, 3)
            ext = min_extent * float(np.sqrt(((mp - mp.mean(0)) ** 2).sum(1).mean()))
        res = rigid_ransac(pred.xyz[vv[ok], uu[ok]], cam, thresh_m=rgbd_thresh_m,
                           iterations=2 * cfg.ransac_iters, min_inliers=cfg.min_inliers,
                           min_extent_m=ext, seed=seed)
    if res.T_camera_object is None or det_box_xywh is None or model_points is None:
        return res
    pb = projected_box(model_points, res.T_camera_object, K)
    x, y, w, h = det_box_xywh
    iou = 0.0 if pb is None else float(box_iou(pb[None], [[x, y, x + w, y + h]])[0, 0])
    if iou < min_box_iou:
        return PnPResult(None, res.n_inliers, res.n_points, 0.0,
                         f"the pose's model box overlaps the detection by {iou:.2f} < "
                         f"{min_box_iou}")
    res.score *= iou
    return res
