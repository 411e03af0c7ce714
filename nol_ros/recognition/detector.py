"""2D detector: torchvision RetinaNet (focal loss, FPN, anchor boxes), or for the CPU presets
an anchor-free centre-heat-map detector (:mod:`nol_ros.recognition.centernet`) behind the same
interface.

Presets (:data:`DETECTOR_PRESETS`; all start from random init -- no weights can be downloaded
here -- unless ``backbone_weights`` names a local torchvision ResNet-50 state dict):

- ``paper``: RetinaNet ResNet-50-FPN (P3-P7, 9 anchors per location, 4-conv heads with
  GroupNorm as in torchvision's v2 head) on 480x640 inputs: the paper's detector.
- ``cpu_retinanet``: RetinaNet on a small residual conv backbone (5 stride-2 stages, widths
  16/32/64/96/128), FPN P3-P5 with 64 channels, 2-conv GroupNorm heads, anchors sized for the
  objects at 0.6-1.6 m, 240x320 inputs (the 640x480 image halved).
- ``cpu``: the same backbone and input size with the centre-heat-map head at stride 4. Chosen
  by measurement (BENCHMARKS.md "Recognition"): trained from scratch on the same 1600 pasted
  images, RetinaNet reached mAP@0.5 0.28 after 800 steps, the heat-map head 0.54 after 400.
- ``tiny``: for tests (heat-map head, widths 8..48, 32 channels, 120x160 inputs).

Training (:func:`train_detector`): AdamW, linear warm-up then cosine decay (the learning rate is a
function of the step, so a resumed run follows the same schedule), gradient clipping, optional
gradient accumulation; a checkpoint after every epoch (model, optimiser, epoch, RNG state,
loss history) from which :func:`train_detector` resumes; an epoch's data order and augmentation
depend only on (seed, epoch), so a resumed run reproduces an uninterrupted one. A checkpoint of
the same configuration with another number of epochs is continued (the learning rate follows the
new schedule from there). Checkpoints are
read with ``torch.load(..., weights_only=True)``.

Classes are BOP object ids; the checkpoint stores them with their names, and loading a
checkpoint for another class list raises :class:`~nol_ros.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from nol_ros import distributed
from nol_ros.config import from_dict, to_dict
from nol_ros.enums import Backbone, DetectorArch, parse_field
from nol_ros.errors import ConfigError, FileFormatError, InputError
from nol_ros.io_utils import atomic_write_with
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.recognition.augment import color_jitter
from nol_ros.recognition.detset import read_coco

CKPT_KIND = "nol_ros.recognition.detector"


# upper bounds of a detector configuration (options_yaml of TrainDetector cannot exceed them)
MAX_IMAGE_SIDE, MAX_BATCH, MAX_EPOCHS, MAX_LR = 4096, 1024, 10_000, 1.0


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture, input size and training schedule of the detector.

    backbone: "resnet50" or "convnet" (widths ``channels``, ``blocks`` residual blocks per
    stage). fpn_channels: FPN / head width. levels: FPN outputs used ("P3".."P7").
    anchor_sizes: per level, the anchor sizes (px at the network input); aspect_ratios: h / w.
    head_convs: 3x3 conv layers in each head (torchvision's default is 4).
    min_size / max_size: the RetinaNet transform resizes images so the short side is min_size
    (long side at most max_size). Training: batch_size, accumulate (batches per optimiser
    step), epochs, lr, weight_decay, warmup_steps, grad_clip; inference: score_thresh,
    nms_thresh, detections_per_img.
    """

    name: str = "cpu"
    arch: DetectorArch = DetectorArch.RETINANET
    backbone: Backbone = Backbone.CONVNET
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)
    blocks: int = 1
    fpn_channels: int = 64
    levels: tuple[str, ...] = ("P3", "P4", "P5")
    anchor_sizes: tuple[tuple[float, ...], ...] = ((16.0, 20.0, 25.0), (32.0, 40.0, 50.0),
                                                   (64.0, 80.0, 101.0))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    head_convs: int = 2
    head_groups: int = 16
    min_size: int = 240
    max_size: int = 320
    batch_size: int = 8
    accumulate: int = 1
    epochs: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 10.0
    augment: bool = True
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    backbone_weights: str = ""
    heatmap_sigma: float = 0.15

    def __post_init__(self):
        parse_field(self, "arch", DetectorArch)
        parse_field(self, "backbone", Backbone, "detector backbone")
        if self.arch == DetectorArch.CENTERNET and self.backbone != Backbone.CONVNET:
            raise ConfigError("the centernet detector uses the convnet backbone")
        if self.backbone == "convnet" and len(self.channels) != 5:
            raise ConfigError(f"convnet needs 5 stage widths (strides 2..32), got "
                              f"{self.channels}")
        bad = [lv for lv in self.levels if lv not in ("P3", "P4", "P5", "P6", "P7")]
        if bad or not self.levels:
            raise ConfigError(f"FPN levels {self.levels}: use a subset of P3..P7")
        if len(self.anchor_sizes) != len(self.levels):
            raise ConfigError(f"{len(self.anchor_sizes)} anchor size tuples for "
                              f"{len(self.levels)} levels; give one tuple per level")
        if len({len(a) for a in self.anchor_sizes}) != 1:
            raise ConfigError("every level needs the same number of anchor sizes")
        if self.batch_size < 1 or self.accumulate < 1 or self.epochs < 0 or self.lr <= 0:
            raise ConfigError("batch_size, accumulate must be >= 1, epochs >= 0, lr > 0")
        if self.head_convs < 0 or self.min_size < 16 or self.max_size < self.min_size:
            raise ConfigError("head_convs >= 0 and 16 <= min_size <= max_size needed")
        # bounds on what a request's options_yaml can make big (a 100000 px input would
        # allocate terabytes) or senseless
        if self.max_size > MAX_IMAGE_SIDE or self.batch_size > MAX_BATCH or \
                self.epochs > MAX_EPOCHS or self.accumulate > MAX_BATCH or self.lr > MAX_LR:
            raise ConfigError(f"detector: max_size {self.max_size} <= {MAX_IMAGE_SIDE} px, "
                              f"batch_size {self.batch_size} and accumulate {self.accumulate} <= "
                              f"{MAX_BATCH}, epochs {self.epochs} <= {MAX_EPOCHS}, lr {self.lr} "
                              f"<= {MAX_LR} needed (the paper preset: 640 px, 8, 12 epochs, 1e-4)")

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        return from_dict(cls, d, "detector config: ")

    def replace(self, **kw) -> DetectorConfig:
        return dataclasses.replace(self, **kw)


