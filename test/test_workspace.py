"""The workspace layout and its confinement: hostile names and paths are refused with one message
(whether outside or missing), ids are unique under concurrent learns (threads and processes),
and a failed re-learn leaves the learnt object as it was."""

import json
import os
import subprocess
import sys
import threading

import pytest

from nol_ros.errors import FileFormatError
from nol_ros.workspace import BadPathError, Workspace, confine, safe_name


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "/etc", ".hidden", "-rf",
                                  "a" * 65, "a..b", "sp ace", "x\x00y", "\u00e9t\u00e9"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(BadPathError, match="not allowed"):
        safe_name(name)


def test_safe_names_and_reserved_folders(tmp_path):
    assert safe_name("mustard_bottle.v2-1") == "mustard_bottle.v2-1"
    ws = Workspace(tmp_path)
    assert ws.learnt("mug").dir == tmp_path / "mug"
    for bad in ("_models", "_training", "..", "a/../../b"):
        with pytest.raises(BadPathError):
            ws.learnt(bad)


def test_paths_stay_inside_the_root_whatever_the_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (root / "in" / "f.ply").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.ply").write_text("x")
    os.symlink(outside, root / "link")                  # a symlink that leaves the root
    assert confine(root, "in/f.ply", must_exist=True) == (root / "in" / "f.ply").resolve()
    assert confine(root, str(root / "in" / "f.ply")) == (root / "in" / "f.ply").resolve()
    msgs = set()
    for p in ("../outside/secret.ply", str(outside / "secret.ply"), "link/secret.ply",
              "in/../../outside/secret.ply"):
        with pytest.raises(BadPathError) as e:
            confine(root, p, "mesh_path", must_exist=True)
        msgs.add(str(e.value).replace(p, "P"))
    with pytest.raises(BadPathError) as e:
        confine(root, "in/missing.ply", "mesh_path", must_exist=True)
    msgs.add(str(e.value).replace("in/missing.ply", "P"))
    # outside and missing read the same: a reply reveals nothing about the file system
    assert len(msgs) == 1, msgs


def test_ids_are_unique_when_learns_run_at_once(tmp_path):
    ws = Workspace(tmp_path)
    got = {}

    def take(name):
        got[name] = ws.object_id(name)

    threads = [threading.Thread(target=take, args=(f"obj{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got.values()) == list(range(1, 13))
    # two processes sharing the root
    code = ("import sys; from nol_ros.workspace import Workspace; w = Workspace(sys.argv[1]); "
            "print(','.join(str(w.object_id(f'{sys.argv[2]}{i}')) for i in range(15)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), p],
                              stdout=subprocess.PIPE, text=True) for p in ("a", "b")]
    ids = [int(x) for p in procs for x in p.communicate(timeout=120)[0].strip().split(",")]
    assert sorted(ids) == list(range(13, 43))
    assert len(json.loads((tmp_path / "object_ids.json").read_text())) == 42


def test_a_failed_relearn_keeps_the_learnt_object(tmp_path):
    from nol_ros.learn import SOURCE_DATASET, LearnConfig, learn_object

    ws = Workspace(tmp_path / "root")
    lo = ws.learnt("mug")
    lo.files.dir.mkdir(parents=True)
    lo.files.views_json.write_text('{"views": []}')
    lo.renders.mkdir()
    (lo.renders / "render_set.json").write_text("{}")
    mesh = tmp_path / "mug.ply"
    mesh.write_text("ply")   # exists; the source fails first
    before = sorted(str(p.relative_to(lo.dir)) for p in lo.dir.rglob("*"))
    with pytest.raises(FileFormatError, match="neither a BOP scene"):
        learn_object("mug", str(mesh), SOURCE_DATASET, str(tmp_path),
                     LearnConfig(workspace_root=str(ws.root)))
    assert sorted(str(p.relative_to(lo.dir)) for p in lo.dir.rglob("*")) == before
    assert sorted(p.name for p in ws.root.iterdir()) == [".nol_lock", "mug", "object_ids.json"]


# the names of the workspace layout (nol_ros/workspace.py's module doc)
LAYOUT_NAMES = ("views.json", "object.json", "frames.json", "mesh.ply", "views", "masks",
                "objects", "sequence", "renders", "renders.tmp", "report.json", "report.png",
                "trajectory.json", "scene_mesh.ply", "render_set.json", "render_report.json",
                "_models", "_training", "_live_buffer", "object_ids.json")


def _layout_paths_built_outside(root):
    """'file:line' of every `/ "NAME"` with a layout NAME in a module other than workspace.py."""
    import re

    pat = re.compile(r'/\s*"(' + "|".join(re.escape(n) for n in LAYOUT_NAMES) + r')"')
    out = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "workspace.py" and path.parent.name == "nol_ros":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pat.search(line):
                out.append(f"{path.relative_to(root.parent)}:{i}")
    return out


def test_only_the_workspace_module_builds_paths_of_the_layout():
    """One type owns the layout: no module but nol_ros/workspace.py joins a path with a name of
    it (use Workspace, LearntObject, AnnotationFiles, ObjectFiles)."""
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "nol_ros"
    bad = _layout_paths_built_outside(pkg)
    assert not bad, "layout paths built outside nol_ros/workspace.py:\n" + "\n".join(bad)


def test_the_layout_check_finds_a_path_built_by_hand(tmp_path):
    pkg = tmp_path / "nol_ros"
    pkg.mkdir()
    (pkg / "workspace.py").write_text('p = root / "views.json"\n')
    (pkg / "other.py").write_text('x = 1\np = d / "views.json"\nq = d / "views.jsonx"\n')
    assert _layout_paths_built_outside(pkg) == ["nol_ros/other.py:2"]
