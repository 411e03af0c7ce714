"""An Asus-Xtion-like RGB-D sensor model applied to perfect renders.

Depth (structured light): disparity quantised in 1/8 px (so depth steps grow ~ z^2), axial noise
sigma(z) = 1.2 mm + 1.9 mm (z - 0.4)^2 (Nguyen et al. 2012), invalid outside 0.4-4.5 m, at depth
edges, on dark surfaces (IR absorbed), on specular highlights (the projected IR pattern is
reflected away) and on random speckles; stored as uint16 mm.
RGB: per-frame exposure and white balance drift (smooth random walk), mild Gaussian blur,
additive noise, 8-bit. RGB and depth are stamped a few ms apart.

Real-sensor effects, each an option (off in SensorConfig(); see the presets for what is on):
``misregistration_px`` shifts the depth against the colour (a registration/calibration error of
a few pixels); ``auto_exposure_jump_prob`` makes the exposure jump (auto-exposure reacting to a
bright or dark view) instead of drifting; ``edge_hole_px`` widens the invalid band at depth edges
(the IR shadow of the projector); ``saturated_fraction`` marks invalid pixels that the driver
writes as 65535 instead of 0 (both mean "no reading"); ``drop_frame_prob`` drops whole frames
(the stamps keep the gap) and ``stamp_jitter_ms`` jitters the stamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SensorConfig:
    baseline_focal: float = 0.075 * 538.0   # b * f (m px) of the Xtion's IR pair
    subpixel: float = 8.0                   # disparity resolution 1/8 px
    z_min: float = 0.4
    z_max: float = 4.5
    edge_jump_m: float = 0.03
    dark_threshold: float = 0.07            # albedo*light below this -> likely no depth
    dark_dropout: float = 0.6
    speckle_dropout: float = 0.004
    specular_threshold: float = 0.5         # highlight strength above this -> likely no depth
    specular_dropout: float = 0.85
    blur_sigma: tuple[float, float] = (0.3, 0.8)
    noise_std: float = 2.0                  # RGB, in 8-bit units
    exposure_walk: float = 0.02
    wb_walk: float = 0.01
    depth_delay_ms: tuple[float, float] = (2.0, 8.0)
    # real-sensor effects (off by default)
    misregistration_px: tuple[float, float] = (0.0, 0.0)  # depth shifted by (dx, dy) pixels
    auto_exposure_jump_prob: float = 0.0    # per frame: exposure jumps by +-auto_exposure_jump
    auto_exposure_jump: float = 0.25
    edge_hole_px: int = 0                   # invalid band around depth edges (dilation radius)
    saturated_fraction: float = 0.0         # invalid pixels written as 65535 (not 0)
    drop_frame_prob: float = 0.0            # frames lost by the driver (not written)
    stamp_jitter_ms: float = 0.0            # Gaussian jitter of the RGB and depth stamps


class XtionSensor:
    def __init__(self, cfg: SensorConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.exposure = 1.0
        self.wb = np.ones(3)

    def depth(self, z: np.ndarray, brightness: np.ndarray | None = None,
              specular: np.ndarray | None = None) -> np.ndarray:
        """Perfect depth z (H, W) float m (0 = nothing) -> sensor depth (H, W) float32 m
        (0 = invalid), already quantised to millimetres. brightness (H, W) in [0, 1] (shaded
        albedo): dark pixels lose depth; specular (H, W) in [0, 1] (highlight strength, see
        :func:`specular_strength`): highlights lose depth."""
        c, rng = self.cfg, self.rng
        valid = (z > c.z_min) & (z < c.z_max)
        zz = np.where(valid, z, 1.0)
        sigma = 0.0012 + 0.0019 * (zz - 0.4) ** 2
        noisy = zz + rng.normal(0, 1, z.shape) * sigma
        disp = np.round(c.baseline_focal / noisy * c.subpixel) / c.subpixel
        q = c.baseline_focal / np.maximum(disp, 1e-6)
        # edges: a depth jump in the 3x3 neighbourhood of the perfect depth
        zmax = cv2.dilate(np.where(valid, z, 0).astype(np.float32), np.ones((3, 3)))
        zmin = -cv2.dilate(-np.where(valid, z, 1e3).astype(np.float32), np.ones((3, 3)))
        edge = (zmax - zmin) > c.edge_jump_m
        drop = edge & (rng.random(z.shape) < 0.7)
        if brightness is not None:
            drop |= (brightness < c.dark_threshold) & (rng.random(z.shape) < c.dark_dropout)
        if specular is not None:
            drop |= (specular > c.specular_threshold) & (rng.random(z.shape) < c.specular_dropout)
        drop |= rng.random(z.shape) < c.speckle_dropout
        if c.edge_hole_px > 0:
            k = 2 * int(c.edge_hole_px) + 1
            drop |= cv2.dilate(edge.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        out = np.where(valid & ~drop, q, 0.0)
        dx, dy = c.misregistration_px
        if dx or dy:
            M = np.float32([[1, 0, dx], [0, 1, dy]])
            out = cv2.warpAffine(out.astype(np.float32), M, (out.shape[1], out.shape[0]),
                                 flags=cv2.INTER_NEAREST, borderValue=0)
        return (np.round(out * 1000.0) / 1000.0).astype(np.float32)

    def saturated_mask(self, depth: np.ndarray) -> np.ndarray | None:
        """(H, W) bool: invalid pixels of ``depth`` that the driver reports as 65535."""
        if self.cfg.saturated_fraction <= 0:
            return None
        return (depth <= 0) & (self.rng.random(depth.shape) < self.cfg.saturated_fraction)

    def drop_frame(self) -> bool:
        return self.cfg.drop_frame_prob > 0 and self.rng.random() < self.cfg.drop_frame_prob

    def jitter_ns(self) -> int:
        if self.cfg.stamp_jitter_ms <= 0:
            return 0
        return int(self.rng.normal(0, self.cfg.stamp_jitter_ms) * 1e6)

    @property
    def gain(self) -> np.ndarray:
        """(3,) the colour gain the last :meth:`rgb` applied (exposure x white balance)."""
        return self.exposure * self.wb

    def rgb(self, img: np.ndarray) -> np.ndarray:
        """Perfect colour (H, W, 3) float [0, 1] -> sensor RGB uint8."""
        c, rng = self.cfg, self.rng
        lo, hi = (0.5, 1.6) if c.auto_exposure_jump_prob > 0 else (0.8, 1.2)
        self.exposure = float(np.clip(self.exposure + rng.normal(0, c.exposure_walk), lo, hi))
        if c.auto_exposure_jump_prob > 0 and rng.random() < c.auto_exposure_jump_prob:
            self.exposure = float(np.clip(self.exposure * (1 + rng.choice([-1, 1])
                                                           * c.auto_exposure_jump), 0.5, 1.6))
        self.wb = np.clip(self.wb + rng.normal(0, c.wb_walk, 3), 0.9, 1.1)
        x = img.astype(np.float32) * self.exposure * self.wb.astype(np.float32)
        s = float(rng.uniform(*c.blur_sigma))
        x = cv2.GaussianBlur(x, (0, 0), s)
        x = x * 255.0 + rng.normal(0, c.noise_std, x.shape).astype(np.float32)
        return np.clip(np.round(x), 0, 255).astype(np.uint8)

    def depth_delay_ns(self) -> int:
        return int(self.rng.uniform(*self.cfg.depth_delay_ms) * 1e6)


def specular_strength(normal_cam: np.ndarray, rays_cam: np.ndarray, light_dir_cam: np.ndarray,
                      shininess: float = 80.0) -> np.ndarray:
    """Blinn-Phong highlight (n . h)^shininess, (H, W) float32 in [0, 1].

    normal_cam (H, W, 3) unit surface normals (camera frame, 0 on background); rays_cam
    (H, W, 3) pixel ray directions (camera frame, any length); light_dir_cam (3,) direction from
    the surface to a distant light (camera frame)."""
    v = -rays_cam / np.linalg.norm(rays_cam, axis=2, keepdims=True)
    l_ = np.asarray(light_dir_cam, np.float64) / np.linalg.norm(light_dir_cam)
    h = v + l_
    h /= np.maximum(np.linalg.norm(h, axis=2, keepdims=True), 1e-9)
    ndh = np.clip(np.sum(normal_cam * h, axis=2), 0.0, 1.0)
    return (ndh ** shininess).astype(np.float32)
