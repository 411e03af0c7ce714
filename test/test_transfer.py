"""The transfer core (nol_ros.transfer), without ROS: a folder sent chunk by chunk in any order
arrives byte-identical; a receiver that stops (dropped link, restart) resumes with exactly the
chunks it lacks; corrupted, inflated or foreign chunks are refused; no path from the wire -- in a
request or a manifest -- reaches outside the receiver's root; the destination is replaced in one
step; a sender whose folder changed refuses to send a mixture."""

from __future__ import annotations

import json
import os
import random
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nol_ros.errors import ConfigError, FileFormatError, InputError
from nol_ros.transfer import (
    Inbox,
    Limits,
    Manifest,
    Outbox,
    PathError,
    SourceChangedError,
    TransferConfig,
    UnknownTransferError,
    confined,
    wire_path,
)
from nol_ros.transfer.codec import ChunkError
from nol_ros.transfer.paths import STAGING

CHUNK = 1024


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def tree_of(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file()}


def send_all(out: Outbox, rec, order_seed: int = 0, only=None) -> int:
    idx = rec.missing()
    random.Random(order_seed).shuffle(idx)
    n = 0
    for i in idx[:only]:
        n += rec.put(i, *out.read_chunk(rec.manifest.id, i))
    return n


@pytest.fixture
def pkg(tmp_path):
    rnd = random.Random(1)
    files = {"rgb/000000.png": bytes(rnd.getrandbits(8) for _ in range(3000)),
             "rgb/000001.png": bytes(rnd.getrandbits(8) for _ in range(1024)),
             "scene_camera.json": json.dumps({"0": {"cam_K": [1.0] * 9}}).encode() * 40,
             "empty.txt": b"", "deep/er/still/x.bin": b"\x00" * 5000}
    make_tree(tmp_path / "robot" / "pkg", files)
    return tmp_path, files


# -- round trip and resume ---------------------------------------------------------------------
def test_a_folder_arrives_byte_identical_whatever_the_chunk_order(pkg):
    tmp, files = pkg
    out = Outbox(tmp / "robot", CHUNK, compression_level=6)
    m = out.manifest("pkg")
    assert m.total_bytes == sum(map(len, files.values()))
    assert m.n_chunks == -(-m.total_bytes // CHUNK)
    rec = Inbox(tmp / "ws").open(Manifest.from_bytes(m.to_bytes()), "objects/mug")
    assert send_all(out, rec, 3) == m.n_chunks and rec.complete
    dest = rec.assemble()
    assert dest == (tmp / "ws" / "objects" / "mug").resolve()
    assert tree_of(dest) == files
    assert not (tmp / "ws" / STAGING / m.id).exists(), "staging removed after assembly"
    # compressible chunks travel compressed, random ones raw
    encs = {out.read_chunk(m.id, i)[1] for i in range(m.n_chunks)}
    assert encs == {"raw", "zlib"}


def test_an_interrupted_transfer_resumes_with_exactly_the_missing_chunks(pkg):
    tmp, files = pkg
    out = Outbox(tmp / "robot", CHUNK)
    m = out.manifest("pkg")
    rec = Inbox(tmp / "ws").open(m, "mug")
    send_all(out, rec, 5, only=6)
    have = set(range(m.n_chunks)) - set(rec.missing())
    rec.close()                                          # the link drops / the process ends
    rec2 = Inbox(tmp / "ws").open(m, "mug")              # a new process opens it again
    assert rec2.resumed == 6 and set(rec2.missing()) == set(range(m.n_chunks)) - have
    assert send_all(out, rec2) == m.n_chunks - 6
    assert tree_of(rec2.assemble()) == files


def test_a_staged_chunk_damaged_on_disk_is_fetched_again(pkg):
    tmp, files = pkg
    out = Outbox(tmp / "robot", CHUNK)
    m = out.manifest("pkg")
    rec = Inbox(tmp / "ws").open(m, "mug")
    send_all(out, rec, only=4)
    have = sorted(set(range(m.n_chunks)) - set(rec.missing()))
    rec.close()
    data = tmp / "ws" / STAGING / m.id / "data.bin"
    b = bytearray(data.read_bytes())
    b[have[1] * CHUNK + 7] ^= 0xFF
    data.write_bytes(bytes(b))
    rec2 = Inbox(tmp / "ws").open(m, "mug")
    assert rec2.resumed == 3 and have[1] in rec2.missing()
    send_all(out, rec2)
    assert tree_of(rec2.assemble()) == files


def test_duplicates_are_harmless_and_incomplete_transfers_do_not_assemble(pkg):
    tmp, _ = pkg
    out = Outbox(tmp / "robot", CHUNK)
    m = out.manifest("pkg")
    rec = Inbox(tmp / "ws").open(m, "mug")
    p = out.read_chunk(m.id, 0)
    assert rec.put(0, *p) is True and rec.put(0, *p) is False   # a retried request
    with pytest.raises(InputError, match="missing"):
        rec.assemble()
    assert not (tmp / "ws" / "mug").exists()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6),
       chunk=st.sampled_from([1024, 1500, 4096]), seed=st.integers(0, 10 ** 6))
