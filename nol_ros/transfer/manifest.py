"""What a transfer carries: a folder's regular files as one byte stream (files in path order,
back to back) cut into fixed-size chunks, with a SHA-256 per file and per chunk.

The manifest is the contract between the two hosts. Its id (a hash of its canonical JSON) names
the transfer: the same folder content gives the same id, so a receiver that lost the link, or
restarted, resumes the chunks it already holds; changed content gives a new id and a new
transfer. A receiver checks a manifest before it writes anything (:meth:`Manifest.from_bytes`):
plain relative paths (nol_ros.transfer.paths), no file twice, no file where another one needs a
folder, offsets and sizes that add up, within its limits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nol_ros.errors import ConfigError, FileFormatError, InputError
from nol_ros.transfer.paths import STAGING, PathError, wire_path

VERSION = 1
MIN_CHUNK, MAX_CHUNK = 1024, 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What a host accepts: files per transfer, bytes per transfer, manifest bytes."""

    max_files: int = 200_000
    max_bytes: int = 256 * 1024 ** 3
    max_manifest_bytes: int = 64 * 1024 ** 2

    def __post_init__(self):
        if min(self.max_files, self.max_bytes, self.max_manifest_bytes) < 1:
            raise ConfigError("transfer limits must be >= 1")


@dataclass(frozen=True)
class FileEntry:
    path: str          # relative POSIX path inside the transferred folder
    size: int          # bytes
    sha256: str        # hex digest of the file
    offset: int        # where the file starts in the stream


@dataclass(frozen=True)
class Manifest:
    chunk_size: int
    files: tuple[FileEntry, ...]
    chunks: tuple[str, ...]          # hex SHA-256 of every chunk of the stream, in order

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """[start, end) of chunk ``index`` in the stream."""
        if not 0 <= index < self.n_chunks:
            raise InputError(f"chunk {index} does not exist (the transfer has {self.n_chunks})")
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.total_bytes)

    def files_in(self, start: int, end: int) -> list[tuple[FileEntry, int, int]]:
        """(file, from, to) pieces (offsets inside each file) of stream bytes [start, end)."""
        starts = [f.offset for f in self.files]
        out = []
        k = max(0, bisect_right(starts, start) - 1)
        while k < len(self.files) and self.files[k].offset < end:
            f = self.files[k]
            lo, hi = max(start, f.offset), min(end, f.offset + f.size)
            if hi > lo:
                out.append((f, lo - f.offset, hi - f.offset))
            k += 1
        return out

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": VERSION, "chunk_size": self.chunk_size,
                "files": [[f.path, f.size, f.sha256] for f in self.files],
                "chunks": list(self.chunks)}

    def canonical(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @property
    def id(self) -> str:
        """The transfer's name: 32 hex digits of the SHA-256 of the canonical manifest."""
        return hashlib.sha256(self.canonical()).hexdigest()[:32]

    def to_bytes(self) -> bytes:
        """zlib-compressed canonical JSON (what travels)."""
        return zlib.compress(self.canonical(), 6)

    @classmethod
    def from_bytes(cls, data: bytes, limits: Limits = Limits()) -> Manifest:
        """Parse and check a manifest received from another host (FileFormatError / PathError
        naming the problem)."""
        d = zlib.decompressobj()
        try:
            raw = d.decompress(bytes(data), limits.max_manifest_bytes)
        except zlib.error as e:
            raise FileFormatError(f"the manifest is not zlib data ({e})") from e
        if d.unconsumed_tail:
            raise FileFormatError(f"the manifest is larger than {limits.max_manifest_bytes} "
                                  "bytes (limits.max_manifest_bytes)")
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FileFormatError(f"the manifest is not JSON ({e})") from e
        return cls.from_dict(obj, limits)

    @classmethod
    def from_dict(cls, obj, limits: Limits = Limits()) -> Manifest:
        if not isinstance(obj, dict) or obj.get("version") != VERSION:
            v = obj.get("version") if isinstance(obj, dict) else None
            raise FileFormatError(f"manifest version {v} unknown (this host reads {VERSION}); "
                                  "update both hosts")
        cs = obj.get("chunk_size")
        if not isinstance(cs, int) or not MIN_CHUNK <= cs <= MAX_CHUNK:
            raise FileFormatError(f"manifest chunk_size {cs!r} outside [{MIN_CHUNK}, {MAX_CHUNK}]")
        files_raw, chunks = obj.get("files"), obj.get("chunks")
        if not isinstance(files_raw, list) or not isinstance(chunks, list):
            raise FileFormatError("manifest needs 'files' and 'chunks' lists")
        if len(files_raw) > limits.max_files:
            raise InputError(f"the transfer has {len(files_raw)} files; this host accepts "
                             f"{limits.max_files} (limits.max_files)")
        files, offset, seen, dirs = [], 0, set(), set()
        for i, e in enumerate(files_raw):
            if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                    and isinstance(e[1], int) and e[1] >= 0 and _is_hex(e[2], 64)):
                raise FileFormatError(f"manifest file entry {i} is not [path, size >= 0, sha256]")
            p = wire_path(e[0], f"manifest file {i}")
            if e[0] in seen or e[0] in dirs:
                raise PathError(f"manifest file '{e[0]}' is listed twice or is also a folder")
            parents = {q.as_posix() for q in p.parents if q != PurePosixPath(".")}
            if parents & seen:
                raise PathError(f"manifest file '{e[0]}' lies under another listed file")
            seen.add(e[0])
            dirs |= parents
            files.append(FileEntry(e[0], e[1], e[2], offset))
            offset += e[1]
        if offset > limits.max_bytes:
            raise InputError(f"the transfer holds {offset} bytes; this host accepts "
                             f"{limits.max_bytes} (limits.max_bytes)")
        if [f.path for f in files] != sorted(f.path for f in files):
            raise FileFormatError("manifest files are not in path order")
        if len(chunks) != math.ceil(offset / cs) or not all(_is_hex(c, 64) for c in chunks):
            raise FileFormatError(f"manifest lists {len(chunks)} chunk hashes for {offset} "
                                  f"bytes in chunks of {cs}")
        return cls(cs, tuple(files), tuple(chunks))


