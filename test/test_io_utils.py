"""Atomic, verified writes: a full disk (here a file-size limit, RLIMIT_FSIZE, in a child
process: the same ENOSPC-like failure without needing root) or a writer that fails leaves the
previous file intact and no temporary file behind; files get the umask's mode, not 0600."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nol_ros.io_utils import (
    DiskWriteError,
    atomic_write_bytes,
    atomic_write_image,
    atomic_write_json,
    atomic_write_with,
)


def test_mode_follows_the_umask_and_nothing_is_left_behind(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]


def test_a_failing_or_unverified_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")

    def bad_writer(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise DiskWriteError("the writer failed")

    with pytest.raises(DiskWriteError, match="writer failed"):
        atomic_write_with(p, bad_writer)

    def reject(tmp):
        raise DiskWriteError("does not read back")

    with pytest.raises(DiskWriteError, match="read back"):
        atomic_write_with(p, lambda t: open(t, "wb").write(b"new"), verify=reject)
    with pytest.raises(DiskWriteError, match="empty"):
        atomic_write_with(p, lambda t: None)
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


def test_an_image_is_read_back(tmp_path):
    img = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    p = atomic_write_image(tmp_path / "i.png", img)
    import cv2

    assert np.array_equal(cv2.imread(str(p))[..., ::-1], img)


_CHILD = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from pathlib import Path
    from nol_ros.io_utils import DiskWriteError, atomic_write_bytes, atomic_write_mesh
    import open3d as o3d
    d = Path(sys.argv[1])
    atomic_write_bytes(d / "big.bin", b"old")
    m = o3d.geometry.TriangleMesh.create_sphere(0.1, 60)
    atomic_write_mesh(d / "mesh.ply", o3d.geometry.TriangleMesh.create_box())
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32768, 32768))   # the disk is full at 32 KiB
    codes = []
    for name, write in (("big.bin", lambda: atomic_write_bytes(d / "big.bin", bytes(200000))),
                        ("mesh.ply", lambda: atomic_write_mesh(d / "mesh.ply", m))):
        try:
            write()
            codes.append(name + ":written")
        except DiskWriteError as e:
            codes.append(name + ":" + e.code + ":" + str(e)[:60])
    print("|".join(codes))
""")


def test_a_full_disk_is_refused_with_a_clear_error_and_keeps_the_previous_files(tmp_path):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    big, mesh = out.stdout.strip().splitlines()[-1].split("|")
    assert big.startswith("big.bin:DISK_WRITE_FAILED:cannot write"), big
    # Open3D reports success on a truncated PLY; the read-back catches it
    assert mesh.startswith("mesh.ply:DISK_WRITE_FAILED"), mesh
    assert (tmp_path / "big.bin").read_bytes() == b"old"
    import open3d as o3d

    assert len(o3d.io.read_triangle_mesh(str(tmp_path / "mesh.ply")).triangles) == 12  # the box
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "mesh.ply"]