def _scales(base: float) -> tuple[float, float, float]:
    return (base, base * 2 ** (1 / 3), base * 2 ** (2 / 3))


DETECTOR_PRESETS: dict[str, DetectorConfig] = {
    "paper": DetectorConfig(
        name="paper", backbone="resnet50", fpn_channels=256,
        levels=("P3", "P4", "P5", "P6", "P7"),
        anchor_sizes=tuple(_scales(b) for b in (32.0, 64.0, 128.0, 256.0, 512.0)),
        head_convs=4, head_groups=32, min_size=480, max_size=640, batch_size=8, epochs=12,
        lr=1e-4, warmup_steps=500),
    "cpu": DetectorConfig(name="cpu", arch="centernet"),
    "cpu_retinanet": DetectorConfig(name="cpu_retinanet"),
    "tiny": DetectorConfig(
        name="tiny", arch="centernet", channels=(8, 16, 24, 32, 48), fpn_channels=32,
        head_convs=1, head_groups=8,
        anchor_sizes=((8.0, 10.0, 12.6), (16.0, 20.0, 25.0), (32.0, 40.0, 50.0)),
        min_size=120, max_size=160, batch_size=4, epochs=2, lr=3e-3, warmup_steps=5),
}


def detector_config(preset: str | DetectorConfig, **overrides) -> DetectorConfig:
    if isinstance(preset, DetectorConfig):
        return preset.replace(**overrides) if overrides else preset
    if preset not in DETECTOR_PRESETS:
        raise ConfigError(f"detector preset '{preset}' unknown; use one of "
                          f"{sorted(DETECTOR_PRESETS)}")
    c = DETECTOR_PRESETS[preset]
    return c.replace(**overrides) if overrides else c


