"""Atomic file writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (tmp file in the same directory + os.replace)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return _atomic(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and lists."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Atomically produce ``path`` with ``writer(tmp_path)`` (e.g. ``cv2.imwrite`` wrapper).

    The temporary path keeps the final suffix so extension-sniffing writers work.
    """
    return _atomic(path, writer)


def atomic_write_image(path: str | os.PathLike, image) -> Path:
    """Write an image with OpenCV atomically. RGB (H, W, 3) uint8 is converted to BGR on disk;
    (H, W) uint8/uint16 images are written as they are."""
    import cv2
    import numpy as np

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[..., ::-1]

    def write(tmp: str) -> None:
        if not cv2.imwrite(tmp, np.ascontiguousarray(img)):
            raise OSError(f"cv2.imwrite failed for {path}")

    return _atomic(path, write)
