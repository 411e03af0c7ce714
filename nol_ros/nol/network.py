"""The NOL network (paper Sec. 3.1) in PyTorch: encoder, ConvLSTM, weight block, WDSR-B decoder.

Data flow for one target pose (B target poses are batched, K sources each):

    source crop rgb (K, 3, S, S) [0, 1] --encode_sources--> F (K, 17, S, S)
    F --projection.sample_projection--> P (B, K, 17, H, W), valid (B, K, 1, H, W)
    P --ConvLSTM over k--> X_I (B, 16, H, W)
    concat(P_k, X_I) --weight block--> logits_k --softmax over valid k--> W (B, K, 1, H, W)
    X_S = sum_k W_k P_k (B, 17, H, W);  X_D = X_S[:, :3] (the output image)
    X_S --WDSR-B (training only)--> X_phi (B, 3, H, W)

Channel order of F_k, P_k and X_S (C = 3 + sum(config.tap_channels) + 1, 17 in the paper):
    [0:3] rgb in [0, 1], [3:3+n_feat] encoder features, [-1] face angle cosine in the source.

No weights are ever downloaded: torchvision models are built with ``weights=None``; a pretrained
DenseNet-121 loads only from a local file the user gives (``backbone_weights``).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from nol_ros.errors import FileFormatError, InputError
from nol_ros.io_utils import atomic_write_bytes
from nol_ros.nol.config import NolConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneWeightsError(FileFormatError):
    """A backbone weights file is missing, unreadable or for another architecture."""

    code = "BAD_WEIGHTS"


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def imagenet_normalise(rgb: torch.Tensor) -> torch.Tensor:
    """rgb (..., 3, H, W) float in [0, 1] -> ImageNet-normalised."""
    mean = rgb.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = rgb.new_tensor(IMAGENET_STD)[:, None, None]
    return (rgb - mean) / std


# --------------------------------------------------------------------------- backbones
def _densenet121_features() -> nn.Sequential:
    # lazy: torchvision (~6 s) to import, loaded only when this runs
    import torchvision

    return torchvision.models.densenet121(weights=None).features


_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
    r"running_var|num_batches_tracked))$")


def load_densenet_features_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a DenseNet-121 state dict from a local file (a torchvision ``densenet121``
    state dict, whole model or only ``features``) and return it keyed like ``.features``.

    Raises BackboneWeightsError when the file is missing or holds no state dict. The
    architecture check happens when it is loaded (:func:`load_state_checked`)."""
    p = Path(path)
    if not p.is_file():
        raise BackboneWeightsError(
            f"backbone weights file '{p}' does not exist; pass the path of a local torchvision "
            "densenet121 state dict (e.g. densenet121-a639ec97.pth) or omit it for random init")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem means a bad file
        raise BackboneWeightsError(
            f"backbone weights file '{p}' cannot be read as a torch state dict ({e}); save it "
            "with torch.save(model.state_dict(), path)") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneWeightsError(
            f"backbone weights file '{p}' does not hold a state dict (name -> tensor); save it "
            "with torch.save(model.state_dict(), path)")
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        m = _OLD_DENSENET_KEY.match(k)  # torchvision's old checkpoints: "norm.1" -> "norm1"
        if m:
            k = m.group(1) + m.group(2)
        if k.startswith("classifier."):
            continue
        out[k.removeprefix("features.")] = v
    return out


def load_state_checked(module: nn.Module, state: dict[str, torch.Tensor], what: str,
                       path: str | os.PathLike) -> None:
    """``module.load_state_dict(state)`` restricted to the module's keys; raises
    BackboneWeightsError naming the mismatch when keys or shapes do not fit."""
    own = module.state_dict()
    sub = {k: v for k, v in state.items() if k in own}
    # BatchNorm's num_batches_tracked is absent from older checkpoints and unused here
    missing = sorted(k for k in set(own) - set(sub) if not k.endswith("num_batches_tracked"))
    bad_shape = sorted(k for k in sub if sub[k].shape != own[k].shape)
    if missing or bad_shape:
        ex = (missing + bad_shape)[:3]
        raise BackboneWeightsError(
            f"weights file '{path}' does not fit {what}: {len(missing)} tensors missing, "
            f"{len(bad_shape)} with another shape (e.g. {ex}); it is probably a different "
            "architecture -- give a torchvision densenet121 state dict")
    module.load_state_dict(sub, strict=False)