# -- model -----------------------------------------------------------------------------------------
def _build_convnet(cfg: DetectorConfig):
    # lazy: torch + torchvision (2 s + 6 s to import) load only when this runs
    import torch.nn as nn
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

    def cbr(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(inplace=True))

    class Res(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a = cbr(c, c, 1)
            self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(x + self.b(self.a(x)))

    level_of = {"P3": 2, "P4": 3, "P5": 4}
    used = [level_of[lv] for lv in cfg.levels if lv in level_of]
    if not used:
        raise ConfigError("the convnet backbone gives P3-P5; include at least one of them")

    class ConvNetFPN(nn.Module):
        def __init__(self):
            super().__init__()
            ch = cfg.channels
            self.stages = nn.ModuleList()
            c_in = 3
            for c in ch:
                self.stages.append(nn.Sequential(cbr(c_in, c, 2),
                                                 *[Res(c) for _ in range(cfg.blocks)]))
                c_in = c
            self.used = used
            extra = None
            if "P6" in cfg.levels or "P7" in cfg.levels:
                # lazy: torchvision (~6 s) to import, loaded only when this runs
                from torchvision.ops.feature_pyramid_network import LastLevelP6P7

                extra = LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels)
            self.fpn = FeaturePyramidNetwork([ch[i] for i in used], cfg.fpn_channels,
                                             extra_blocks=extra)
            self.out_channels = cfg.fpn_channels
            self.n_levels = len(cfg.levels)

        def forward(self, x):
            feats = OrderedDict()
            for i, st in enumerate(self.stages):
                x = st(x)
                if i in self.used:
                    feats[str(i)] = x
            out = self.fpn(feats)
            return OrderedDict(list(out.items())[:self.n_levels])

    return ConvNetFPN()


def _build_resnet50(cfg: DetectorConfig):
    # lazy: torch + torchvision (2 s + 6 s to import) load only when this runs
    import torch
    import torch.nn as nn
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = resnet50(weights=None, norm_layer=nn.BatchNorm2d)
    if cfg.backbone_weights:
        p = Path(cfg.backbone_weights)
        if not p.is_file():
            raise ConfigError(f"backbone weights '{p}' do not exist; give a local torchvision "
                              "ResNet-50 state dict (e.g. resnet50-0676ba61.pth) or none")
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
            missing, _ = body.load_state_dict(sd, strict=False)
        except Exception as e:
            raise ConfigError(f"'{p}' is not a torchvision ResNet-50 state dict "
                              f"({type(e).__name__}: {str(e)[:200]})") from e
        if [k for k in missing if not k.startswith("fc.")]:
            raise ConfigError(f"'{p}' misses ResNet-50 weights, e.g. {missing[:3]}")
    returned = [int(lv[1]) - 1 for lv in cfg.levels if lv in ("P3", "P4", "P5")]
    extra = LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels) \
        if any(lv in cfg.levels for lv in ("P6", "P7")) else None
    bb = _resnet_fpn_extractor(body, 5, returned_layers=returned, extra_blocks=extra)
    if cfg.fpn_channels != 256:
        raise ConfigError("the resnet50 backbone's FPN has 256 channels; set fpn_channels=256")
    return bb


def build_detector(cfg: DetectorConfig, n_classes: int):
    """A torchvision RetinaNet for ``n_classes`` objects (labels 1..n_classes; 0 unused)."""
    # lazy: torch + torchvision (2 s + 6 s to import) load only when this runs
    import torch.nn as nn
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    if n_classes < 1:
        raise InputError("the detector needs at least one object class")
    if cfg.arch == "centernet":
        # lazy: nol_ros.recognition.centernet imports torch (~2 s)
        from nol_ros.recognition.centernet import CenterNet

        return CenterNet(cfg, n_classes)
    backbone = _build_convnet(cfg) if cfg.backbone == "convnet" else _build_resnet50(cfg)
    anchors = AnchorGenerator(tuple(tuple(a) for a in cfg.anchor_sizes),
                              (tuple(cfg.aspect_ratios),) * len(cfg.levels))
    head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0],
                         n_classes + 1, norm_layer=partial(nn.GroupNorm, cfg.head_groups))
    for sub in (head.classification_head, head.regression_head):
        sub.conv = nn.Sequential(*list(sub.conv.children())[:cfg.head_convs])
    return RetinaNet(backbone, n_classes + 1, min_size=cfg.min_size, max_size=cfg.max_size,
                     anchor_generator=anchors, head=head, score_thresh=cfg.score_thresh,
                     nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img,
                     topk_candidates=300)


