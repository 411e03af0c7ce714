"""Atomic, verified file writes: a crash, a full disk or a failing writer never leaves a
half-written file under the final name, and never removes the previous version.

Every write goes to a temporary file in the same folder, is flushed to disk (fsync), checked
(non-empty, and by ``verify`` where given: an image is read back, a mesh re-loaded), given the
mode a normal ``open`` would (0666 minus the umask: ``mkstemp`` alone makes 0600) and renamed
over the target (``os.replace``, atomic on POSIX); the folder is then fsynced so the rename
survives a power cut. On any error the temporary file is removed and the error raised: a
:class:`DiskWriteError` (code DISK_WRITE_FAILED) naming the file and what to do when the OS
refused (disk full, permissions).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nol_ros.errors import NolError


class DiskWriteError(NolError):
    """Writing an artefact failed (disk full, no permission, a writer that reported failure)."""

    code = "DISK_WRITE_FAILED"


_ADVICE = ("check the disk space and the folder's permissions (the previous file, if any, is "
           "unchanged)")


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic(path: str | os.PathLike, write: Callable[[str], None],
            verify: Callable[[str], None] | None = None) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix,
                                   dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise DiskWriteError(f"cannot write '{path}': {e.strerror or e}; check the disk space "
                             "and the folder's permissions") from e
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if os.path.getsize(tmp) == 0:
            raise DiskWriteError(f"writing '{path}' produced an empty file (disk full?)")
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise DiskWriteError(f"cannot write '{path}': {e.strerror or e}; {_ADVICE}") from e
        if isinstance(e, DiskWriteError) and _ADVICE not in str(e):
            raise DiskWriteError(f"{e}; {_ADVICE}") from e   # one advice for every refusal
        raise
    _fsync_dir(path.parent)
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


def atomic_write_with(path: str | os.PathLike, writer: Callable[[str], None],
                      verify: Callable[[str], None] | None = None) -> Path:
    """Atomically produce ``path`` with ``writer(tmp_path)`` (e.g. ``cv2.imwrite`` wrapper);
    ``verify(tmp_path)`` raises when what was written is not right (read it back).

    The temporary path keeps the final suffix so extension-sniffing writers work.
    """
    return _atomic(path, writer, verify)


def atomic_write_image(path: str | os.PathLike, image) -> Path:
    """Write an image with OpenCV atomically. RGB (H, W, 3) uint8 is converted to BGR on disk;
    (H, W) uint8/uint16 images are written as they are."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[..., ::-1]

    def write(tmp: str) -> None:
        if not cv2.imwrite(tmp, np.ascontiguousarray(img)):
            raise DiskWriteError(f"cv2.imwrite failed for '{path}' (disk full, or an image type "
                                 "the format cannot hold)")

    def verify(tmp: str) -> None:
        back = cv2.imread(tmp, cv2.IMREAD_UNCHANGED)
        if back is None or back.shape[:2] != img.shape[:2]:
            raise DiskWriteError(f"'{path}' does not read back as the {img.shape[1]}x"
                                 f"{img.shape[0]} image written (disk full?)")

    return _atomic(path, write, verify)


def atomic_write_mesh(path: str | os.PathLike, mesh) -> Path:
    """Write an Open3D TriangleMesh (PLY/OBJ by suffix, binary) atomically and read it back:
    Open3D reports success on a full disk and leaves a truncated file, which the read-back
    (vertex and triangle counts) catches."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    nv, nt = len(mesh.vertices), len(mesh.triangles)

    def write(tmp: str) -> None:
        if not o3d.io.write_triangle_mesh(tmp, mesh, write_ascii=False):
            raise DiskWriteError(f"Open3D could not write '{path}'")

    def verify(tmp: str) -> None:
        back = o3d.io.read_triangle_mesh(tmp)
        if len(back.vertices) != nv or len(back.triangles) != nt:
            raise DiskWriteError(f"'{path}' reads back with {len(back.vertices)} vertices and "
                                 f"{len(back.triangles)} triangles instead of {nv} and {nt} "
                                 "(disk full?)")

    return _atomic(path, write, verify)
