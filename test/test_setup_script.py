"""tools/setup.sh refuses a disk without room for the packages before pip starts, naming the
numbers and the fix (the CI run of 2026-12-05 failed inside pip with "No space left on
device"). The room it asks for is raised past any disk's size with NOL_SETUP_NEED_MB, so
the refusal is reached on this machine's own disk, in a fresh venv under tmp_path."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_refuses_a_disk_without_room_before_installing(tmp_path):
    venv = tmp_path / "venv"
    env = {**os.environ, "NOL_VENV": str(venv), "NOL_SETUP_NEED_MB": str(1 << 40)}
    run = subprocess.run(["bash", str(ROOT / "tools" / "setup.sh")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "not enough disk space for the Python packages" in out, out
    assert "MB free on the file system of " + str(venv) in out and "VENV=" in out, out
    assert "FAILED at step: pip install requirements" in out, out
    # nothing was installed: the venv has its own pip and no stamp for the packages
    assert not (venv / ".nol_stamps" / "pip").exists()
    assert not list(venv.glob("lib/python3*/site-packages/torch"))