# -- data ------------------------------------------------------------------------------------------
def _load_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileFormatError(f"cannot read training image '{path}'")
    return np.ascontiguousarray(img[..., ::-1])


def augment_detection(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random zoom U(0.75, 1.3) about a random point + colour jitter; boxes (N, 4) xyxy are
    moved along, clipped, and dropped when less than 40 % of them stays in the image."""
    H, W = img.shape[:2]
    s = float(np.exp(rng.uniform(np.log(0.75), np.log(1.3))))
    cx, cy = rng.uniform(0, W), rng.uniform(0, H)
    M = np.array([[s, 0, (1 - s) * cx], [0, s, (1 - s) * cy]])
    out = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    b = boxes.copy()
    if len(b):
        b[:, [0, 2]] = b[:, [0, 2]] * s + M[0, 2]
        b[:, [1, 3]] = b[:, [1, 3]] * s + M[1, 2]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        c = b.copy()
        c[:, [0, 2]] = np.clip(c[:, [0, 2]], 0, W)
        c[:, [1, 3]] = np.clip(c[:, [1, 3]], 0, H)
        keep = ((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]) >= 0.4 * area) & \
            (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
        b, labels = c[keep], labels[keep]
    return color_jitter(out, rng, 0.5), b.astype(np.float32), labels


# -- checkpoints -----------------------------------------------------------------------------------
def _classes_list(classes) -> list[dict]:
    out = []
    for c in classes:
        if isinstance(c, dict):
            out.append({"obj_id": int(c["obj_id"]), "name": str(c.get("name", ""))})
        else:
            oid, name = c
            out.append({"obj_id": int(oid), "name": str(name)})
    ids = [c["obj_id"] for c in out]
    if not ids:
        raise InputError("empty class list: the detector needs at least one object")
    if len(set(ids)) != len(ids):
        raise InputError(f"class list {ids} repeats an object id")
    return out


def check_classes(ckpt_classes: list[dict], classes, what: str) -> None:
    """ConfigError unless ``classes`` (obj ids, or (obj_id, name) / {obj_id, name}) equals the
    checkpoint's class list, in order."""
    want = [int(c["obj_id"]) if isinstance(c, dict) else int(c[0]) if isinstance(c, tuple | list)
            else int(c) for c in classes]
    have = [int(c["obj_id"]) for c in ckpt_classes]
    if want != have:
        raise ConfigError(f"{what} was trained for objects {have}, but objects {want} were "
                          "requested; retrain for this object set or load the matching models "
                          "folder")


def load_checkpoint(path: str | Path, kind: str) -> dict:
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"checkpoint '{p}' does not exist")
    try:
        ck = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise FileFormatError(f"cannot read checkpoint '{p}' ({type(e).__name__}: "
                              f"{str(e)[:200]})") from e
    if not isinstance(ck, dict) or ck.get("kind") != kind:
        raise FileFormatError(f"'{p}' is not a {kind} checkpoint (kind "
                              f"{ck.get('kind') if isinstance(ck, dict) else type(ck)})")
    return ck


def save_checkpoint(path: str | Path, ck: dict) -> None:
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    atomic_write_with(path, lambda tmp: torch.save(ck, tmp))


