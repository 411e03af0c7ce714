"""`nol-ros learn | render | train-detector | train-pose | evaluate` on the small synthetic
preset, in process (the same main() the console script runs), plus the console script itself
once; every command also with bad arguments (exit code 2 and a message naming the problem)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nol_ros.cli import main

pytestmark = pytest.mark.slow


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def learnt(small_world, tmp_path_factory):
    """One object learnt from the small preset's training scene with the tiny render grid."""
    root, summary = small_world
    ws = tmp_path_factory.mktemp("cli_ws")
    models = json.loads((root / "models" / "models_info.json").read_text())
    oid = sorted(int(k) for k in summary["objects"])[0]
    name = models[str(oid)]["name"]
    code = main(["learn", name, "--mesh", str(root / "models" / f"obj_{oid:06d}.ply"),
                 "--dataset", str(root / "train" / "000001"), "--workspace", str(ws),
                 "--preset", "tiny", "--method", "ibr", "--quiet"])
    assert code == 0
    return root, ws, name, oid


def test_learn_writes_views_and_renders(learnt):
    root, ws, name, _ = learnt
    odir = ws / name / "objects" / name
    views = json.loads((odir / "views.json").read_text())
    assert 1 <= len(views["views"]) <= 16 and views["coverage"] > 0.9
    rs = json.loads((ws / name / "renders" / "render_set.json").read_text())
    assert rs["source"].startswith("ibr")
    (entry,) = rs["objects"].values()
    assert entry["images"] == 54


def test_render_again_and_bad_names(learnt, capsys):
    root, ws, name, _ = learnt
    code, out, _ = _run(capsys, "render", name, "--workspace", str(ws), "--preset", "tiny",
                        "--method", "ibr_mean", "--quiet")
    assert code == 0 and json.loads(out)["renders"].endswith("renders")
    code, _, err = _run(capsys, "render", "no_such_object", "--workspace", str(ws), "--quiet")
    assert code == 2 and "no_such_object" in err and "learn it first" in err


def test_train_both_stages_then_evaluate(learnt, capsys, tmp_path):
    root, ws, name, oid = learnt
    # the models folder lies in the workspace root (relative to it); outside it is refused
    code, _, err = _run(capsys, "train-detector", "--workspace", str(ws), "--preset", "tiny",
                        "--models", str(tmp_path / "models"), "--quiet")
    assert code == 2 and "is not under" in err
    models = ws / "cli_models"
    code, out, _ = _run(capsys, "train-detector", "--workspace", str(ws), "--preset", "tiny",
                        "--models", "cli_models", "--quiet")
    assert code == 0 and json.loads(out)["models_dir"] in ("", None)  # pose not trained yet
    assert not (models / "recognition.json").exists()
    code, out, _ = _run(capsys, "train-pose", "--workspace", str(ws), "--preset", "tiny",
                        "--models", "cli_models", "--quiet")
    assert code == 0 and (models / "recognition.json").exists()
    code, out, _ = _run(capsys, "evaluate", "--models", str(models), "--scene",
                        str(root / "test" / "000001"), "--bop-models", str(root / "models"),
                        "--csv", str(tmp_path / "r.csv"), "--quiet")
    assert code == 0
    res = json.loads(out)
    assert res["images"] == 8 and 0.0 <= res["map50"] <= 1.0
    assert name in res["per_object"], "the learnt object must be scored under its BOP id"
    assert (tmp_path / "r.csv").read_text().startswith("scene_id,im_id,obj_id")
    # scored in the frame the object was learnt in (measured on its training sequence)
    code, out, _ = _run(capsys, "evaluate", "--models", str(models), "--scene",
                        str(root / "test" / "000001"), "--bop-models", str(root / "models"),
                        "--learnt-frames", f"{ws}:{root / 'train' / '000001'}",
                        "--max-images", "2", "--quiet")
    assert code == 0
    po = json.loads(out)["per_object"][name]
    assert 0.0 <= po["learnt_frame_deg"] <= 180.0 and 0.0 <= po["add_icp_model_frame"] <= 1.0
    pe = po["pose_errors"]                       # None when the tiny models posed nothing
    assert pe is None or (1 <= pe["n"] <= 2 and 0.0 <= pe["median_turn_deg"] <= 180.0
                          and 0.0 <= pe["turned_share"] <= 1.0 and pe["median_t_mm"] >= 0.0)
    code, _, err = _run(capsys, "evaluate", "--models", str(models), "--scene",
                        str(root / "test" / "000001"), "--bop-models", str(root / "models"),
                        "--learnt-frames", str(ws), "--quiet")
    assert code == 2 and "WORKSPACE_ROOT:TRAIN_SCENE" in err
    # unknown objects and a folder that is no models folder
    code, _, err = _run(capsys, "train-pose", "--workspace", str(ws), "--objects", "ghost",
                        "--quiet")
    assert code == 2 and "ghost" in err
    code, _, err = _run(capsys, "evaluate", "--models", str(ws), "--scene",
                        str(root / "test" / "000001"), "--bop-models", str(root / "models"))
    assert code == 2 and "recognition.json" in err


def test_learn_bad_arguments(small_world, capsys, tmp_path):
    root, _ = small_world
    mesh = str(root / "models" / "obj_000001.ply")
    code, _, err = _run(capsys, "learn", "x", "--mesh", mesh, "--workspace", str(tmp_path))
    assert code == 2 and "--bag" in err and "--dataset" in err
    code, _, err = _run(capsys, "learn", "x", "--mesh", str(tmp_path / "none.ply"),
                        "--dataset", str(root / "train" / "000001"), "--workspace",
                        str(tmp_path))
    assert code == 2 and "none.ply" in err
    code, _, err = _run(capsys, "learn", "x", "--mesh", mesh, "--dataset", str(tmp_path),
                        "--workspace", str(tmp_path))
    assert code == 2 and "BOP scene" in err
    code, _, err = _run(capsys, "learn", "x", "--mesh", mesh, "--bag", str(tmp_path / "nobag"),
                        "--workspace", str(tmp_path))
    assert code == 2 and "nobag" in err
    code, _, err = _run(capsys, "learn", "--preset", "huge")
    assert code == 2


def test_console_script_help_lists_every_command():
    exe = Path(sys.executable).with_name("nol-ros")
    p = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    for cmd in ("learn", "render", "train-detector", "train-pose", "evaluate", "bringup",
                "replay", "record"):
        assert cmd in p.stdout
    p = subprocess.run([str(exe), "learn", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "examples:" in p.stdout and "nol-ros learn" in p.stdout