def _is_hex(s, n: int) -> bool:
    return isinstance(s, str) and len(s) == n and all(c in "0123456789abcdef" for c in s)


def scan_folder(folder: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(relative POSIX path, absolute path, stat) of every regular file below ``folder`` in
    path order. Symbolic links and special files are refused: a transfer carries regular files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        d = Path(dirpath)
        for name in dirnames:
            if (d / name).is_symlink():
                raise InputError(f"'{d / name}' is a symbolic link; transfers carry regular "
                                 "files only (replace the link by the folder)")
        dirnames[:] = [n for n in dirnames if not (n == STAGING and d == folder)]
        for name in filenames:
            p = d / name
            st = p.lstat()
            if not os.path.isfile(p) or p.is_symlink():
                raise InputError(f"'{p}' is not a regular file (a link or a device); transfers "
                                 "carry regular files only")
            out.append((p.relative_to(folder).as_posix(), p, st))
    out.sort(key=lambda t: t[0])
    return out


def build_manifest(folder: str | os.PathLike, chunk_size: int, limits: Limits = Limits(),
                   progress: Callable[[int, int], None] | None = None) -> Manifest:
    """Hash a folder into its manifest (reads every file once). progress(bytes_done, total)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder; transfers carry folders")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ConfigError(f"chunk size {chunk_size} outside [{MIN_CHUNK}, {MAX_CHUNK}] bytes")
    listing = scan_folder(folder)
    if len(listing) > limits.max_files:
        raise InputError(f"'{folder}' holds {len(listing)} files (at most {limits.max_files})")
    total = sum(st.st_size for _, _, st in listing)
    if total > limits.max_bytes:
        raise InputError(f"'{folder}' holds {total} bytes (at most {limits.max_bytes})")
    files, chunks = [], []
    chunk = hashlib.sha256()
    in_chunk = offset = 0
    for rel, p, _ in listing:
        wire_path(rel, "file")  # a name the receiver would refuse is refused here already
        fh = hashlib.sha256()
        size = 0
        with open(p, "rb") as f:
            while True:
                block = f.read(min(1 << 20, chunk_size - in_chunk))
                if not block:
                    break
                fh.update(block)
                chunk.update(block)
                size += len(block)
                in_chunk += len(block)
                if in_chunk == chunk_size:
                    chunks.append(chunk.hexdigest())
                    chunk, in_chunk = hashlib.sha256(), 0
        files.append(FileEntry(rel, size, fh.hexdigest(), offset))
        offset += size
        if progress is not None:
            progress(offset, total)
    if in_chunk:
        chunks.append(chunk.hexdigest())
    return Manifest(chunk_size, tuple(files), tuple(chunks))