def _schedule_free(d: dict, keys=("epochs", "steps", "ckpt_every")) -> dict:
    """A config dict without its schedule length: a checkpoint may be continued with a longer or
    shorter schedule (the learning rate then follows the new schedule from that step on)."""
    return {k: v for k, v in d.items() if k not in keys}


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5 % of ``base`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def rng_state() -> dict:
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    return {"torch": torch.get_rng_state()}


def set_rng_state(st: dict) -> None:
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    if "torch" in st:
        torch.set_rng_state(st["torch"])


# -- training --------------------------------------------------------------------------------------
def train_detector(coco_json: str | Path, out_dir: str | Path, cfg: DetectorConfig,
                   seed: int = 0, resume: bool = True, device: str | None = None,
                   max_seconds: float | None = None, progress: ProgressFn = noop_progress) -> dict:
    """Train a detector on a COCO set; writes ``out_dir/detector_last.pt`` after every epoch and
    ``out_dir/detector.pt`` (model only) at the end. Classes: the set's categories (ids = BOP
    object ids). With resume, an existing detector_last.pt of the same config and classes is
    continued. max_seconds: stop after the epoch that crosses this budget (the finished model
    is still written). Returns {epochs, steps, loss history per epoch, seconds, ...}.

    Under torchrun (nol_ros.distributed) every rank trains on its slice of each global batch
    of ``cfg.batch_size`` images with DDP; rank 0 writes the checkpoints."""
    # lazy: torch (~2 s) to import, loaded only when this runs
    import torch

    images, cats = read_coco(coco_json)
    classes = _classes_list([{"obj_id": c["id"], "name": c.get("name", "")} for c in cats])
    label_of = {c["obj_id"]: i + 1 for i, c in enumerate(classes)}
    if not any(len(im.labels) for im in images):
        raise InputError(f"'{coco_json}' has no box annotations; nothing to train on")
    ctx = distributed.setup(device)           # SINGLE (all no-ops) outside torchrun
    if ctx.enabled and cfg.batch_size < ctx.world_size:
        raise ConfigError(f"detector batch_size {cfg.batch_size} < {ctx.world_size} processes: "
                          "every rank needs at least one image of each batch")
    if not ctx.is_main:
        progress = noop_progress
    dev = torch.device(ctx.device(device) or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "detector_last.pt"
    torch.manual_seed(seed)
    model = build_detector(cfg, len(classes)).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(images) // (cfg.batch_size * cfg.accumulate))
    total = steps_per_epoch * cfg.epochs
    epoch0, step, history, spent = 0, 0, [], 0.0
    if resume and last.exists():
        ck = load_checkpoint(last, CKPT_KIND)
        if _schedule_free(ck["config"]) != _schedule_free(cfg.to_dict()):
            raise ConfigError(f"'{last}' was trained with another detector config; delete it "
                              "or use resume=False")
        check_classes(ck["classes"], classes, f"checkpoint '{last}'")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        epoch0, step, history = int(ck["epoch"]), int(ck["step"]), list(ck["history"])
        spent = float(ck.get("seconds", 0.0))
        set_rng_state(ck["rng"])
    # the model itself outside torchrun; a rank whose images lost every box to augmentation
    # leaves the box heads unused in that step (find_unused)
    net = ctx.wrap(model, dev, find_unused=True)
    t_start = time.perf_counter()
    for epoch in range(epoch0, cfg.epochs):
        model.train()
        rng = np.random.default_rng([seed, 17, epoch])
        order = rng.permutation(len(images))
        losses = []
        t_ep = time.perf_counter()
        for k in range(steps_per_epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_steps)
            opt.zero_grad(set_to_none=True)
            tot = 0.0
            for a in range(cfg.accumulate):
                idx = order[(k * cfg.accumulate + a) * cfg.batch_size:
                            (k * cfg.accumulate + a + 1) * cfg.batch_size]
                imgs, tgts = [], []
                for i in idx:
                    im = images[int(i)]
                    img = _load_rgb(im.path)
                    boxes, labels = im.boxes_xyxy, im.labels
                    if cfg.augment:
                        img, boxes, labels = augment_detection(img, boxes, labels, rng)
                    imgs.append(torch.from_numpy(img).permute(2, 0, 1).float().div(255).to(dev))
                    tgts.append({"boxes": torch.from_numpy(np.asarray(boxes, np.float32)
                                                           ).reshape(-1, 4).to(dev),
                                 "labels": torch.as_tensor([label_of[int(v)] for v in labels],
                                                           dtype=torch.int64, device=dev)})
                if ctx.enabled:  # this rank's slice; both losses are means over the objects
                    n_all = sum(len(t["labels"]) for t in tgts)    # of the batch: weigh a
                    imgs, tgts = ctx.shard(imgs), ctx.shard(tgts)  # rank by its share of them
                    n_own = max(1, sum(len(t["labels"]) for t in tgts))
                with ctx.no_sync(net, a < cfg.accumulate - 1):
                    ld = net(imgs, tgts)
                    loss = (ld["classification"] + ld["bbox_regression"]) / cfg.accumulate
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"detector loss became {loss.item()} at step "
                                                 f"{step}; lower lr (now {cfg.lr})")
                    if ctx.enabled:
                        (loss * ctx.weight(n_own, max(1, n_all))).backward()
                    else:
                        loss.backward()
                tot += float(loss.detach())
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            # the global batch's loss, the same on every rank
            losses.append(ctx.sum(tot * n_own) / max(1, n_all) if ctx.enabled else tot)
            if k % 10 == 0 or k == steps_per_epoch - 1:
                frac = (epoch + (k + 1) / steps_per_epoch) / max(1, cfg.epochs)
                progress("train detector", frac, f"epoch {epoch + 1}/{cfg.epochs} step "
                         f"{k + 1}/{steps_per_epoch} loss {np.mean(losses[-10:]):.3f}")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                        "seconds": time.perf_counter() - t_ep})
        spent_now = spent + time.perf_counter() - t_start
        ctx.sync_buffers(model)
        if ctx.is_main:
            save_checkpoint(last, {"kind": CKPT_KIND, "version": 1, "config": cfg.to_dict(),
                                   "classes": classes, "model": model.state_dict(),
                                   "optimizer": opt.state_dict(), "epoch": epoch + 1,
                                   "step": step, "history": history, "rng": rng_state(),
                                   "seconds": spent_now})
        if ctx.agree(max_seconds is not None and spent_now > max_seconds
                     and epoch + 1 < cfg.epochs):
            progress("train detector", 1.0, f"time budget {max_seconds:.0f} s reached after "
                     f"epoch {epoch + 1}")
            break
    final = {"kind": CKPT_KIND, "version": 1, "config": cfg.to_dict(), "classes": classes,
             "model": model.state_dict(), "epoch": len(history), "step": step,
             "history": history, "seconds": spent + time.perf_counter() - t_start}
    if ctx.is_main:
        save_checkpoint(out / "detector.pt", final)
    ctx.barrier()                             # every rank returns once the model is written
    return {"epochs": len(history), "new_epochs": len(history) - epoch0, "steps": step,
            "history": history,
            "seconds": final["seconds"], "images": len(images), "classes": classes}


# -- inference -------------------------------------------------------------------------------------
@dataclass
class Detection2D:
    obj_id: int
    score: float
    box_xyxy: np.ndarray   # (4,) float px


class Detector:
    """A trained detector: ``detect(rgb)`` -> detections sorted by score."""

    def __init__(self, model, cfg: DetectorConfig, classes: list[dict], device=None):
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        self.model = model.eval()
        self.cfg = cfg
        self.classes = classes
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)

    @classmethod
    def load(cls, path: str | Path, classes=None, device: str | None = None) -> Detector:
        """Load ``detector.pt`` (or a detector_last.pt). classes (optional): the object ids
        (or (obj_id, name) pairs) the caller expects, checked against the checkpoint."""
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        ck = load_checkpoint(path, CKPT_KIND)
        cfg = DetectorConfig.from_dict(ck["config"])
        if classes is not None:
            check_classes(ck["classes"], classes, f"detector '{path}'")
        model = build_detector(cfg, len(ck["classes"]))
        model.load_state_dict(ck["model"])
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model, cfg, ck["classes"], dev)

    @property
    def obj_ids(self) -> list[int]:
        return [c["obj_id"] for c in self.classes]

    def detect(self, rgb: np.ndarray, score_thresh: float | None = None) -> list[Detection2D]:
        """rgb (H, W, 3) uint8 -> detections (boxes in the image's pixels), best first."""
        # lazy: torch (~2 s) to import, loaded only when this runs
        import torch

        a = np.asarray(rgb)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise InputError(f"image must be (H, W, 3) uint8 RGB, got {a.shape} {a.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div(255)
        with torch.no_grad():
            out = self.model([x.to(self.device)])[0]
        thr = self.cfg.score_thresh if score_thresh is None else score_thresh
        dets = []
        for b, s, lab in zip(out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(),
                             out["labels"].cpu().numpy()):
            if s < thr or not (1 <= lab <= len(self.classes)):
                continue
            dets.append(Detection2D(self.classes[int(lab) - 1]["obj_id"], float(s),
                                    b.astype(np.float64)))
        dets.sort(key=lambda d: -d.score)
        return dets