def test_any_file_sizes_and_chunk_sizes_round_trip(tmp_path_factory, sizes, chunk, seed):
    tmp = tmp_path_factory.mktemp("prop")
    rnd = random.Random(seed)
    files = {f"d{i % 2}/f{i}.bin": bytes(rnd.getrandbits(8) for _ in range(n))
             for i, n in enumerate(sizes)}
    make_tree(tmp / "a" / "pkg", files)
    out = Outbox(tmp / "a", chunk)
    m = out.manifest("pkg")
    assert Manifest.from_bytes(m.to_bytes()) == m
    rec = Inbox(tmp / "b").open(m, "x")
    send_all(out, rec, seed)
    assert tree_of(rec.assemble()) == files


# -- bad chunks -----------------------------------------------------------------------------------
def test_corrupted_inflated_and_unknown_chunks_are_refused(pkg):
    tmp, _ = pkg
    out = Outbox(tmp / "robot", CHUNK)
    m = out.manifest("pkg")
    rec = Inbox(tmp / "ws").open(m, "mug")
    payload, enc = out.read_chunk(m.id, 0)
    raw = payload if enc == "raw" else zlib.decompress(payload)
    bad = bytes([raw[0] ^ 1]) + raw[1:]
    with pytest.raises(ChunkError, match="does not match its checksum"):
        rec.put(0, bad, "raw")
    with pytest.raises(ChunkError, match="holds"):
        rec.put(0, zlib.compress(b"\0" * (50 * CHUNK)), "zlib")   # a zlib bomb: bounded
    with pytest.raises(ChunkError, match="encoding 'lz9' unknown"):
        rec.put(0, raw, "lz9")
    with pytest.raises(InputError, match="chunk 99 does not exist"):
        rec.put(99, raw, "raw")
    assert 0 in rec.missing()
    with pytest.raises(UnknownTransferError, match="ask for the manifest again"):
        out.read_chunk("0" * 32, 0)


def test_a_sender_whose_folder_changed_refuses_to_send_a_mixture(pkg):
    tmp, _ = pkg
    out = Outbox(tmp / "robot", CHUNK)
    m = out.manifest("pkg")
    (tmp / "robot" / "pkg" / "rgb" / "000000.png").write_bytes(b"new content" * 300)
    with pytest.raises(SourceChangedError, match="fetch again"):
        for i in range(m.n_chunks):
            out.read_chunk(m.id, i)
    m2 = out.manifest("pkg")                       # the new content is a new transfer
    assert m2.id != m.id and out.manifest("pkg").id == m2.id


# -- paths from the wire ------------------------------------------------------------------------
BAD = ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\\b", "a\x00b",
       "a\nb", f"{STAGING}/x", "..", "a/" + "b" * 5000]


@pytest.mark.parametrize("rel", BAD)
def test_wire_paths_that_could_escape_are_refused(rel):
    with pytest.raises(PathError):
        wire_path(rel)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\\x00 ")), max_size=12))
def test_a_wire_path_accepted_always_stays_inside_the_root(rel):
    root = Path("/tmp/nol_transfer_prop_root")
    try:
        p = confined(root, rel)
    except PathError:
        return
    real_root = Path(os.path.realpath(root))
    assert real_root in p.parents and ".." not in p.parts