class DenseNetTaps(nn.Module):
    """DenseNet-121 up to dense block 3; taps: relu0 (64 ch, 1/2), denseblock1 (256, 1/4),
    denseblock2 (512, 1/8), denseblock3 (1024, 1/16). Input ImageNet-normalised."""

    out_channels = (64, 256, 512, 1024)

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        f = _densenet121_features()
        if weights_path is not None:
            load_state_checked(f, load_densenet_features_state(weights_path),
                               "DenseNet-121 features", weights_path)
        self.stem = nn.Sequential(f.conv0, f.norm0, f.relu0)
        self.pool0 = f.pool0
        self.block1 = f.denseblock1
        self.trans1, self.block2 = f.transition1, f.denseblock2
        self.trans2, self.block3 = f.transition2, f.denseblock3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        t0 = self.stem(x)
        t1 = self.block1(self.pool0(t0))
        t2 = self.block2(self.trans1(t1))
        t3 = self.block3(self.trans2(t2))
        return [t0, t1, t2, t3]


class PyramidTaps(nn.Module):
    """Small strided conv pyramid (the ``cpu`` preset): four stages, each a stride-2 3x3 conv
    and a 3x3 conv (BN-ReLU), taps at 1/2, 1/4, 1/8, 1/16."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        self.out_channels = tuple(channels)
        stages, c_in = [], 3
        for c in channels:
            stages.append(nn.Sequential(
                nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
            c_in = c
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for s in self.stages:
            x = s(x)
            taps.append(x)
        return taps


class Encoder(nn.Module):
    """Source crop (B, 3, S, S) ImageNet-normalised -> features (B, sum(tap_channels), S, S):
    each tap BN-ReLU -> 3x3 conv -> BN-ReLU -> bilinear upsample to S x S."""

    def __init__(self, config: NolConfig, backbone_weights: str | os.PathLike | None = None):
        super().__init__()
        if config.encoder == "densenet121":
            self.backbone = DenseNetTaps(backbone_weights)
        else:
            if backbone_weights is not None:
                raise BackboneWeightsError(
                    f"backbone weights given but the '{config.name}' preset uses the small conv "
                    "pyramid encoder, which has no pretrained weights; use the 'paper' preset "
                    "(DenseNet-121) or drop the weights path")
            self.backbone = PyramidTaps(config.pyramid_channels)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(ci), nn.ReLU(inplace=False),
                          nn.Conv2d(ci, co, 3, 1, 1, bias=False), nn.BatchNorm2d(co),
                          nn.ReLU(inplace=True))
            for ci, co in zip(self.backbone.out_channels, config.tap_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = x.shape[-2:]
        out = [F.interpolate(h(t), size=S, mode="bilinear", align_corners=False)
               for h, t in zip(self.heads, self.backbone(x))]
        return torch.cat(out, 1)


# --------------------------------------------------------------------------- ConvLSTM
class ConvLSTM(nn.Module):
    """Stacked ConvLSTM (Shi et al. 2015, no peepholes) over the K axis; returns the last
    hidden state of the last layer. Input (B, K, C, H, W) -> (B, hidden[-1], H, W).

    Each layer's input-to-gates convolution runs on all K steps at once; only the
    hidden-to-gates convolution is sequential."""

    def __init__(self, in_channels: int, hidden: tuple[int, ...], kernel: int = 3):
        super().__init__()
        self.hidden = tuple(hidden)
        pad = kernel // 2
        self.conv_x = nn.ModuleList()
        self.conv_h = nn.ModuleList()
        c_in = in_channels
        for h in hidden:
            self.conv_x.append(nn.Conv2d(c_in, 4 * h, kernel, 1, pad, bias=True))
            self.conv_h.append(nn.Conv2d(h, 4 * h, kernel, 1, pad, bias=False))
            c_in = h
        for cx in self.conv_x:  # forget-gate bias 1 (standard LSTM initialisation)
            h = cx.out_channels // 4
            with torch.no_grad():
                cx.bias.zero_()
                cx.bias[h:2 * h] = 1.0

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        B, K, _, H, W = seq.shape
        x = seq
        for li, (cx, ch) in enumerate(zip(self.conv_x, self.conv_h)):
            hid = self.hidden[li]
            gx = cx(x.reshape(B * K, *x.shape[2:])).reshape(B, K, 4 * hid, H, W)
            # one sigmoid for all four gates: tanh(z) = 2 sigmoid(2z) - 1 (torch's CPU tanh
            # takes ~5x the time of its sigmoid), so the cell gate's pre-activation is doubled
            scale = gx.new_ones(4 * hid, 1, 1)
            scale[3 * hid:] = 2.0
            h = c = None
            outs = []
            for k in range(K):
                g = gx[:, k] if h is None else gx[:, k] + ch(h)
                i, f, o, gg = torch.sigmoid(g * scale).chunk(4, 1)
                c = i * (2 * gg - 1) if c is None else f * c + i * (2 * gg - 1)
                h = o * (2 * torch.sigmoid(2 * c) - 1)
                outs.append(h)
            if li == len(self.conv_x) - 1:
                return h
            x = torch.stack(outs, 1)
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------- weight block
class WeightBlock(nn.Module):
    """concat(P_k, X_I) -> 3x3 convs hidden... (ReLU) -> 3x3 conv to 1 logit, for every k.

    The first convolution is split into a P part (run on all B*K maps) and an X_I part (run
    once per target and broadcast over k); the sum equals the conv of the concatenation."""

    def __init__(self, p_channels: int, xi_channels: int, hidden: tuple[int, ...]):
        super().__init__()
        self.first_p = nn.Conv2d(p_channels, hidden[0], 3, 1, 1, bias=True)
        self.first_x = nn.Conv2d(xi_channels, hidden[0], 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        c = hidden[0]
        for h in hidden[1:]:
            layers += [nn.Conv2d(c, h, 3, 1, 1), nn.ReLU(inplace=True)]
            c = h
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.rest = nn.Sequential(*layers)

    def forward(self, P: torch.Tensor, x_i: torch.Tensor) -> torch.Tensor:
        """P (B, K, C, H, W), x_i (B, Ci, H, W) -> logits (B, K, 1, H, W)."""
        B, K, C, H, W = P.shape
        a = self.first_p(P.reshape(B * K, C, H, W)).reshape(B, K, -1, H, W)
        a = torch.relu(a + self.first_x(x_i)[:, None])
        return self.rest(a.reshape(B * K, -1, H, W)).reshape(B, K, 1, H, W)


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over ``dim`` with invalid entries excluded (logit -inf). Where no entry is valid
    every weight is 0 (no NaN, also in the gradient). logits float, valid bool, same shape."""
    any_valid = valid.any(dim, keepdim=True)
    z = logits.masked_fill(~valid, float("-inf")).masked_fill(~any_valid, 0.0)
    return torch.softmax(z, dim) * valid


