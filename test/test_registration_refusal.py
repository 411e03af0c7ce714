"""A wrong mesh is refused, the right one accepted (issue 21, item 6), on the small synthetic
world the session fixture self-annotates (objects 1, 3, 4, 6; 30 frames over 120 deg).

The right meshes: the self-annotation's own registrations (report.json) are accepted, with their
fit evidence. The wrong ones: registered at a scene object (a prior point at its true centre)
on the same reconstruction, they must be refused with MESH_MISMATCH and a message that says
why, each by the figure that refuses it in bench/bench_registration_refusal.py (seen_fit,
free_fraction, beyond_ratio), so a decision without that figure lets it through. The fourth
figure, below_table_m (a taller mesh sunk into the table by the fit), refuses a pair only in the
bench's second synthetic world; here the right mesh's fit lowered by 8 mm is checked against it.
``nol-ros learn`` with a mesh that is not in the scene exits with 2 and the code.

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

pytestmark = pytest.mark.slow   # four registrations and a short learn run (with the
#                                 shared small_workspace fixture)

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
        # measured here (2026-12-03): seen_fit 0.984-0.993 (bar 0.78), free_fraction 0.000
        # (bar 0.06), beyond_ratio 0.000 (bar 0.04), below_table_m 0.0 mm (bar 3 mm)
        assert ev["seen_fit"] >= CFG.min_seen_fit
        assert ev["free_fraction"] <= CFG.max_free_fraction
        assert ev["beyond_ratio"] <= CFG.max_beyond_ratio
        assert ev["below_table_m"] <= CFG.max_below_table_m


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


# (wrong mesh, scene object, the figure that refuses it): wrong fits of the small world in
# bench/bench_registration_refusal.py, one per figure that refuses a wrong mesh there alone
WRONG = [(9, 4, "beyond_ratio"),    # the mug at the mustard bottle (score 0.49: accepted before
                                    # issue 21): the bottle goes on beside the mug's surface
         (9, 3, "seen_fit"),        # the mug on the tomato soup can: little of it measured on it
         (1, 3, "free_fraction")]   # the cracker box on the can: the cameras see through it


def _mesh(root: Path, mesh_id: int):
    from nol_ros.mesh import load_mesh

    m = load_mesh(root / "models" / f"obj_{mesh_id:06d}.ply")
    return m.vertices, m.faces


@pytest.mark.parametrize("mesh_id,obj_id,figure", WRONG)
def test_a_wrong_mesh_is_refused(registrar, small_world, mesh_id, obj_id, figure):
    reg, centres = registrar
    root, _ = small_world
    V, F = _mesh(root, mesh_id)
    with pytest.raises(MeshMismatchError) as e:
        reg.register(V, F, prior_point=centres[obj_id], prior_radius_m=0.1,
                     name=f"obj_{mesh_id}")
    err = e.value
    assert err.code == "MESH_MISMATCH"
    msg = str(err)
    assert "does not match anything in the scene" in msg and "in metres" in msg
    ev = err.result.evidence.to_json()
    print(obj_id, mesh_id, {k: round(v, 3) for k, v in ev.items()})
    # measured here (2026-12-03): mug at the bottle beyond_ratio 0.209 (bar 0.04); mug on the
    # can seen_fit 0.537 (bar 0.78); cracker box on the can free_fraction 0.663 (bar 0.06)
    if figure == "seen_fit":
        assert ev["seen_fit"] < CFG.min_seen_fit and "measured only" in msg
    elif figure == "free_fraction":
        assert ev["free_fraction"] > CFG.max_free_fraction and "saw through" in msg
    else:
        assert ev["beyond_ratio"] > CFG.max_beyond_ratio and "goes on beside" in msg


def test_the_right_mesh_is_accepted_and_sunk_into_the_table_it_is_not(registrar, small_world):
    """The control of the refusals above: the can's own mesh, at the same place, passes; the
    same fit 8 mm lower -- what a mesh taller than the object gets from the fit, its top on the
    object's (the striped cup's scene and the tomato soup can in the bench) -- goes into the
    table by that much, over the bar."""
    reg, centres = registrar
    root, _ = small_world
    V, F = _mesh(root, 3)
    res = reg.register(V, F, prior_point=centres[3], prior_radius_m=0.1, name="obj_3")
    assert np.linalg.norm(res.T_world_object[:3, 3] - centres[3]) < 0.01
    # measured here: 0.0 mm (bar 3 mm)
    assert res.evidence is not None and res.evidence.below_table_m <= CFG.max_below_table_m
    T = res.T_world_object.copy()
    T[:3, 3] -= 0.008 * reg.plane.normal
    low = reg.evidence(T, V, F)
    # 8 mm less the right fit's clearance above the table (0.0 mm here; bar 3 mm)
    assert low.below_table_m > CFG.max_below_table_m


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
