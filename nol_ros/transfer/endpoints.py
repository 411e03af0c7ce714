"""The two ends of a transfer, as plain Python (the ROS layer only carries their bytes).

:class:`Outbox` serves folders under its root: a manifest per folder (cached while the folder's
files keep their sizes and times) and chunks of the stream, each checked against the manifest
as it is read (a folder that changed since its manifest is refused, never sent half old, half
new).

:class:`Inbox` receives into its root. A transfer stages in ``ROOT/.nol_transfer/ID/``: the
manifest, ``data.bin`` (the stream, chunks written at their offsets as they arrive, in any
order) and ``have.log`` (the chunk numbers written). Reopening the same transfer -- after a
dropped link, a cancelled job or a restarted process -- keeps every logged chunk whose bytes
still match its checksum and asks only for the rest. When every chunk is in, the files are cut
out of the stream into ``tree/``, checked against their own checksums, and the tree takes the
destination's place in one step (an existing destination folder is exchanged atomically with
``renameat2(RENAME_EXCHANGE)`` where the kernel has it, else renamed aside first). Destinations
and sources are confined to the root (nol_ros.transfer.paths).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nol_ros.errors import ConfigError, InputError, NolError
from nol_ros.transfer import codec
from nol_ros.transfer.manifest import (
    MAX_CHUNK,
    MIN_CHUNK,
    Limits,
    Manifest,
    build_manifest,
    scan_folder,
)
from nol_ros.transfer.paths import STAGING, PathError, confined, local_path, wire_path


class UnknownTransferError(NolError):
    """The sender does not know the transfer id (it restarted): ask for the manifest again."""

    code = "UNKNOWN_TRANSFER"


class SourceChangedError(NolError):
    """The sent folder changed since its manifest: fetch again (a new transfer)."""

    code = "SOURCE_CHANGED"


@dataclass(frozen=True)
class TransferConfig:
    """Both ends of a transfer node (``transfer.*`` parameters).

    root: the folder this host sends from and receives into (nothing outside it is read or
    written). chunk_kib: chunk size of the manifests this host makes. compression_level: zlib
    level of chunk payloads (0 = off; images are sent raw anyway). window: chunk requests in
    flight. chunk_timeout_s: a chunk request unanswered this long is sent again (the link may be
    down). stall_timeout_s: with no chunk arriving for this long a fetch fails with
    PEER_UNREACHABLE; fetching again resumes it. manifest_timeout_s: the sender hashes the folder
    first. max_files / max_gib: what this host accepts."""

    root: str = "nol_workspace"
    chunk_kib: int = 512
    compression_level: int = 1
    window: int = 4
    chunk_timeout_s: float = 10.0
    stall_timeout_s: float = 300.0
    manifest_timeout_s: float = 120.0
    max_files: int = 200_000
    max_gib: float = 256.0

    def __post_init__(self):
        if not MIN_CHUNK <= self.chunk_kib * 1024 <= MAX_CHUNK:
            raise ConfigError(f"transfer.chunk_kib {self.chunk_kib}: use 1 .. "
                              f"{MAX_CHUNK // 1024}")
        if not 0 <= self.compression_level <= 9:
            raise ConfigError("transfer.compression_level must be 0 (off) .. 9")
        if self.window < 1 or min(self.chunk_timeout_s, self.stall_timeout_s,
                                  self.manifest_timeout_s) <= 0:
            raise ConfigError("transfer.window >= 1 and positive timeouts needed")
        if not self.root:
            raise ConfigError("transfer.root is empty; give the folder transfers use")

    @property
    def limits(self) -> Limits:
        return Limits(max_files=self.max_files, max_bytes=int(self.max_gib * 1024 ** 3))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _read_range(folder: Path, m: Manifest, start: int, end: int) -> bytes:
    out = []
    for f, lo, hi in m.files_in(start, end):
        with open(folder.joinpath(*PurePosixPath(f.path).parts), "rb") as fh:
            fh.seek(lo)
            out.append(fh.read(hi - lo))
    return b"".join(out)


class Outbox:
    """Folders under ``root`` offered to other hosts."""

    def __init__(self, root: str | os.PathLike, chunk_size: int = 512 * 1024,
                 compression_level: int = 1, limits: Limits = Limits(), keep: int = 16):
        self.root = Path(os.path.realpath(root))
        self.chunk_size, self.level, self.limits, self.keep = (chunk_size, compression_level,
                                                               limits, keep)
        self._by_path: OrderedDict[Path, tuple[tuple, Manifest]] = OrderedDict()
        self._by_id: OrderedDict[str, tuple[Path, Manifest]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: TransferConfig) -> Outbox:
        return cls(cfg.root, cfg.chunk_kib * 1024, cfg.compression_level, cfg.limits)

    def folder(self, path: str) -> Path:
        """The folder a request names: relative to the root, or absolute inside it."""
        p = local_path(self.root, path, "source folder") if path.startswith("/") else \
            confined(self.root, path, "source folder")
        if not p.is_dir():
            raise InputError(f"source folder '{path}' does not exist under {self.root} (or is "
                             "not a folder)")
        return p

    def manifest(self, path: str) -> Manifest:
        """The manifest of folder ``path`` (built, or cached while unchanged)."""
        folder = self.folder(path)
        sig = tuple((rel, st.st_size, st.st_mtime_ns) for rel, _, st in scan_folder(folder))
        with self._lock:
            hit = self._by_path.get(folder)
            if hit is not None and hit[0] == sig:
                self._by_id.move_to_end(hit[1].id)
                return hit[1]
        m = build_manifest(folder, self.chunk_size, self.limits)
        with self._lock:
            self._by_path[folder] = (sig, m)
            self._by_id[m.id] = (folder, m)
            for d in (self._by_path, self._by_id):
                while len(d) > self.keep:
                    d.popitem(last=False)
        return m

    def read_chunk(self, transfer_id: str, index: int) -> tuple[bytes, str]:
        """(payload, encoding) of chunk ``index`` of a transfer this outbox made a manifest
        for; checked against the manifest's checksum."""
        with self._lock:
            hit = self._by_id.get(transfer_id)
        if hit is None:
            raise UnknownTransferError(f"transfer {transfer_id} is unknown here (the sender "
                                       "restarted or forgot it); ask for the manifest again")
        folder, m = hit
        start, end = m.chunk_range(int(index))
        try:
            raw = _read_range(folder, m, start, end)
        except OSError as e:
            raise SourceChangedError(f"'{folder}' changed since its manifest ({e}); fetch "
                                     "again") from e
        if len(raw) != end - start or _sha(raw) != m.chunks[index]:
            raise SourceChangedError(f"'{folder}' changed since its manifest (chunk {index} "
                                     "differs); fetch again")
        return codec.encode(raw, self.level)


