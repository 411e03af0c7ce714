"""Image augmentation for the recognisers, numpy + OpenCV (no albumentations here).

All functions take and return (H, W, 3) uint8 RGB images (masks (H, W) bool) and draw from the
``numpy.random.Generator`` they are given, so a seeded generator reproduces them exactly.
Backgrounds come from a pool of procedural textures (``nol_ros.datasets.synthetic.textures``:
walls, posters, wood, floors, printed labels) plus random shapes and noise, in place of the
MS-COCO images of the paper, which cannot be downloaded here.
"""

from __future__ import annotations

import cv2
import numpy as np

from nol_ros.datasets.synthetic import textures as tx

_NOISE_BANK: dict[int, np.ndarray] = {}


def _noise_bank() -> np.ndarray:
    """(1024, 1024, 3) float32 standard normal noise, generated once (fixed seed): cropping it
    at a random offset is much faster than drawing fresh noise for every image."""
    if 0 not in _NOISE_BANK:
        _NOISE_BANK[0] = np.random.default_rng(12345).normal(0, 1, (1024, 1024, 3)).astype(
            np.float32)
    return _NOISE_BANK[0]


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian-like noise of std ``sigma`` (8-bit units): tiles of the noise bank at a
    random offset and flip."""
    if sigma <= 0:
        return img
    bank = _noise_bank()
    H, W = img.shape[:2]
    B = bank.shape[0]
    if H > B or W > B:
        bank = np.tile(bank, (H // B + 1, W // B + 1, 1))
    oy = int(rng.integers(0, bank.shape[0] - H + 1))
    ox = int(rng.integers(0, bank.shape[1] - W + 1))
    n = bank[oy:oy + H, ox:ox + W]
    if rng.random() < 0.5:
        n = n[::-1]
    x = img.astype(np.float32)
    if x.ndim == 2:
        n = n[..., 0]
    return np.clip(x + sigma * n, 0, 255).astype(np.uint8)


def color_jitter(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness (add U(-15, 15)), contrast U(0.8, 1.3), per-channel gain U(0.85, 1.15),
    saturation U(0.7, 1.3), Gaussian blur sigma U(0, 0.8), noise std U(0, 6); ranges scaled by
    ``strength`` (0 = identity). (H, W, 3) uint8 -> same."""
    if strength <= 0:
        return img
    s = float(strength)
    mean = float(img[::4, ::4].mean())
    contrast = 1 + s * rng.uniform(-0.2, 0.3)
    bright = s * rng.uniform(-15, 15)
    gain = 1 + s * rng.uniform(-0.15, 0.15, 3)
    v = np.arange(256, dtype=np.float32)
    lut = np.stack([np.clip(g * ((v - mean) * contrast + mean + bright), 0, 255) for g in gain],
                   -1).astype(np.uint8).reshape(256, 1, 3)
    x = cv2.LUT(np.ascontiguousarray(img), lut)
    sat = 1 + s * rng.uniform(-0.3, 0.3)
    grey = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    x = cv2.addWeighted(x, sat, grey, 1 - sat, 0)
    sigma = s * rng.uniform(0, 0.8)
    if sigma > 0.2:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    return add_noise(x, s * rng.uniform(0, 6), rng)


