"""Sharded hemisphere rendering (nol_ros.recognition.render_shards): a learnt object's training
set rendered by two torchrun ranks, and in three parts on "hosts" without a shared file system
(refine once, render parts from the refined poses, merge), is the single worker's set: the same
files byte for byte, the same annotations; only wall-clock fields differ. Bad parts are refused
with a message naming what is wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nol_ros.errors import InputError
from nol_ros.learn import RenderStageConfig, render_training_set
from nol_ros.recognition import render_shards

OBJ = "mustard_bottle"
WORKER = Path(__file__).with_name("_shard_worker.py")
# the shipped NOL model with the one-off source refinement (the path LearnObject renders with);
# batches of 4 views: the tiny grid's 18 views are 5 batches, dealt out 3 + 2 (or 2 + 2 + 1)
CFG = RenderStageConfig(method="nol", preset="tiny", batch=4)
TIMING = ("seconds", "cpu_seconds", "seconds_per_image", "workers")


def _copy_object(small_workspace, dst: Path) -> Path:
    ws = small_workspace[0]
    shutil.copytree(ws / "objects" / OBJ, dst / OBJ / "objects" / OBJ)
    return dst / OBJ


def _drop(d, keys=TIMING):
    if isinstance(d, dict):
        return {k: _drop(v, keys) for k, v in d.items() if k not in keys}
    return d


def assert_same_set(a: Path, b: Path) -> int:
    """Every file of render set a is in b with the same bytes (JSON reports: the same content
    but for wall-clock fields) and b has no other file. Returns the number of files."""
    fa = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert fa == fb
    for rel in fa:
        if rel in ("render_set.json", "render_report.json"):
            ja, jb = (json.loads((d / rel).read_text()) for d in (a, b))
            assert _drop(ja) == _drop(jb), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    return len(fa)


@pytest.fixture(scope="module")
def single(small_workspace, tmp_path_factory):
    """The reference: one worker renders the set (this process, one thread)."""
    ws = _copy_object(small_workspace, tmp_path_factory.mktemp("single"))
    rep = render_training_set(ws, OBJ, 4, CFG, "cpu")
    assert rep["images"] == 54 and "workers" not in rep
    return ws / "renders"


@pytest.mark.slow
def test_two_torchrun_ranks_render_the_single_workers_set(single, small_workspace, tmp_path):
    ws = _copy_object(small_workspace, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", str(WORKER), str(ws), OBJ, "4", CFG.method,
                        CFG.preset, str(CFG.batch)], env=env, capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    outs = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert outs == [{"workers": 2, "images": 54}] * 2, p.stdout
    n = assert_same_set(single, ws / "renders")
    assert n == 2 + 3 + 54 * 4     # reports, 3 annotation files, rgb/depth/mask/mask_visib
    assert not (ws / "renders.tmp").exists()


@pytest.mark.slow
def test_parts_rendered_apart_and_merged_are_the_single_workers_set(single, small_workspace,
                                                                   tmp_path):
    """The several-hosts path through the command line: refine once, three parts from the
    refined poses (each could run on its own host), one merge."""
    root = tmp_path / "root"
    _copy_object(small_workspace, root)
    (root / "object_ids.json").write_text(json.dumps({OBJ: 4}))
    common = ["--preset", CFG.preset, "--method", CFG.method, "--batch", str(CFG.batch)]
    poses = tmp_path / "poses.json"
    assert render_shards.main(["refine", str(root), OBJ, *common, "--out", str(poses)]) == 0
    parts = [tmp_path / f"part{k}" for k in range(3)]
    for k in (2, 0, 1):
        assert render_shards.main(["part", str(root), OBJ, *common, "--shard", f"{k}/3",
                                   "--poses", str(poses), "--out", str(parts[k])]) == 0
    counts = [json.loads((p / "render_set.json").read_text())["objects"]["4"]["images"]
              for p in parts]
    # 18 views x 3 in-plane angles; batches of views 0-3, 4-7, 8-11, 12-15, 16-17 go to parts
    # 0, 1, 2, 0, 1
    assert counts == [(4 + 4) * 3, (4 + 2) * 3, 4 * 3]
    # bad merges first (they must not move anything): a part missing, a part twice
    with pytest.raises(InputError, match="not the shards 0..2 of 3"):
        render_shards.merge_parts(parts[:2], tmp_path / "bad")
    with pytest.raises(InputError, match="not the shards"):
        render_shards.merge_parts([parts[0], parts[0], parts[1]], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    out = root / OBJ / "renders"
    assert render_shards.main(["merge", "--out", str(out), *map(str, parts)]) == 0
    json_a = json.loads((single / "render_set.json").read_text())
    json_b = json.loads((out / "render_set.json").read_text())
    assert _drop(json_a) == _drop(json_b)
    for rel in [p.relative_to(single) for p in (single / "000004").rglob("*") if p.is_file()]:
        assert (single / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_a_shard_outside_its_count_is_refused():
    from nol_ros.datasets.synthetic.objects import make_object
    from nol_ros.recognition.poses import PoseGridConfig
    from nol_ros.recognition.renderers import TexturedMeshRenderer
    from nol_ros.recognition.trainset import write_render_set

    m = make_object(1, 0)
    with pytest.raises(InputError, match="shard 2 of 2"):
        write_render_set(TexturedMeshRenderer(m), m, 1, "/nonexistent", PoseGridConfig(),
                         shard=(2, 2))


def test_parts_of_different_sets_are_not_merged(tmp_path):
    from nol_ros.datasets.synthetic.objects import make_object
    from nol_ros.recognition.poses import PoseGridConfig
    from nol_ros.recognition.renderers import TexturedMeshRenderer
    from nol_ros.recognition.trainset import write_render_set

    m = make_object(1, 0)
    g = PoseGridConfig(az_step_deg=90, el_step_deg=45, el_max_deg=45, inplane_step_deg=180,
                       crop_size=32)
    write_render_set(TexturedMeshRenderer(m), m, 1, tmp_path / "a", g, source="gt",
                     batch=2, shard=(0, 2))
    write_render_set(TexturedMeshRenderer(m), m, 1, tmp_path / "b", g, source="other",
                     batch=2, shard=(1, 2))
    with pytest.raises(Exception, match="not a part of the same set"):
        render_shards.merge_parts([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
