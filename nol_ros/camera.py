"""Pinhole intrinsics, projection, depth <-> points, crops that keep K consistent.

Pixel convention (OpenCV): integer pixel (u, v) is the CENTRE of that pixel, u = fx x / z + cx.
A crop starting at integer pixel (x0, y0) and resized by s maps u -> (u - x0 + 0.5) s - 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nol_ros.errors import InputError


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera without distortion: focal lengths and principal point in pixels (OpenCV
    convention, integer coordinates are pixel centres), image size in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        if not (self.fx > 0 and self.fy > 0 and self.width > 0 and self.height > 0):
            raise InputError(f"invalid intrinsics {self}: focal lengths and size must be > 0")

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> Intrinsics:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   int(width), int(height))

    def project(self, pts_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) camera-frame points -> (uv (N, 2) pixels, z (N,) metres)."""
        P = np.asarray(pts_cam, dtype=np.float64)
        z = P[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * P[:, 0] / z + self.cx, self.fy * P[:, 1] / z + self.cy], 1)
        return uv, z

    def backproject(self, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, 2) pixels + (N,) depths -> (N, 3) camera-frame points."""
        uv = np.asarray(uv, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        return np.stack([(uv[:, 0] - self.cx) / self.fx * z, (uv[:, 1] - self.cy) / self.fy * z,
                         z], 1)

    def depth_to_points(self, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) metres (0 invalid) -> (points (N, 3), pixels (N, 2) int [u, v])."""
        d = np.asarray(depth)
        if d.shape != (self.height, self.width):
            raise InputError(f"depth is {d.shape[1]}x{d.shape[0]}, intrinsics are "
                             f"{self.width}x{self.height}")
        v, u = np.nonzero(np.isfinite(d) & (d > 0))
        pix = np.stack([u, v], 1)
        return self.backproject(pix, d[v, u]), pix

    def ray_directions(self) -> np.ndarray:
        """(H, W, 3) camera-frame ray directions with z = 1 through every pixel centre."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64),
                           np.arange(self.height, dtype=np.float64))
        return np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], -1)

    def crop_resize(self, x0: float, y0: float, side_w: float, side_h: float, out_w: int,
                    out_h: int) -> Intrinsics:
        """Intrinsics of the crop [x0, x0+side_w) x [y0, y0+side_h) resized to out_w x out_h."""
        sx, sy = out_w / side_w, out_h / side_h
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx - x0 + 0.5) * sx - 0.5,
                          (self.cy - y0 + 0.5) * sy - 0.5, int(out_w), int(out_h))

    def scaled(self, s: float) -> Intrinsics:
        """Intrinsics of the whole image resized by s (area-style, pixel centres kept)."""
        return self.crop_resize(0, 0, self.width, self.height, int(round(self.width * s)),
                                int(round(self.height * s)))


SMOT_XTION = Intrinsics(538.391, 538.085, 315.307, 233.048, 640, 480)


def square_crop_box(mask: np.ndarray, min_half: int = 128) -> tuple[int, int, int]:
    """Square box (x0, y0, side) around the mask's bounding box with half side
    max(h/2, w/2, min_half) (NOL's crop rule). Raises InputError for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        raise InputError("the object mask is empty: the object is not visible in this view")
    x_lo, x_hi, y_lo, y_hi = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    half = max((x_hi - x_lo) / 2, (y_hi - y_lo) / 2, float(min_half))
    cx, cy = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
    side = int(np.ceil(2 * half))
    return int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2)), side


def crop_image(img: np.ndarray, box: tuple[int, int, int], out_size: int,
               interp: str = "linear") -> np.ndarray:
    """Crop the square ``box`` = (x0, y0, side) and resize to out_size; outside the image is 0.

    img: (H, W) or (H, W, C) any dtype OpenCV warps (uint8, float32, float64) -> (out_size,
    out_size[, C]) same dtype. Crop pixel (i, j) samples source (x0 + (i + 0.5)/s - 0.5, ...).

    Uses the same mapping as :meth:`Intrinsics.crop_resize`. interp: linear | nearest | area.
    """
    x0, y0, side = box
    if side <= 0 or out_size <= 0:
        raise InputError(f"crop box {box} / out_size {out_size}: side and size must be > 0")
    s = out_size / side
    M = np.array([[s, 0, s * (0.5 - x0) - 0.5], [0, s, s * (0.5 - y0) - 0.5]], dtype=np.float64)
    flags = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST,
             "area": cv2.INTER_AREA}.get(interp)
    if flags is None:
        raise InputError(f"interp '{interp}' unknown; use linear, nearest or area")
    a = np.asarray(img)
    if interp == "area" and s < 1:
        # integrate over source pixels: blur to the destination footprint, then sample
        k = int(np.ceil(1 / s)) | 1
        a = cv2.blur(a, (k, k))
        flags = cv2.INTER_LINEAR
    return cv2.warpAffine(a, M, (out_size, out_size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
