"""Chunk payloads on the wire: zlib-compressed when that saves at least 3 %, else raw (PNG and
JPEG images, the bulk of a learnt sequence, are compressed already). The receiver decompresses
at most the chunk's announced size (a payload that inflates beyond it is refused, so a hostile
peer cannot make it allocate without bound)."""

from __future__ import annotations

import zlib

from nol_ros.errors import InputError

RAW, ZLIB = "raw", "zlib"


class ChunkError(InputError):
    """A chunk payload is not what the manifest announces (size, checksum, encoding)."""

    code = "BAD_CHUNK"


def encode(raw: bytes, level: int) -> tuple[bytes, str]:
    """(payload, encoding) for a chunk; level 0 = never compress, 1-9 = zlib level."""
    if level <= 0 or not raw:
        return raw, RAW
    z = zlib.compress(raw, level)
    return (z, ZLIB) if len(z) < 0.97 * len(raw) else (raw, RAW)


def decode(payload: bytes, encoding: str, size: int) -> bytes:
    """The chunk's bytes; ChunkError when they cannot be exactly ``size`` bytes."""
    if encoding == RAW:
        raw = bytes(payload)
    elif encoding == ZLIB:
        d = zlib.decompressobj()
        try:
            raw = d.decompress(bytes(payload), size + 1)
        except zlib.error as e:
            raise ChunkError(f"chunk payload is not zlib data ({e})") from e
    else:
        raise ChunkError(f"chunk encoding '{encoding}' unknown (raw or zlib)")
    if len(raw) != size:
        raise ChunkError(f"chunk holds {len(raw)} bytes, the manifest says {size}")
    return raw