class Receipt:
    """One transfer being received (see the module docstring). Thread-safe."""

    def __init__(self, inbox: Inbox, manifest: Manifest, dest: Path, dest_rel: str):
        self.inbox, self.manifest, self.dest, self.dest_rel = inbox, manifest, dest, dest_rel
        self.staging = inbox.staging_root / manifest.id
        self._lock = threading.Lock()
        self.have: set[int] = set()
        self.resumed = 0
        self._open_staging()

    # -- staging -----------------------------------------------------------------------------
    def _open_staging(self) -> None:
        st = self.staging
        mpath = st / "manifest.bin"
        if st.is_dir() and mpath.is_file() and mpath.read_bytes() == self.manifest.canonical():
            data = st / "data.bin"
            logged = set()
            if (st / "have.log").is_file():
                for line in (st / "have.log").read_text().split():
                    if line.isdigit():
                        logged.add(int(line))
            if data.is_file() and data.stat().st_size == self.manifest.total_bytes:
                with open(data, "rb") as f:
                    for i in sorted(logged):
                        if i >= self.manifest.n_chunks:
                            continue
                        a, b = self.manifest.chunk_range(i)
                        f.seek(a)
                        if _sha(f.read(b - a)) == self.manifest.chunks[i]:
                            self.have.add(i)
            self.resumed = len(self.have)
        else:
            if st.exists():
                shutil.rmtree(st)
            st.mkdir(parents=True)
            (st / "manifest.bin").write_bytes(self.manifest.canonical())
        with open(st / "data.bin", "ab") as f:
            f.truncate(self.manifest.total_bytes)
        # a log of exactly what was verified (drops stale lines)
        (st / "have.log").write_text("".join(f"{i}\n" for i in sorted(self.have)))
        self._fd = os.open(st / "data.bin", os.O_RDWR)
        self._log = open(st / "have.log", "a")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._log.close()

    # -- receiving ---------------------------------------------------------------------------
    def missing(self) -> list[int]:
        with self._lock:
            return [i for i in range(self.manifest.n_chunks) if i not in self.have]

    @property
    def complete(self) -> bool:
        with self._lock:
            return len(self.have) == self.manifest.n_chunks

    @property
    def bytes_done(self) -> int:
        with self._lock:
            return sum(self.manifest.chunk_range(i)[1] - self.manifest.chunk_range(i)[0]
                       for i in self.have)

    def put(self, index: int, payload: bytes, encoding: str) -> bool:
        """Store chunk ``index`` (checked against the manifest); False when it was here
        already. ChunkError when the payload is not that chunk."""
        index = int(index)
        a, b = self.manifest.chunk_range(index)
        raw = codec.decode(payload, encoding, b - a)
        if _sha(raw) != self.manifest.chunks[index]:
            raise codec.ChunkError(f"chunk {index} of transfer {self.manifest.id} does not "
                                   "match its checksum (corrupted on the way); it is asked for "
                                   "again")
        with self._lock:
            if index in self.have:
                return False
            if self._fd is None:
                raise InputError(f"transfer {self.manifest.id} is closed")
            os.pwrite(self._fd, raw, a)
            self.have.add(index)
            self._log.write(f"{index}\n")
            self._log.flush()
        return True

    # -- assembling ---------------------------------------------------------------------------
    def assemble(self) -> Path:
        """Cut the files out of the complete stream, check them, and put the folder in place
        of the destination (see the module docstring). Returns the destination."""
        if not self.complete:
            raise InputError(f"transfer {self.manifest.id} is missing "
                             f"{len(self.missing())} of {self.manifest.n_chunks} chunks")
        self.close()
        tree = self.staging / "tree"
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir()
        with open(self.staging / "data.bin", "rb") as src:
            for f in self.manifest.files:
                p = tree.joinpath(*PurePosixPath(f.path).parts)
                p.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                src.seek(f.offset)
                left = f.size
                with open(p, "wb") as out:
                    while left:
                        block = src.read(min(left, 1 << 20))
                        h.update(block)
                        out.write(block)
                        left -= len(block)
                if h.hexdigest() != f.sha256:
                    raise InputError(f"file '{f.path}' of transfer {self.manifest.id} does not "
                                     "match its checksum; fetch it again")
        dest = confined(self.inbox.root, self.dest_rel, "destination")  # checked again now
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            raise PathError(f"destination '{self.dest_rel}' exists and is not a folder; "
                            "remove it or choose another destination")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            if not _exchange(tree, dest):
                old = self.staging / "old"
                dest.rename(old)
                tree.rename(dest)
        else:
            tree.rename(dest)
        shutil.rmtree(self.staging)   # the stream, the log and (after an exchange) the old tree
        return dest


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    return False