# --------------------------------------------------------------------------- decoder
class WdsrBlock(nn.Module):
    """WDSR-B residual block: 1x1 expand (ReLU) -> 1x1 linear low-rank (0.8) -> 3x3."""

    def __init__(self, n: int, expansion: int, linear: float = 0.8):
        super().__init__()
        lo = max(1, int(n * linear))
        self.body = nn.Sequential(nn.Conv2d(n, n * expansion, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(n * expansion, lo, 1), nn.Conv2d(lo, n, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class WdsrDecoder(nn.Module):
    """WDSR-B at scale 1 (no pixel shuffle, no weight normalisation): head 3x3 -> residual
    blocks -> tail 3x3 to 3 ch, plus the WDSR 5x5 skip branch from the input. The result is
    added to X_D (the first 3 channels of X_S), so an untrained decoder starts near X_D.
    X_S (B, C, H, W) -> X_phi (B, 3, H, W)."""

    def __init__(self, in_channels: int, filters: int, blocks: int, expansion: int):
        super().__init__()
        self.head = nn.Conv2d(in_channels, filters, 3, 1, 1)
        self.body = nn.Sequential(*(WdsrBlock(filters, expansion) for _ in range(blocks)))
        self.tail = nn.Conv2d(filters, 3, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, 3, 5, 1, 2)
        for m in (self.tail, self.skip):
            nn.init.normal_(m.weight, std=1e-3)
            nn.init.zeros_(m.bias)

    def forward(self, x_s: torch.Tensor) -> torch.Tensor:
        return x_s[:, :3] + self.tail(self.body(self.head(x_s))) + self.skip(x_s)


# --------------------------------------------------------------------------- restorer
# The per-pixel cues a restorer with ``cues=2`` sees beside the colour, (2, H, W) float in
# [0, 1], made by nol_ros.nol.renderer: "spread" = the blend-weighted RMS distance of the
# sources' colours from the blended colour (the sources disagree: misregistration, a specular
# highlight, background); "edge" = the blend-weighted distance of each source sample from its
# source's silhouette edge, in source pixels / EDGE_REACH_PX, clipped to 1 (0: no source
# saw the pixel; small: the colour came from next to a silhouette, where the source also saw
# the background).
RESTORE_CUES = ("spread", "edge")
EDGE_REACH_PX = 8.0


class Restorer(nn.Module):
    """The learnt last step of a render: X_D is a convex blend of source colours, so it is
    never sharper than the sources (sensor blur, their lower resolution, the resampling) and
    its silhouette edge carries whatever the sources saw next to the object. A small residual
    CNN (3x3 convs, ReLU) corrects the rendered colours inside the target silhouette.

    rgb (B, 3, H, W) float [0, 1], mask (B, 1, H, W) float (1 on the object), cues (B, cues,
    H, W) float (:data:`RESTORE_CUES`; only when built with ``cues``) -> (B, 3, H, W) float
    [0, 1], 0 off the object. Starts as the identity (zero last layer)."""

    def __init__(self, filters: int, layers: int, cues: int = 0):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(4 + cues, filters, 3, padding=1),
                                 nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(filters, filters, 3, padding=1), nn.ReLU(inplace=True)]
        mods.append(nn.Conv2d(filters, 3, 3, padding=1))
        nn.init.zeros_(mods[-1].weight)
        nn.init.zeros_(mods[-1].bias)
        self.body = nn.Sequential(*mods)
        self.reach = layers   # receptive-field radius, pixels
        self.cues = cues

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor,
                cues: torch.Tensor | None = None) -> torch.Tensor:
        B, _, H, W = rgb.shape if rgb.ndim == 4 else (0, 0, 0, 0)
        if rgb.ndim != 4 or rgb.shape[1] != 3 or mask.shape != (B, 1, H, W):
            raise InputError(f"Restorer wants rgb (B,3,H,W) and mask (B,1,H,W), got "
                             f"{tuple(rgb.shape)} and {tuple(mask.shape)}")
        x = [rgb, mask]
        if self.cues:
            if cues is None or cues.shape != (B, self.cues, H, W):
                raise InputError(f"this restorer wants cues ({B},{self.cues},{H},{W}) "
                                 f"({', '.join(RESTORE_CUES)}), got "
                                 f"{None if cues is None else tuple(cues.shape)}")
            x.append(cues)
        return ((rgb + self.body(torch.cat(x, 1))) * mask).clamp(0, 1)


# --------------------------------------------------------------------------- the network
class NolNet(nn.Module):
    """The NOL network. ``NolNet(NolConfig.preset("cpu"))``.

    backbone_weights: optional local path of a torchvision DenseNet-121 state dict (``paper``
    preset only); never downloaded. device: "cpu", "cuda" or None (CUDA when present)."""

    def __init__(self, config: NolConfig, backbone_weights: str | os.PathLike | None = None,
                 device: str | torch.device | None = None):
        super().__init__()
        self.config = config
        C = config.source_channels
        self.encoder = Encoder(config, backbone_weights)
        self.lstm = ConvLSTM(C, config.lstm_channels, config.lstm_kernel)
        self.weight_block = WeightBlock(C, config.lstm_channels[-1], config.weight_channels)
        self.decoder = WdsrDecoder(C, config.wdsr_filters, config.wdsr_blocks,
                                   config.wdsr_expansion)
        self.restorer = Restorer(config.restore_filters, config.restore_layers,
                                 config.restore_cues) if config.restore_filters > 0 else None
        self.to(default_device(device))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_sources(self, rgb: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """rgb (K, 3, S, S) float [0, 1], angle (K, 1, S, S) float (cosine between viewing ray
        and surface normal, 0 off the object) -> F (K, C, S, S) = [rgb 3, features, angle 1]."""
        if rgb.ndim != 4 or rgb.shape[1] != 3 or angle.shape != (rgb.shape[0], 1,
                                                                  *rgb.shape[2:]):
            raise InputError(f"encode_sources wants rgb (K,3,S,S) and angle (K,1,S,S), got "
                             f"{tuple(rgb.shape)} and {tuple(angle.shape)}")
        feats = self.encoder(imagenet_normalise(rgb))
        return torch.cat([rgb, feats, angle], 1)

    def forward(self, P: torch.Tensor, valid: torch.Tensor, decode: bool | None = None
                ) -> dict[str, torch.Tensor]:
        """P (B, K, C, H, W) projected source maps (0 where invalid), valid (B, K, 1, H, W)
        bool. decode: run the WDSR decoder (default: in training mode only).

        Returns dict: x_s (B, C, H, W), x_d (B, 3, H, W), weights (B, K, 1, H, W) (sum 1 over k
        where any source is valid, 0 elsewhere), m_d (B, 1, H, W) bool, x_phi (B, 3, H, W) when
        decoded."""
        if P.ndim != 5 or valid.shape != (*P.shape[:2], 1, *P.shape[3:]):
            raise InputError(f"forward wants P (B,K,C,H,W) and valid (B,K,1,H,W), got "
                             f"{tuple(P.shape)} and {tuple(valid.shape)}")
        if P.shape[2] != self.config.source_channels:
            raise InputError(f"P has {P.shape[2]} channels, the '{self.config.name}' config "
                             f"needs {self.config.source_channels}")
        valid = valid.bool()
        P = P * valid
        x_i = self.lstm(P)
        w = masked_softmax(self.weight_block(P, x_i), valid, 1)
        x_s = (w * P).sum(1)
        out = {"x_s": x_s, "x_d": x_s[:, :3], "weights": w, "m_d": valid.any(1)}
        if decode or (decode is None and self.training):
            out["x_phi"] = self.decoder(x_s)
        return out


def save_checkpoint(net: NolNet, path: str | os.PathLike, **extra) -> Path:
    """Write {config, state_dict, extra} atomically; read with :func:`load_checkpoint`."""
    buf = io.BytesIO()
    torch.save({"config": net.config.to_dict(), "state_dict": net.state_dict(),
                "extra": extra}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None
                    ) -> tuple[NolNet, dict]:
    """-> (NolNet in eval mode, extra dict). Raises BackboneWeightsError on a bad file."""
    p = Path(path)
    if not p.is_file():
        raise BackboneWeightsError(f"NOL checkpoint '{p}' does not exist; train a model first "
                                   "or give the path of a saved checkpoint")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
        cfg = NolConfig.from_dict(ck["config"])
        sd = ck["state_dict"]
    except Exception as e:  # noqa: BLE001
        raise BackboneWeightsError(f"'{p}' is not a NOL checkpoint ({e}); write one with "
                                   "nol_ros.nol.network.save_checkpoint") from e
    net = NolNet(cfg, device="cpu")
    load_state_checked(net, sd, "the NOL network", p)
    net.to(default_device(device)).eval()
    return net, dict(ck.get("extra", {}))
