"""A wrong mesh is refused, the right one accepted (issue 21, item 6), on the small synthetic
world the session fixture self-annotates (objects 1, 3, 4, 6; 30 frames over 120 deg).

The right meshes: the self-annotation's own registrations (report.json) are accepted, with their
fit evidence. The wrong ones: registered at a scene object (a prior point at its true centre)
on the same reconstruction, they must be refused with MESH_MISMATCH and a message that says
why. The pairs are the wrong fits closest to acceptance in bench/bench_registration_refusal.py
(one per criterion), so a weaker decision lets one of them through. ``nol-ros learn`` with a
mesh that is not in the scene exits with 2 and the code.

Bars are the defaults of RegistrationConfig; the measured values and margins are written next
to each assertion."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nol_ros.reconstruction.registration import (
    MeshMismatchError,
    ObjectRegistrar,
    RegistrationConfig,
)

pytestmark = pytest.mark.slow   # three registrations and one short learn run: ~30 s

CFG = RegistrationConfig()


def _alignment(ws, seq) -> np.ndarray:
    from nol_ros.metrics import ate_rmse

    traj = json.loads((ws / "trajectory.json").read_text())
    return ate_rmse([np.array(t["T_world_camera"]) for t in traj],
                    [f.T_world_camera for f in seq.frames])[1]


def test_the_right_meshes_are_accepted_with_room_to_spare(small_workspace):
    ws, report, seq, info = small_workspace
    for name, entry in report["objects"].items():
        assert "error" not in entry, entry.get("error")
        ev = entry["registration"]["evidence"]
        print(name, {k: round(v, 3) for k, v in ev.items()})
        # measured (bench, synthetic_a): seen_fit 0.98-1.00 (bar 0.9), free 0.000-0.002
        # (bar 0.05), beyond 0.003-0.026 (bar 0.1)
        assert ev["seen_fit"] >= CFG.min_seen_fit
        assert ev["free_fraction"] <= CFG.max_free_fraction
        assert ev["beyond_ratio"] <= CFG.max_beyond_ratio


@pytest.fixture(scope="module")
def registrar(small_workspace):
    """The registrar as the self-annotation builds it, from its workspace: the reconstruction
    (the fused mesh's vertices), the tracked camera poses and the depth images of the frames
    (measured_views); and each object's true centre in that world."""
    import open3d as o3d

    from nol_ros.selfannotate import measured_views

    ws, report, seq, info = small_workspace
    pts = np.asarray(o3d.io.read_triangle_mesh(str(ws / "scene_mesh.ply")).vertices)
    traj = json.loads((ws / "trajectory.json").read_text())
    poses = [np.array(t["T_world_camera"]) for t in traj]
    ok = [t["ok"] for t in traj]
    views = measured_views(seq, poses, ok, CFG)
    A_inv = np.linalg.inv(_alignment(ws, seq))
    centres = {o.obj_id: (A_inv @ o.T_world_object)[:3, 3] for o in seq.objects}
    return ObjectRegistrar(pts, np.array(poses)[ok], CFG, views), centres


# (scene object, wrong mesh, the figure that refuses it): wrong fits of the small world in
# bench/bench_registration_refusal.py, one per figure
WRONG = [(4, 9, "beyond_ratio"),    # the mug at the mustard bottle (score 0.49: accepted before
                                    # issue 21): the bottle goes on beside the mug's surface
         (3, 9, "seen_fit"),        # the mug on the tomato soup can: little of it measured on it
         (3, 1, "free_fraction")]   # the cracker box on the can: the cameras see through it


@pytest.mark.parametrize("obj_id,mesh_id,figure", WRONG)
def test_a_wrong_mesh_is_refused(registrar, small_world, obj_id, mesh_id, figure):
    from nol_ros.mesh import load_mesh

    reg, centres = registrar
    root, _ = small_world
    mesh = load_mesh(root / "models" / f"obj_{mesh_id:06d}.ply")
    with pytest.raises(MeshMismatchError) as e:
        reg.register(mesh.vertices, mesh.faces, prior_point=centres[obj_id],
                     prior_radius_m=0.1, name=f"obj_{mesh_id}")
    err = e.value
    assert err.code == "MESH_MISMATCH"
    msg = str(err)
    assert "does not match anything in the scene" in msg and "in metres" in msg
    ev = err.result.evidence.to_json()
    print(obj_id, mesh_id, {k: round(v, 3) for k, v in ev.items()})
    # measured (bench, synthetic_a): beyond_ratio 0.22 (bar 0.06), seen_fit 0.55 (bar 0.84),
    # free_fraction 0.67 (bar 0.08)
    if figure == "seen_fit":
        assert ev["seen_fit"] < CFG.min_seen_fit and "measured only" in msg
    elif figure == "free_fraction":
        assert ev["free_fraction"] > CFG.max_free_fraction and "saw through" in msg
    else:
        assert ev["beyond_ratio"] > CFG.max_beyond_ratio and "goes on beside" in msg


def _subset_scene(src: Path, dst: Path, n: int) -> None:
    """The first n frames of a BOP scene folder."""
    cams = json.loads((src / "scene_camera.json").read_text())
    keep = sorted(cams, key=int)[:n]
    dst.mkdir(parents=True)
    for f in ("scene_camera.json", "scene_gt.json", "scene_gt_info.json",
              "scene_stamps.json"):
        if (src / f).exists():
            d = json.loads((src / f).read_text())
            (dst / f).write_text(json.dumps({k: d[k] for k in keep if k in d}))
    for sub in ("rgb", "depth"):
        (dst / sub).mkdir()
        for k in keep:
            shutil.copy(src / sub / f"{int(k):06d}.png", dst / sub / f"{int(k):06d}.png")


def test_learn_with_a_mesh_not_in_the_scene_exits_2(small_world, tmp_path, capsys):
    from nol_ros.cli import main

    root, _ = small_world
    scene = tmp_path / "scene"
    _subset_scene(root / "train" / "000001", scene, 12)
    code = main(["learn", "bowl", "--mesh", str(root / "models" / "obj_000007.ply"),
                 "--dataset", str(scene), "--workspace", str(tmp_path / "ws"),
                 "--preset", "tiny", "--method", "ibr", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "[MESH_MISMATCH]" in err and "does not match anything in the scene" in err
    assert not (tmp_path / "ws" / "bowl").exists()   # nothing learnt