class Inbox:
    """Receives transfers into ``root``."""

    def __init__(self, root: str | os.PathLike, limits: Limits = Limits()):
        self.root = Path(os.path.realpath(root))
        self.limits = limits
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging_root = self.root / STAGING
        self._lock = threading.Lock()
        self._open: dict[str, Receipt] = {}

    @classmethod
    def from_config(cls, cfg: TransferConfig) -> Inbox:
        return cls(cfg.root, cfg.limits)

    def open(self, manifest: Manifest, dest: str) -> Receipt:
        """Start or resume receiving ``manifest`` into ``ROOT/dest`` (a relative path, or an
        absolute one inside the root)."""
        if dest.startswith("/"):
            d = local_path(self.root, dest, "destination")
            dest = d.relative_to(self.root).as_posix()
        wire_path(dest, "destination")
        d = confined(self.root, dest, "destination")
        if manifest.total_bytes > self.limits.max_bytes or \
                len(manifest.files) > self.limits.max_files:
            raise InputError(f"the transfer ({len(manifest.files)} files, "
                             f"{manifest.total_bytes} bytes) exceeds this host's limits")
        with self._lock:
            old = self._open.pop(manifest.id, None)
            if old is not None:
                old.close()
            r = Receipt(self, manifest, d, dest)
            self._open[manifest.id] = r
            return r

    def staged(self) -> list[str]:
        """Ids of transfers with a staging folder (interrupted or running)."""
        if not self.staging_root.is_dir():
            return []
        return sorted(p.name for p in self.staging_root.iterdir() if p.is_dir())

    def discard(self, transfer_id: str) -> None:
        with self._lock:
            r = self._open.pop(transfer_id, None)
        if r is not None:
            r.close()
        p = self.staging_root / transfer_id
        if p.is_dir() and p.parent == self.staging_root:
            shutil.rmtree(p)
