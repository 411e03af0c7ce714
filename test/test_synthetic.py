"""The synthetic world: determinism, ground-truth consistency, sensor artefacts, trajectories,
textures with detail, symmetric objects."""

import hashlib
import json

import cv2
import numpy as np
import pytest

from nol_ros.datasets.bop import read_bop_scene, read_masks, read_models_info
from nol_ros.datasets.synthetic.objects import CATALOGUE, make_object
from nol_ros.datasets.synthetic.world import build_world, circle_trajectory, elevation_deg


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_gt_poses_project_into_the_visible_masks(small_world):
    root, summary = small_world
    seq = read_bop_scene(root / "train" / "000001", root / "models")
    assert len(seq.frames) == summary["sequences"]["train/000001"]["frames"] == 30
    gt = json.loads((root / "train" / "000001" / "scene_gt.json").read_text())
    from nol_ros.mesh import load_mesh

    meshes = {o.obj_id: load_mesh(o.mesh_path) for o in seq.objects}
    checked = 0
    for fr in seq.frames[::6]:
        anns = gt[str(fr.index)]
        masks = read_masks(root / "train" / "000001", fr.index, len(anns))
        depth = fr.load_depth()
        for a, m in zip(anns, masks):
            if m.sum() < 500:
                continue
            T = seq.T_camera_object(fr.index, a["obj_id"])
            V = meshes[a["obj_id"]].vertices @ T[:3, :3].T + T[:3, 3]
            uv, z = seq.intrinsics.project(V)
            u, v = np.round(uv).astype(int).T
            ok = (u >= 0) & (u < 640) & (v >= 0) & (v < 480)
            # vertices that are the front-most surface at their pixel must be in the mask
            d = depth[v[ok], u[ok]]
            front = (d > 0) & (np.abs(d - z[ok]) < 0.01)
            # vertices lie on silhouette edges: allow the 1-pixel rounding of their projection
            md = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            inside = md[v[ok], u[ok]][front]
            assert front.sum() > 20 and inside.mean() > 0.97
            checked += 1
    assert checked >= 5


def test_gt_info_and_depth_consistency(small_world):
    root, _ = small_world
    d = root / "train" / "000001"
    info = json.loads((d / "scene_gt_info.json").read_text())
    for k, anns in info.items():
        masks = read_masks(d, int(k), len(anns), visib=True)
        for a, m in zip(anns, masks):
            assert 0.0 <= a["visib_fract"] <= 1.0
            assert a["px_count_visib"] == int(m.sum())
            assert a["px_count_visib"] <= a["px_count_all"]


def test_sensor_artefacts(small_world):
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    depth = seq.frames[0].load_depth()
    invalid = (depth == 0).mean()
    assert 0.003 < invalid < 0.5  # edges, dark spots and speckles are missing
    # quantisation: the distinct depth values are further apart far away than close by
    near = np.unique(depth[(depth > 0.7) & (depth < 1.0)])
    far = np.unique(depth[(depth > 2.5) & (depth < 3.0)])
    assert np.median(np.diff(far)) > 2 * np.median(np.diff(near))
    # RGB and depth stamps differ by a few ms
    fr = seq.frames[3]
    assert 2e6 <= fr.depth_stamp_ns - fr.stamp_ns <= 8e6
    assert seq.frames[1].stamp_ns - seq.frames[0].stamp_ns == 33_333_333


def test_trajectory_elevations_and_object_sizes():
    w = build_world(5, [1, 3, 4, 6])
    train = circle_trajectory(w, 40, 5, (38.0, 41.0), 360.0)
    el = [elevation_deg(w, T) for T in train]
    assert 37.0 <= min(el) and max(el) <= 42.0
    test = circle_trajectory(w, 40, 6, (8.0, 42.0), 360.0, elev_mode="sweep")
    el = [elevation_deg(w, T) for T in test]
    assert min(el) < 11 and max(el) > 39
    for o in w.objects:
        assert 0.05 <= o.mesh.extent.max() <= 0.30  # household sizes in metres
        assert abs(o.T_world_object[2, 3] - o.mesh.extent[2] / 2 - w.table_top_z) < 1e-3


def test_textures_have_detail_and_symmetric_objects_flagged(small_world):
    for o in CATALOGUE:
        m = make_object(o.obj_id, 0)
        g = cv2.cvtColor(m.texture, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grad = np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1))
        if o.symmetric:
            # rotationally uniform: constant along u (texture rows)
            assert np.abs(np.diff(g, axis=1)).max() == 0
        else:
            assert grad.mean() > 8.0, o.name
    assert sum(o.symmetric for o in CATALOGUE) == 2
    root, _ = small_world
    info = read_models_info(root / "models" / "models_info.json")
    assert all("diameter" in v for v in info.values())


@pytest.mark.slow
def test_deterministic_by_seed(small_world, tmp_path):
    from nol_ros.datasets.synthetic.generate import generate

    root, _ = small_world
    generate(tmp_path / "again", "small", seed=0, progress=False)
    for rel in ["train/000001/rgb/000007.png", "train/000001/depth/000011.png",
                "train/000001/scene_gt.json", "test/000001/rgb/000003.png",
                "models/obj_000001.ply"]:
        assert _md5(root / rel) == _md5(tmp_path / "again" / rel), rel
    w1, w2 = build_world(0, [1, 3]), build_world(1, [1, 3])
    assert not np.allclose(w1.objects[0].T_world_object, w2.objects[0].T_world_object)