class BackgroundPool:
    """A pool of procedural texture images (generated once, seeded) and random backgrounds cut
    from them: random crop, scale, rotation, flip and colour, with random shapes on top."""

    def __init__(self, n: int = 32, seed: int = 0, size: int = 512):
        rng = np.random.default_rng([seed, 77])
        makers = [tx.wall_texture, tx.poster_texture, tx.wood_texture, tx.floor_texture,
                  tx.label_texture]
        self.images = []
        for i in range(max(1, n)):
            f = makers[i % len(makers)]
            h, w = (size, 2 * size) if f is tx.wall_texture else (size, size)
            self.images.append(f(np.random.default_rng([seed, 77, i]), h, w))
        self.rng_seed = seed
        self._noise_rng = rng

    def background(self, rng: np.random.Generator, h: int, w: int, shapes: int = 6
                   ) -> np.ndarray:
        """(h, w, 3) uint8: a random view of a pool texture (or plain noise, 10 %) with up to
        ``shapes`` random filled shapes."""
        if rng.random() < 0.1:
            base = np.array(rng.integers(0, 255, 3), np.float32)
            small = rng.normal(0, 1, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
            img = base + cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * \
                rng.uniform(10, 60)
            img = np.clip(img, 0, 255).astype(np.uint8)
        else:
            src = self.images[int(rng.integers(len(self.images)))]
            img = random_view(src, rng, h, w)
        for _ in range(int(rng.integers(0, shapes + 1))):
            draw_shape(img, rng, self)
        return color_jitter(img, rng, 0.7)

    def patch(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """(h, w, 3) uint8 random texture patch (for occluders and distractors)."""
        src = self.images[int(rng.integers(len(self.images)))]
        return random_view(src, rng, max(1, h), max(1, w))


def random_view(src: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random rotated, scaled, flipped window of ``src`` resized to (h, w) (wrapping)."""
    Hs, Ws = src.shape[:2]
    scale = rng.uniform(0.5, 2.0) * max(h / Hs, w / Ws)
    ang = rng.uniform(-30, 30)
    cx, cy = rng.uniform(0, Ws), rng.uniform(0, Hs)
    M = cv2.getRotationMatrix2D((cx, cy), ang, scale)
    M[:, 2] += np.array([w / 2 - cx, h / 2 - cy])
    out = cv2.warpAffine(src, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def draw_shape(img: np.ndarray, rng: np.random.Generator, pool: BackgroundPool | None = None,
               box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Draw one random filled shape (rectangle, ellipse, polygon, thick line) in place, a plain
    colour or (with a pool) a texture; inside ``box`` (x0, y0, x1, y1) when given. Returns the
    (H, W) bool mask of the drawn pixels."""
    H, W = img.shape[:2]
    x0, y0, x1, y1 = box if box is not None else (0, 0, W, H)
    bw, bh = max(2, x1 - x0), max(2, y1 - y0)
    m = np.zeros((H, W), np.uint8)
    kind = int(rng.integers(4))
    cx, cy = int(rng.integers(x0, x0 + bw)), int(rng.integers(y0, y0 + bh))
    sx, sy = int(rng.uniform(0.1, 0.6) * bw) + 1, int(rng.uniform(0.1, 0.6) * bh) + 1
    if kind == 0:
        cv2.rectangle(m, (cx - sx, cy - sy), (cx + sx, cy + sy), 1, -1)
    elif kind == 1:
        cv2.ellipse(m, (cx, cy), (sx, sy), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 2:
        n = int(rng.integers(3, 7))
        pts = np.stack([cx + rng.uniform(-sx, sx, n), cy + rng.uniform(-sy, sy, n)], 1)
        cv2.fillPoly(m, [pts.astype(np.int32)], 1)
    else:
        cv2.line(m, (cx - sx, cy - sy), (cx + sx, cy + sy), 1, max(1, int(min(sx, sy) * 0.3)))
    sel = m > 0
    ys, xs = np.nonzero(sel)
    if len(xs) == 0:
        return sel
    if pool is not None and rng.random() < 0.6:
        ya, yb, xa, xb = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        sub = sel[ya:yb, xa:xb]
        img[ya:yb, xa:xb][sub] = pool.patch(rng, int(yb - ya), int(xb - xa))[sub]
    else:
        img[sel] = rng.integers(0, 255, 3).astype(np.uint8)
    return sel


def paste(dst: np.ndarray, src: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend src (h, w, 3) with alpha (h, w) float in [0, 1] into dst at (x, y), in place,
    clipped to dst."""
    H, W = dst.shape[:2]
    h, w = alpha.shape
    xa, ya, xb, yb = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if xb <= xa or yb <= ya:
        return
    a = alpha[ya - y:yb - y, xa - x:xb - x, None]
    s = src[ya - y:yb - y, xa - x:xb - x].astype(np.float32)
    d = dst[ya:yb, xa:xb].astype(np.float32)
    dst[ya:yb, xa:xb] = np.clip(a * s + (1 - a) * d + 0.5, 0, 255).astype(np.uint8)


def soft_alpha(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float32 alpha: the mask with its edge blurred by sigma U(0.3, 1.0) px (hides the
    pasting seam, as in cut-paste-learn)."""
    a = mask.astype(np.float32)
    s = float(rng.uniform(0.3, 1.0))
    return cv2.GaussianBlur(a, (0, 0), s) if s > 0.35 else a
