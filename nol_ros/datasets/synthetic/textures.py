"""Procedural textures rich in detail: printed labels (text, stripes, logos, barcodes), wood,
posters, walls. Deterministic by the generator passed in. Images are (H, W, 3) uint8 RGB."""

from __future__ import annotations

import cv2
import numpy as np

WORDS = ["CRACKER", "SUGAR", "SOUP", "TOMATO", "MUSTARD", "CHEF", "COFFEE", "BLEACH", "CLEAN",
         "FRESH", "ORIGINAL", "NET WT", "NEW", "RECIPE", "WHOLE", "GRAIN", "CLASSIC", "ROBOT",
         "VIENNA", "LEARN", "OBJECT", "ENERGY", "NATURAL", "SINCE 1897", "FAMILY SIZE"]


def _color(rng, lo=0, hi=255):
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _noise(rng, h, w, scale=8.0, amp=12.0):
    small = rng.normal(0, 1, (max(2, int(h / scale)), max(2, int(w / scale)), 1))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * amp


def label_texture(rng: np.random.Generator, h: int = 512, w: int = 512) -> np.ndarray:
    """A printed-package look: coloured bands, big and small text, a logo, stripes, barcode."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = _color(rng, 40, 240)
    # horizontal bands
    y = 0
    while y < h:
        bh = int(rng.integers(h // 12, h // 4))
        if rng.random() < 0.6:
            img[y:y + bh] = _color(rng)
        y += bh
    # diagonal / vertical stripes in one band
    y0 = int(rng.integers(0, h - h // 6))
    c = _color(rng)
    period = int(rng.integers(8, 24))
    for x in range(-h, w, period):
        cv2.line(img, (x, y0), (x + h // 6, y0 + h // 6), c, max(1, period // 3))
    # logo: circles and a polygon
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = int(rng.integers(w // 6, 5 * w // 6)), int(rng.integers(h // 6, 5 * h // 6))
        r = int(rng.integers(h // 12, h // 5))
        cv2.circle(img, (cx, cy), r, _color(rng), -1, cv2.LINE_AA)
        cv2.circle(img, (cx, cy), int(r * 0.7), _color(rng), max(2, r // 8), cv2.LINE_AA)
        pts = np.array([[cx + r * np.cos(a), cy + r * np.sin(a)]
                        for a in np.linspace(0, 2 * np.pi, int(rng.integers(3, 7)),
                                             endpoint=False) + rng.random()], np.int32)
        cv2.fillPoly(img, [pts], _color(rng), cv2.LINE_AA)
    # text of several sizes (text-like strokes)
    for _ in range(int(rng.integers(6, 12))):
        word = WORDS[int(rng.integers(len(WORDS)))]
        scale = float(rng.uniform(0.5, 2.6)) * w / 512
        th = max(1, int(scale * 2))
        org = (int(rng.integers(0, w // 2)), int(rng.integers(20, h)))
        font = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX,
                cv2.FONT_HERSHEY_COMPLEX][int(rng.integers(4))]
        cv2.putText(img, word, org, font, scale, _color(rng), th, cv2.LINE_AA)
    # barcode
    bx, by = int(rng.integers(0, w - w // 4)), int(rng.integers(0, h - h // 8))
    img[by:by + h // 10, bx:bx + w // 5] = 255
    x = bx + 4
    while x < bx + w // 5 - 4:
        bw = int(rng.integers(1, 4))
        img[by + 3:by + h // 10 - 3, x:x + bw] = 0
        x += bw + int(rng.integers(1, 4))
    out = img.astype(np.float32) + _noise(rng, h, w, 6.0, 10.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def ring_texture(rng: np.random.Generator, h: int = 256, w: int = 256) -> np.ndarray:
    """Texture that only varies along v (rows): rotationally uniform on a lathe object, so the
    object is truly symmetric (geometry AND appearance)."""
    rows = np.zeros((h, 3), np.float32)
    y = 0
    while y < h:
        bh = int(rng.integers(4, 24))
        rows[y:y + bh] = _color(rng, 30, 240)
        y += bh
    return np.repeat(rows[:, None, :], w, axis=1).astype(np.uint8)


def wood_texture(rng: np.random.Generator, h: int = 1024, w: int = 1024) -> np.ndarray:
    """Wood-like: a random wood tone (light beech to dark walnut); boards along x, each of its
    own tone with butt joints; irregular grain lines (spacing and direction wander with
    low-frequency noise, so the pattern is not periodic), blotchy figure, knots, pores and
    scratches. Detail in both directions keeps camera tracking on the table well-posed."""
    r = rng.uniform(110, 215)
    base = np.array([r, r * rng.uniform(0.62, 0.8), r * rng.uniform(0.38, 0.58)], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # boards: rows of height plank_h, cut into pieces of random length
    plank_h = int(rng.integers(h // 8, h // 5))
    row = (yy // plank_h).astype(int)
    n_rows = int(row.max()) + 1
    piece = np.zeros((h, w), int)
    seam = (yy % plank_h) < 2
    for rr in range(n_rows):
        cuts = np.cumsum(rng.integers(w // 4, w // 2 + 1, 4)) - int(rng.integers(0, w // 4))
        sel = row == rr
        piece[sel] = rr * 8 + np.searchsorted(cuts, xx[sel])
        for c in cuts[(cuts > 0) & (cuts < w)]:
            seam[sel & (np.abs(xx - c) < 1.5)] = True
    n_pieces = int(piece.max()) + 1
    tone = 1.0 + 0.14 * rng.normal(0, 1, n_pieces)[piece]
    offset = rng.uniform(0, 200, n_pieces)[piece]
    f = rng.uniform(0.6, 0.9)  # fine grain (~2 cm on a table), the coarse look is figure
    warp = _noise(rng, h, w, 80.0, 18.0)[..., 0] + _noise(rng, h, w, 12.0, 2.0)[..., 0]
    phase = f * (yy + warp + offset) + _noise(rng, h, w, 140.0, 4.0)[..., 0]
    for _ in range(int(rng.integers(3, 7))):  # knots: the grain bends around them
        ky, kx = rng.uniform(0, h), rng.uniform(0, w)
        d2 = ((yy - ky) / rng.uniform(6, 14)) ** 2 + ((xx - kx) / rng.uniform(25, 60)) ** 2
        phase += 6.0 * np.exp(-d2 / 4.0) + 0.8 * np.sqrt(d2) * (d2 < 4.0)
    grain = 0.5 + 0.5 * np.sin(phase) ** 3
    # figure: blotches and tone streaks along the grain (noise stretched 3x along x)
    small = rng.normal(0, 1, (max(2, h // 20), max(2, w // 60)))
    blotch = 1.0 + _noise(rng, h, w, 30.0, 0.17) \
        + 0.1 * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    pores = cv2.GaussianBlur((rng.random((h, w)) < 0.03).astype(np.float32), (9, 1), 0) > 0.2
    img = base * (tone * (0.78 + 0.22 * grain) * (1.0 - 0.2 * pores))[..., None] * blotch \
        + _noise(rng, h, w, 2.0, 6.0)
    img[seam] *= 0.5
    # scratches and dents
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(60):
        p0 = (int(rng.integers(w)), int(rng.integers(h)))
        p1 = (p0[0] + int(rng.integers(-60, 60)), p0[1] + int(rng.integers(-60, 60)))
        dark = tuple(int(c) for c in base * rng.uniform(0.45, 0.7))
        cv2.line(img, p0, p1, dark, 1, cv2.LINE_AA)
    return img


def poster_texture(rng: np.random.Generator, h: int = 512, w: int = 512) -> np.ndarray:
    img = label_texture(rng, h, w)
    for _ in range(20):
        cv2.rectangle(img, (int(rng.integers(w)), int(rng.integers(h))),
                      (int(rng.integers(w)), int(rng.integers(h))), _color(rng), -1)
    return cv2.addWeighted(img, 0.6, label_texture(rng, h, w), 0.4, 0)


def wall_texture(rng: np.random.Generator, h: int = 512, w: int = 1024) -> np.ndarray:
    base = np.array(_color(rng, 120, 230), np.float32)
    img = base + _noise(rng, h, w, 4.0, 10.0) + _noise(rng, h, w, 60.0, 20.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # posters and shelves (textured rectangles)
    for _ in range(int(rng.integers(3, 6))):
        ph, pw = int(rng.integers(h // 5, h // 2)), int(rng.integers(w // 10, w // 4))
        y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        img[y:y + ph, x:x + pw] = cv2.resize(poster_texture(rng, 256, 256), (pw, ph))
    return img


def floor_texture(rng: np.random.Generator, h: int = 1024, w: int = 1024) -> np.ndarray:
    tile = int(rng.integers(48, 128))
    a, b = np.array(_color(rng, 60, 200), np.float32), np.array(_color(rng, 60, 200), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    chk = ((yy // tile + xx // tile) % 2)[..., None]
    img = np.where(chk, a, b) + _noise(rng, h, w, 5.0, 14.0)
    return np.clip(img, 0, 255).astype(np.uint8)
