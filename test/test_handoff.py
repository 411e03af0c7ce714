"""The robot's package of a learnt object (nol_ros.handoff) and LearnObject's SOURCE_WORKSPACE
(learn.adopt_workspace): the package holds what the workstation's stages read -- the object's
folder, the keyframes as a BOP scene, the report -- and is a workspace those stages accept."""

from __future__ import annotations

import json

import pytest

from nol_ros.errors import FileFormatError, InputError
from nol_ros.handoff import check_package, pack_learnt_object
from nol_ros.learn import LearnConfig, adopt_workspace

OBJ = "mustard_bottle"


@pytest.fixture(scope="module")
def pkg(small_world, small_workspace, tmp_path_factory):
    seq = small_world[0] / "train" / "000001"
    out = tmp_path_factory.mktemp("handoff") / "packages" / OBJ
    return pack_learnt_object(small_workspace[0], OBJ, seq, out, keyframe_step=4), seq


def test_the_package_holds_the_object_and_its_keyframes(pkg, small_workspace):
    out, seq = pkg
    ws = small_workspace[0]
    meta = json.loads((out / "package.json").read_text())
    views = [v["frame"] for v in json.loads(
        (ws / "objects" / OBJ / "views.json").read_text())["views"]]
    n = len(json.loads((seq / "scene_camera.json").read_text()))
    keys = sorted(set(views) | set(range(0, n, 4)))
    assert meta["keyframes"] == keys and meta["frames_in_sequence"] == n
    cams = json.loads((out / "sequence" / "scene_camera.json").read_text())
    assert sorted(map(int, cams)) == keys
    for k in keys:   # the frames as recorded, byte for byte
        for sub in ("rgb", "depth"):
            assert (out / "sequence" / sub / f"{k:06d}.png").read_bytes() == \
                (seq / sub / f"{k:06d}.png").read_bytes()
    masks = sorted(p.name for p in (out / "objects" / OBJ / "masks").iterdir())
    assert masks == sorted(p.name for p in (ws / "objects" / OBJ / "masks").iterdir()
                           if int(p.stem) in keys)
    for f in ("mesh.ply", "views.json", "object.json"):
        assert (out / "objects" / OBJ / f).read_bytes() == (ws / "objects" / OBJ / f).read_bytes()
    assert check_package(out, OBJ) == out


def test_the_package_is_a_workspace_the_workstation_stages_read(pkg, tmp_path):
    from nol_ros.nol.renderer import load_sources
    from nol_ros.recognition.scenes import SceneBackgrounds

    out, _ = pkg
    cfg = LearnConfig(workspace_root=str(tmp_path / "root"))
    ws = adopt_workspace(OBJ, str(out), cfg)               # copied in (a shared file system)
    assert ws == str(tmp_path / "root" / OBJ)
    mesh, sources, _ = load_sources(tmp_path / "root" / OBJ / "objects" / OBJ)
    assert len(sources) >= 3 and len(mesh.faces) > 0
    bg = SceneBackgrounds.from_workspaces([tmp_path / "root" / OBJ], width=160)
    assert len(bg.images) >= 2
    (tmp_path / "root" / OBJ / "renders").mkdir()
    assert adopt_workspace(OBJ, "", cfg) == ws              # in place (a transfer put it there)
    assert not (tmp_path / "root" / OBJ / "renders").exists(), "old renders removed"


def test_bad_packages_are_refused_with_what_is_missing(pkg, small_workspace, tmp_path):
    out, seq = pkg
    with pytest.raises(FileFormatError, match="objects/mug/views.json"):
        check_package(out, "mug")
    with pytest.raises(FileFormatError, match="is not a learnt object"):
        adopt_workspace(OBJ, str(tmp_path), LearnConfig(workspace_root=str(tmp_path / "r")))
    with pytest.raises(InputError, match="is not allowed"):     # BAD_PATH (workspace.safe_name)
        adopt_workspace("a/b", "", LearnConfig(workspace_root=str(tmp_path)))
    with pytest.raises(FileFormatError, match="holds no selected views"):
        pack_learnt_object(small_workspace[0], "no_such_object", seq, tmp_path / "p")
    with pytest.raises(FileFormatError, match="not a BOP scene"):
        pack_learnt_object(small_workspace[0], OBJ, tmp_path, tmp_path / "p")
    with pytest.raises(InputError, match="keyframe_step"):
        pack_learnt_object(small_workspace[0], OBJ, seq, tmp_path / "p", keyframe_step=0)
    assert not (tmp_path / "p").exists()