def test_destinations_outside_the_root_are_refused(pkg, tmp_path):
    tmp, _ = pkg
    out = Outbox(tmp / "robot", CHUNK)
    m = out.manifest("pkg")
    inbox = Inbox(tmp / "ws")
    for dest in ("../escape", "/etc", str(tmp / "elsewhere"), f"{STAGING}/x", ""):
        with pytest.raises(PathError):
            inbox.open(m, dest)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp / "ws" / "link").symlink_to(outside)        # a symlink inside the root, pointing out
    with pytest.raises(PathError, match="outside the transfer root"):
        inbox.open(m, "link/mug")
    # an absolute destination inside the root is fine
    rec = inbox.open(m, str(tmp / "ws" / "abs" / "mug"))
    send_all(out, rec)
    assert rec.assemble() == (tmp / "ws" / "abs" / "mug").resolve()
    assert list(outside.iterdir()) == []


def test_manifests_naming_paths_outside_are_refused_before_anything_is_written(tmp_path):
    good = {"version": 1, "chunk_size": 1024, "files": [["a.txt", 3, "0" * 64]],
            "chunks": ["0" * 64]}

    def with_files(files, chunks=None):
        d = dict(good, files=files)
        d["chunks"] = chunks if chunks is not None else ["0" * 64] * -(
            -sum(f[1] for f in files) // 1024)
        return zlib.compress(json.dumps(d).encode())

    h = "0" * 64
    cases = {
        "traversal": with_files([["../../etc/x", 3, h]]),
        "absolute": with_files([["/etc/x", 3, h]]),
        "staging": with_files([[f"{STAGING}/x", 3, h]]),
        "twice": with_files([["a", 3, h], ["a", 3, h]]),
        "file under file": with_files([["a", 3, h], ["a/b", 3, h]]),
        "unsorted": with_files([["b", 3, h], ["a", 3, h]]),
        "chunk count": with_files([["a", 3, h]], chunks=[]),
        "negative size": with_files([["a", -3, h]], chunks=[]),
        "bad hash": with_files([["a", 3, "xyz"]]),
    }
    for what, blob in cases.items():
        with pytest.raises((PathError, FileFormatError)):
            Manifest.from_bytes(blob)
        assert what
    with pytest.raises(FileFormatError, match="version"):
        Manifest.from_bytes(zlib.compress(json.dumps(dict(good, version=7)).encode()))
    with pytest.raises(FileFormatError, match="not zlib"):
        Manifest.from_bytes(b"plain text")
    with pytest.raises(FileFormatError, match="larger than"):
        Manifest.from_bytes(zlib.compress(b" " * 5000), Limits(max_manifest_bytes=100))
    with pytest.raises(InputError, match="accepts 1"):
        Manifest.from_bytes(with_files([["a", 3, h], ["b", 3, h]]), Limits(max_files=1))
    assert Manifest.from_bytes(zlib.compress(json.dumps(good).encode())).n_chunks == 1


def test_sources_outside_the_root_links_and_files_are_refused(pkg, tmp_path):
    tmp, _ = pkg
    out = Outbox(tmp / "robot", CHUNK)
    for path in ("../ws", "/etc", "pkg/rgb/000000.png", "nope"):
        with pytest.raises(InputError):
            out.manifest(path)
    secret = tmp_path / "secret.txt"
    secret.write_text("keys")
    (tmp / "robot" / "pkg" / "leak").symlink_to(secret)
    with pytest.raises(InputError, match="regular file"):
        out.manifest("pkg")


# -- the destination is replaced in one step --------------------------------------------------
def test_an_existing_destination_is_replaced_whole(pkg):
    tmp, files = pkg
    old = make_tree(tmp / "ws" / "mug", {"stale.txt": b"old", "rgb/000000.png": b"old"})
    out = Outbox(tmp / "robot", CHUNK)
    m = out.manifest("pkg")
    rec = Inbox(tmp / "ws").open(m, "mug")
    send_all(out, rec)
    assert tree_of(old) == {"stale.txt": b"old", "rgb/000000.png": b"old"}   # untouched so far
    assert tree_of(rec.assemble()) == files                                   # no stale file
    (tmp / "ws" / "afile").write_text("x")
    rec = Inbox(tmp / "ws").open(m, "afile")
    send_all(out, rec)
    with pytest.raises(PathError, match="not a folder"):
        rec.assemble()


def test_config_is_checked():
    with pytest.raises(ConfigError, match="chunk_kib"):
        TransferConfig(chunk_kib=0)
    with pytest.raises(ConfigError, match="compression_level"):
        TransferConfig(compression_level=12)
    with pytest.raises(ConfigError, match="window"):
        TransferConfig(window=0)
    assert TransferConfig().limits.max_files == 200_000
