"""Configuration of the NOL network (paper Sec. 3.1, 3.2): one frozen dataclass, two presets.

``paper``: the architecture of the paper (DenseNet-121 encoder with four taps reduced to
4, 3, 3, 3 channels, 256 px crops, ConvLSTM 32/32/16, weight block 32/16/8/1, WDSR-B decoder
with 32 filters, 6 blocks, expansion 4; lambda_i = 5, lambda_f = 10, lambda_s = 1).

``cpu``: the same structure, sized so it trains and renders on a 2-core CPU (measured with
``bench/bench_nol_network.py``): a small strided conv pyramid instead of DenseNet-121 (same four
taps at 1/2, 1/4, 1/8, 1/16 and the same 13 feature channels, so F_k keeps 17 channels), 128 px
crops, ConvLSTM 8/8/8, weight block 16/8/8/1, WDSR-B 16 filters, 3 blocks, and no feature loss
(psi needs ImageNet weights, which cannot be downloaded here; with a randomly initialised
DenseNet the feature term has an arbitrary scale -- measured: 8x the image term at the start of
training -- and costs 15 % of a training step). Measured (2 threads,
K=6, 128 px): 0.047 s per target with sources cached, 0.17 s per pose-refinement iteration,
0.35 s per training step with K=8; LSTM 16/16/16 costs 0.10 s and 0.73 s.

Round trip for checkpoints: ``NolConfig.from_dict(cfg.to_dict()) == cfg``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nol_ros.config import from_dict, to_dict
from nol_ros.enums import NolPreset
from nol_ros.errors import ConfigError

ENCODERS = ("densenet121", "pyramid")
FEATURE_LOSS_NETS = ("densenet121", "none")


@dataclass(frozen=True)
class NolConfig:
    """All sizes of the NOL network and its training loss.

    encoder: "densenet121" (taps: relu0 1/2, denseblock1 1/4, denseblock2 1/8, denseblock3
        1/16) or "pyramid" (four strided 3x3 conv stages with ``pyramid_channels``).
    tap_channels: output channels of the four tap heads (sum = feature channels, 13 in paper).
    crop_size: side of the square source/target crops, pixels.
    lstm_channels: hidden channels of the three ConvLSTM layers (3x3 kernels); the last one is
        the channel count of X_I.
    weight_channels: hidden channels of the weight block (3x3 convs, ReLU), then 1 channel.
    wdsr_*: WDSR-B decoder (training only), X_S -> X_phi (3 channels).
    restore_filters, restore_layers: the restorer (:class:`~nol_ros.nol.network.Restorer`, run
        on the rendered image at its full resolution; trained by ``python -m
        nol_ros.nol.restore``); 0 filters: none.
    restore_cues: 0 (the restorer sees the rendered colour and silhouette) or 2 (also the
        blend's per-pixel cues: the sources' colour spread and their distance to their own
        silhouette edges; :data:`~nol_ros.nol.network.RESTORE_CUES`).
    lambda_i, lambda_f, lambda_s: loss weights (image L1, feature L1, Laplacian smoothness).
    feature_loss_net: psi for the feature loss: "densenet121" (first two dense blocks) or "none".
    n_sources_train / n_sources_infer: K used for training / rendering.
    """

    name: str = "paper"
    encoder: str = "densenet121"
    pyramid_channels: tuple[int, ...] = (16, 32, 48, 64)
    tap_channels: tuple[int, ...] = (4, 3, 3, 3)
    crop_size: int = 256
    lstm_channels: tuple[int, ...] = (32, 32, 16)
    lstm_kernel: int = 3
    weight_channels: tuple[int, ...] = (32, 16, 8)
    wdsr_filters: int = 32
    wdsr_blocks: int = 6
    wdsr_expansion: int = 4
    restore_filters: int = 0
    restore_layers: int = 4
    restore_cues: int = 0
    lambda_i: float = 5.0
    lambda_f: float = 10.0
    lambda_s: float = 1.0
    feature_loss_net: str = "densenet121"
    n_sources_train: int = 8
    n_sources_infer: int = 6
    learning_rate: float = 1e-3

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ConfigError(f"NolConfig.encoder '{self.encoder}' unknown; use one of "
                              f"{', '.join(ENCODERS)}")
        if self.feature_loss_net not in FEATURE_LOSS_NETS:
            raise ConfigError(f"NolConfig.feature_loss_net '{self.feature_loss_net}' unknown; "
                              f"use one of {', '.join(FEATURE_LOSS_NETS)}")
        if len(self.tap_channels) != 4 or min(self.tap_channels) < 1:
            raise ConfigError("NolConfig.tap_channels needs 4 positive channel counts "
                              "(taps at 1/2, 1/4, 1/8, 1/16), e.g. (4, 3, 3, 3)")
        if self.encoder == "pyramid" and (len(self.pyramid_channels) != 4
                                          or min(self.pyramid_channels) < 1):
            raise ConfigError("NolConfig.pyramid_channels needs 4 positive channel counts")
        if self.crop_size < 16 or self.crop_size % 16:
            raise ConfigError(f"NolConfig.crop_size {self.crop_size} must be a multiple of 16 "
                              "(the encoder goes down to 1/16), e.g. 128 or 256")
        if not self.lstm_channels or min(self.lstm_channels) < 1:
            raise ConfigError("NolConfig.lstm_channels needs >= 1 positive channel count")
        if self.lstm_kernel < 1 or self.lstm_kernel % 2 == 0:
            raise ConfigError("NolConfig.lstm_kernel must be odd and positive, e.g. 3")
        if not self.weight_channels or min(self.weight_channels) < 1:
            raise ConfigError("NolConfig.weight_channels needs >= 1 positive channel count")
        if min(self.wdsr_filters, self.wdsr_blocks, self.wdsr_expansion) < 1:
            raise ConfigError("NolConfig.wdsr_filters/blocks/expansion must be positive")
        if self.restore_filters < 0 or self.restore_layers < 2 or self.restore_cues not in (0, 2):
            raise ConfigError("NolConfig.restore_filters must be >= 0 (0: no restorer), "
                              "restore_layers >= 2 and restore_cues 0 or 2")
        if min(self.n_sources_train, self.n_sources_infer) < 1:
            raise ConfigError("NolConfig.n_sources_train/infer must be >= 1")

    @property
    def feature_channels(self) -> int:
        """Encoder feature channels (13 for the paper)."""
        return int(sum(self.tap_channels))

    @property
    def source_channels(self) -> int:
        """Channels of F_k and P_k: rgb 3 + features + angle 1 (17 for the paper)."""
        return 3 + self.feature_channels + 1

    @staticmethod
    def preset(name: str) -> NolConfig:
        """``paper`` or ``cpu`` (see module docstring)."""
        name = NolPreset.parse(name, "NOL preset")
        if name == NolPreset.PAPER:
            return NolConfig()
        return NolConfig(name="cpu", encoder="pyramid", pyramid_channels=(16, 24, 32, 48),
                         crop_size=128, lstm_channels=(8, 8, 8),
                         weight_channels=(16, 8, 8), wdsr_filters=16, wdsr_blocks=3,
                         feature_loss_net="none")  # NolPreset.CPU

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), JSON/YAML serialisable (nol_ros.config.to_dict)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NolConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError naming them."""
        return from_dict(cls, d, "NOL config: ")
