"""Self-annotation on the small synthetic preset against its ground truth: camera trajectory,
object registration, masks, view coverage; plus bad input. Tolerances are the issue's targets;
a swapped T_a_b, a mm/m mix-up or a missing ICP each break them by far."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from nol_ros.geometry import rotation_error_deg
from nol_ros.metrics import ate_rmse, geometric_symmetries, rotation_error_sym_deg

pytestmark = pytest.mark.slow


def _alignment(ws, seq):
    traj = json.loads((ws / "trajectory.json").read_text())
    est = [np.array(t["T_world_camera"]) for t in traj]
    gt = [f.T_world_camera for f in seq.frames]
    return ate_rmse(est, gt), est


def test_camera_trajectory(small_workspace):
    ws, report, seq, _ = small_workspace
    (ate, _), est = _alignment(ws, seq)
    assert report["tracking"]["frames_failed"] == 0
    print(f"ATE {ate * 100:.3f} cm")
    assert ate <= 0.01, f"ATE {ate * 100:.2f} cm"
    # rotational drift over the sequence
    d_est = np.linalg.inv(est[0]) @ est[-1]
    d_gt = np.linalg.inv(seq.frames[0].T_world_camera) @ seq.frames[-1].T_world_camera
    assert rotation_error_deg(d_est, d_gt) <= 1.0


def test_object_registration(small_workspace):
    from nol_ros.mesh import load_mesh

    ws, report, seq, info = small_workspace
    (_, A), _ = _alignment(ws, seq)
    gt_info = json.loads((Path(seq.root) / "scene_gt_info.json").read_text())
    checked = 0
    for o in seq.objects:
        vis = [a for k in gt_info for a, g in zip(gt_info[k], _gt(seq, k)) if g == o.obj_id]
        if sum(v["visib_fract"] >= 0.3 for v in vis) < 20:
            continue
        entry = report["objects"][info[o.obj_id]["name"]]
        assert "error" not in entry, entry.get("error")
        T = A @ np.array(entry["registration"]["T_world_object"])
        assert np.linalg.norm(T[:3, 3] - o.T_world_object[:3, 3]) <= 0.01
        m = load_mesh(o.mesh_path)
        syms = geometric_symmetries(m.vertices, m.faces)
        r_err = rotation_error_sym_deg(T, o.T_world_object, syms)
        t_err = np.linalg.norm(T[:3, 3] - o.T_world_object[:3, 3])
        print(f"{info[o.obj_id]['name']}: t {t_err * 1000:.2f} mm, R {r_err:.2f} deg")
        # Measured (2026-12-03, one run's scene registered as is and with 5 um noise, 3 more
        # times): t 1.3-1.7 mm; R 0.07-0.38 deg, the cracker box 0.34 (30 frames of one side
        # of it). Before the resting pose was polished on the plane: the box 1.35-2.26 deg,
        # whichever of the hard-cutoff ICP's stops won (once 2.26 in make test)
        assert r_err <= 2.0
        checked += 1
    assert checked >= 3


def _gt(seq, k):
    gt = json.loads((Path(seq.root) / "scene_gt.json").read_text())
    return [a["obj_id"] for a in gt[k]]


def test_masks_match_ground_truth(small_workspace):
    from nol_ros.datasets.bop import read_masks

    ws, report, seq, info = small_workspace
    root = Path(seq.root)
    gt = json.loads((root / "scene_gt.json").read_text())
    gi = json.loads((root / "scene_gt_info.json").read_text())
    ious = []
    for fr in seq.frames[::3]:
        anns = gt[str(fr.index)]
        masks = read_masks(root, fr.index, len(anns))
        for a, g, m in zip(anns, gi[str(fr.index)], masks):
            if g["visib_fract"] < 0.5:
                continue
            p = ws / "objects" / info[a["obj_id"]]["name"] / "masks" / f"{fr.index:06d}.png"
            est = cv2.imread(str(p), 0) > 127 if p.exists() else np.zeros_like(m)
            ious.append((est & m).sum() / max(1, (est | m).sum()))
    assert len(ious) >= 20
    assert np.mean(ious) >= 0.85, f"mean IoU {np.mean(ious):.3f}"


def test_view_selection_coverage_and_crops(small_workspace):
    ws, report, seq, info = small_workspace
    for name, entry in report["objects"].items():
        sel = entry["selection"]
        assert sel["coverage"] >= 0.95 and 1 <= len(sel["frames"]) <= 16
        views = json.loads((ws / "objects" / name / "views.json").read_text())["views"]
        assert len(views) == len(sel["frames"])
        v = views[0]
        rgb = cv2.imread(str(ws / "objects" / name / "views" / f"{v['frame']:06d}_rgb.png"))
        mask = cv2.imread(str(ws / "objects" / name / "views" / f"{v['frame']:06d}_mask.png"), 0)
        assert rgb.shape == (256, 256, 3) and mask.shape == (256, 256) and (mask > 0).any()
        # how much of the object the (120 deg) sequence saw; the picks cannot see more
        assert 0.3 < sel["observed_fraction"] <= 1.0
        assert sel["coverage_of_object"] <= sel["observed_fraction"] + 1e-9
        assert ("INSUFFICIENT_COVERAGE" in entry.get("flags", [])) == (
            sel["observed_fraction"] < 0.8)
        # the crop intrinsics project the object's pose into the mask
        K = np.array(v["K_crop"])
        T = np.array(v["T_camera_object"])
        c = K @ T[:3, 3]
        u, w = int(round(c[0] / c[2])), int(round(c[1] / c[2]))
        ys, xs = np.nonzero(mask)
        assert xs.min() - 10 <= u <= xs.max() + 10 and ys.min() - 10 <= w <= ys.max() + 10
    assert (ws / "scene_mesh.ply").stat().st_size > 10000


def test_model_free_cut_out_against_the_true_models(small_workspace):
    """The "Recont" option on the small preset's reconstruction: each object cut out at its
    true position (mapped into the self-annotated world) is within a few mm of its true surface
    (mm/m or frame mix-ups would be off by decimetres)."""
    import open3d as o3d

    from nol_ros.mesh import load_mesh
    from nol_ros.reconstruction.model_free import cut_out_object, surface_errors_mm
    from nol_ros.reconstruction.registration import find_support_plane

    ws, report, seq, info = small_workspace
    (_, A), est = _alignment(ws, seq)
    pts = np.asarray(o3d.io.read_triangle_mesh(str(ws / "scene_mesh.ply")).vertices)
    plane = find_support_plane(pts, np.array(est))
    means = []
    for o in seq.objects:
        T = np.linalg.inv(A) @ o.T_world_object
        cm = cut_out_object(pts, plane, T[:3, 3])
        m = load_mesh(o.mesh_path)
        assert np.allclose(cm.T_world_object[:3, 2], plane.normal, atol=1e-6)  # z = up
        e = surface_errors_mm(cm.vertices @ cm.T_world_object[:3, :3].T
                              + cm.T_world_object[:3, 3], cm.faces,
                              m.vertices @ T[:3, :3].T + T[:3, 3], m.faces)
        assert e["mean_mm"] <= 12.0, (info[o.obj_id]["name"], e)
        means.append(e["mean_mm"])
    assert np.median(means) <= 8.0, means


def test_bad_inputs_are_reported(small_world, tmp_path):
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.errors import InputError
    from nol_ros.mesh import load_mesh, save_mesh
    from nol_ros.selfannotate import ObjectSpec, SelfAnnotationConfig, run_self_annotation

    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001", root / "models")
    short = type(seq)(seq.name, seq.intrinsics, seq.frames[:1], seq.objects, seq.root)
    with pytest.raises(InputError, match="1 frame"):
        run_self_annotation(short, [ObjectSpec("x", seq.objects[0].mesh_path)], tmp_path / "a")
    # intrinsics of another resolution, or a transposed K: refused before any tracking
    from nol_ros.camera import Intrinsics

    spec = [ObjectSpec("x", seq.objects[0].mesh_path)]
    small_k = Intrinsics(269.0, 269.0, 157.5, 116.5, 320, 240)
    with pytest.raises(InputError, match="intrinsics are for 320x240"):
        run_self_annotation(type(seq)(seq.name, small_k, seq.frames[:5], seq.objects, seq.root),
                            spec, tmp_path / "k1")
    transposed = Intrinsics.from_K(seq.intrinsics.K.T, 640, 480)
    with pytest.raises(InputError, match="principal point"):
        run_self_annotation(type(seq)(seq.name, transposed, seq.frames[:5], seq.objects,
                                      seq.root), spec, tmp_path / "k2")
    # a mesh in millimetres and an object that is not in the scene: reported per object
    m = load_mesh(seq.objects[0].mesh_path)
    m_mm = type(m)(m.vertices * 1000, m.faces)
    save_mesh(m_mm, tmp_path / "mm.ply")
    from nol_ros.datasets.synthetic.objects import make_object

    save_mesh(make_object(7, 0).untextured(), tmp_path / "bowl.ply")  # not on this table
    frames = seq.frames[:12]
    sub = type(seq)(seq.name, seq.intrinsics, frames, seq.objects, seq.root)
    # ... and a sequence too short to go around the object (12 frames, a 48 deg arc): the
    # model-free cracker box is cut out and gets views, but is flagged
    box = next(o for o in seq.objects if o.obj_id == 1)
    p_box = (np.linalg.inv(frames[0].T_world_camera) @ box.T_world_object)[:3, 3]
    rep = run_self_annotation(sub, [ObjectSpec("mm", str(tmp_path / "mm.ply")),
                                    ObjectSpec("bowl", str(tmp_path / "bowl.ply")),
                                    ObjectSpec("box", model_free=True,
                                               prior_point=tuple(p_box))],
                              tmp_path / "b", SelfAnnotationConfig())
    assert rep["objects"]["mm"]["error_code"] == "MESH_UNITS"
    assert "in mm it is" in rep["objects"]["mm"]["error"] and "scale by 0.001" in \
        rep["objects"]["mm"]["error"]
    # a mesh of an object that is not there: its best fit disagrees with the depth images
    assert rep["objects"]["bowl"]["error_code"] == "MESH_MISMATCH"
    assert "does not match anything in the scene" in rep["objects"]["bowl"]["error"]
    b = rep["objects"]["box"]
    assert "error" not in b and b["registration"]["model_free"]
    assert b["flags"] == ["INSUFFICIENT_COVERAGE"] and "goes around" in b["warning"]
    assert b["selection"]["observed_fraction"] < 0.8 and len(b["selection"]["frames"]) >= 1
    assert (tmp_path / "b" / "objects" / "box" / "mesh.ply").exists()
    # no depth at all
    import shutil

    bad = tmp_path / "nodepth"
    shutil.copytree(root / "train" / "000001", bad)
    for p in (bad / "depth").glob("*.png"):
        cv2.imwrite(str(p), np.zeros((480, 640), np.uint16))
    with pytest.raises(InputError, match="no valid depth"):
        run_self_annotation(read_bop_scene(bad), [ObjectSpec("x", seq.objects[0].mesh_path)],
                            tmp_path / "c")
    # depth in the wrong encoding (8-bit): refused, not read as 0-255 mm
    for p in (bad / "depth").glob("*.png"):
        cv2.imwrite(str(p), np.full((480, 640), 200, np.uint8))
    with pytest.raises(InputError, match="uint8, expected uint16"):
        run_self_annotation(read_bop_scene(bad), [ObjectSpec("x", seq.objects[0].mesh_path)],
                            tmp_path / "d")
