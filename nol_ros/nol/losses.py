"""NOL training losses (paper Sec. 3.2, Eq. 1 and 2).

L_i = lambda_i * mean_{M_D} |X_phi - X_GT|  +  lambda_f * mean_{M_D} |psi(X_phi) - psi(X_GT)|
L_s = lambda_s * mean_{M_D} (Laplacian X_S)^2      (all channels of X_S: colour, features, angle)
total = L_i + L_s

M_D: target pixels with at least one valid projection. "mean over M_D" is
:func:`masked_mean` (mean over the masked pixels and over channels). psi is a frozen feature
network passed in (the paper: the first two DenseNet blocks; :class:`DenseNetPsi`, random init
unless the user gives a local weights file).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from nol_ros.errors import InputError
from nol_ros.nol.config import NolConfig
from nol_ros.nol.network import (
    _densenet121_features,
    imagenet_normalise,
    load_densenet_features_state,
    load_state_checked,
)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean of x (B, C, H, W) over the pixels where mask (B, 1, H, W) (bool or weights in
    [0, 1]) is set and over channels; 0 (with zero gradient) when the mask is empty."""
    m = mask.to(x.dtype)
    den = m.sum() * x.shape[1]
    return (x * m).sum() / den.clamp(min=eps)


class DenseNetPsi(nn.Module):
    """psi for the feature loss: DenseNet-121 up to dense block 2; returns the outputs of dense
    block 1 (1/4 res, 256 ch) and dense block 2 (1/8 res, 512 ch). Input rgb (B, 3, H, W) in
    [0, 1] (normalised inside). Frozen and always in eval mode."""

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        f = _densenet121_features()
        if weights_path is not None:
            load_state_checked(f, load_densenet_features_state(weights_path),
                               "DenseNet-121 features", weights_path)
        self.stem = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)
        self.block1 = f.denseblock1
        self.trans1, self.block2 = f.transition1, f.denseblock2
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DenseNetPsi:  # noqa: ARG002 - always frozen
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        b1 = self.block1(self.stem(imagenet_normalise(rgb)))
        return [b1, self.block2(self.trans1(b1))]


def make_psi(config: NolConfig, weights_path: str | os.PathLike | None = None,
             device: str | torch.device = "cpu") -> nn.Module | None:
    """psi for ``config.feature_loss_net`` ("densenet121" or "none" -> None)."""
    if config.feature_loss_net == "none":
        return None
    return DenseNetPsi(weights_path).to(device)


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """4-neighbour Laplacian of every channel, x (B, C, H, W) -> (B, C, H, W) (replicate
    padding)."""
    C = x.shape[1]
    k = _LAPLACE.to(x)[None, None].expand(C, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=C)


def interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of mask (B, 1, H, W) bool whose 4 neighbours are also in the mask."""
    m = mask.float()
    n = F.conv2d(F.pad(m, (1, 1, 1, 1)), _LAPLACE.abs().to(m)[None, None])
    return mask & (n >= 8.0 - 1e-3)


def image_loss(x_phi: torch.Tensor, x_gt: torch.Tensor, m_d: torch.Tensor,
               lambda_i: float = 5.0, lambda_f: float = 10.0,
               psi: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda_i * masked L1, lambda_f * masked feature L1). x_phi, x_gt (B, 3, H, W) in
    [0, 1]; m_d (B, 1, H, W) bool. psi(rgb) -> list of (B, c, h, w) maps; both images are
    masked by M_D before psi, and each feature map is compared where the (area-downsampled)
    mask covers it, weighted by the covered fraction. Without psi the second term is 0."""
    l1 = lambda_i * masked_mean((x_phi - x_gt).abs(), m_d)
    if psi is None or lambda_f == 0:
        return l1, x_phi.new_zeros(())
    m = m_d.to(x_phi.dtype)
    fa, fb = psi(x_phi * m), psi(x_gt * m)
    terms = []
    for a, b in zip(fa, fb):
        mw = F.adaptive_avg_pool2d(m, a.shape[-2:])
        terms.append(masked_mean((a - b).abs(), mw))
    return l1, lambda_f * torch.stack(terms).mean()


def smooth_loss(x_s: torch.Tensor, m_d: torch.Tensor, lambda_s: float = 1.0) -> torch.Tensor:
    """lambda_s * mean over M_D of the squared Laplacian of X_S (B, C, H, W), all channels.
    Evaluated on the interior of M_D: at the silhouette X_S jumps to the (zero) background
    whatever the weights are, and penalising that jump would darken the rim."""
    return lambda_s * masked_mean(laplacian(x_s) ** 2, interior(m_d.bool()))


class NolLoss(nn.Module):
    """Total training loss. ``NolLoss(config, psi)(out, x_gt)`` with ``out`` from
    ``NolNet.forward`` (needs x_phi, x_s, m_d) and x_gt (B, 3, H, W) [0, 1]. Returns a dict:
    total, image, feature, smooth (scalars)."""

    def __init__(self, config: NolConfig, psi: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.psi = psi

    def forward(self, out: dict[str, torch.Tensor], x_gt: torch.Tensor,
                m_d: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if "x_phi" not in out:
            raise InputError("NolLoss needs out['x_phi']: run NolNet in training mode or with "
                             "decode=True")
        m = out["m_d"] if m_d is None else m_d
        li, lf = image_loss(out["x_phi"], x_gt, m, self.config.lambda_i, self.config.lambda_f,
                            self.psi)
        ls = smooth_loss(out["x_s"], m, self.config.lambda_s)
        return {"total": li + lf + ls, "image": li, "feature": lf, "smooth": ls}
