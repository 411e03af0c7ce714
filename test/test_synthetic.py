"""The synthetic world: determinism, ground-truth consistency, sensor artefacts, trajectories,
textures with detail, symmetric objects."""

import hashlib
import json

import cv2
import numpy as np
import pytest

from nol_ros.datasets.bop import read_bop_scene, read_masks, read_models_info
from nol_ros.datasets.synthetic.objects import CATALOGUE, make_object
from nol_ros.datasets.synthetic.sensor import SensorConfig, XtionSensor, specular_strength
from nol_ros.datasets.synthetic.world import build_world, circle_trajectory, elevation_deg
from nol_ros.errors import NolError


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def _gt_poses_checked_against_masks(root, seq, min_mask_px: int) -> int:
    """Every 6th training frame: each object with a visible mask of at least ``min_mask_px``
    has its mesh's front-most vertices (depth within 1 cm) inside the mask, dilated by one pixel
    for the rounding of silhouette vertices (asserted). Returns how many were checked."""
    from nol_ros.mesh import load_mesh

    gt = json.loads((root / "train" / "000001" / "scene_gt.json").read_text())
    meshes = {o.obj_id: load_mesh(o.mesh_path) for o in seq.objects}
    checked = 0
    for fr in seq.frames[::6]:
        anns = gt[str(fr.index)]
        masks = read_masks(root / "train" / "000001", fr.index, len(anns))
        depth = fr.load_depth()
        for a, m in zip(anns, masks):
            if m.sum() < min_mask_px:
                continue
            T = seq.T_camera_object(fr.index, a["obj_id"])
            V = meshes[a["obj_id"]].vertices @ T[:3, :3].T + T[:3, 3]
            uv, z = seq.intrinsics.project(V)
            u, v = np.round(uv).astype(int).T
            ok = (u >= 0) & (u < 640) & (v >= 0) & (v < 480)
            d = depth[v[ok], u[ok]]
            front = (d > 0) & (np.abs(d - z[ok]) < 0.01)
            md = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            assert front.sum() > 20 and md[v[ok], u[ok]][front].mean() > 0.97
            checked += 1
    return checked


def test_gt_poses_project_into_the_visible_masks(small_world):
    root, summary = small_world
    seq = read_bop_scene(root / "train" / "000001", root / "models")
    assert len(seq.frames) == summary["sequences"]["train/000001"]["frames"] == 30
    assert _gt_poses_checked_against_masks(root, seq, min_mask_px=500) >= 5


def test_gt_info_masks_and_depth_agree_with_an_independent_render(small_world):
    """Each object rendered alone from its written model + GT pose (rasterizer.render_object)
    gives the written full mask, contains the visible mask, and the sensor depth on the visible
    mask agrees with the rendered depth within the noise model."""
    from nol_ros.mesh import load_mesh
    from nol_ros.rasterizer import render_object

    root, _ = small_world
    d = root / "train" / "000001"
    seq = read_bop_scene(d, root / "models")
    meshes = {o.obj_id: load_mesh(o.mesh_path) for o in seq.objects}
    info = json.loads((d / "scene_gt_info.json").read_text())
    gt = json.loads((d / "scene_gt.json").read_text())
    occluded = 0
    for k, anns in info.items():
        vis = read_masks(d, int(k), len(anns), visib=True)
        full = read_masks(d, int(k), len(anns), visib=False)
        for a, mv, mf in zip(anns, vis, full):
            assert 0.0 <= a["visib_fract"] <= 1.0
            assert a["px_count_visib"] == int(mv.sum()) and a["px_count_all"] == int(mf.sum())
            assert a["visib_fract"] == pytest.approx(mv.sum() / max(mf.sum(), 1))
            assert not (mv & ~mf).any()
            occluded += a["visib_fract"] < 0.9
    assert occluded >= 3  # mutual occlusion happens on this table
    cfg = SensorConfig()
    agree, n_valid = 0, 0
    for fr in seq.frames[::7]:
        anns = gt[str(fr.index)]
        vis = read_masks(d, fr.index, len(anns), visib=True)
        full = read_masks(d, fr.index, len(anns), visib=False)
        depth = fr.load_depth()
        for a, mv, mf in zip(anns, vis, full):
            r = render_object(meshes[a["obj_id"]], seq.intrinsics,
                              seq.T_camera_object(fr.index, a["obj_id"]))
            sil = r.depth > 0
            iou = (sil & mf).sum() / max((sil | mf).sum(), 1)
            assert iou > 0.99, (fr.index, a["obj_id"], iou)
            # away from silhouette edges (edge dropouts, mixed pixels)
            inner = cv2.erode(mv.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            sel = inner & (depth > 0)
            z = r.depth[sel].astype(np.float64)
            sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
            step = z ** 2 / (cfg.baseline_focal * cfg.subpixel)
            err = np.abs(depth[sel] - z)
            agree += int((err <= 4 * sigma + step + 0.001).sum())
            n_valid += int(sel.sum())
            # most of the visible surface has depth (dropouts are the exception)
            if inner.sum() > 300:
                assert sel.sum() > 0.5 * inner.sum()
    assert n_valid > 5000 and agree / n_valid > 0.995


def test_sensor_artefacts_in_the_written_frames(small_world):
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    depth = seq.frames[0].load_depth()
    invalid = (depth == 0).mean()
    assert 0.003 < invalid < 0.5  # edges, dark spots, highlights and speckles are missing
    # quantisation: the distinct depth values are further apart far away than close by
    near = np.unique(depth[(depth > 0.7) & (depth < 1.0)])
    far = np.unique(depth[(depth > 2.5) & (depth < 3.0)])
    assert np.median(np.diff(far)) > 2 * np.median(np.diff(near))
    # RGB and depth stamps differ by a few ms; RGB at 30 Hz
    gaps = [f.depth_stamp_ns - f.stamp_ns for f in seq.frames]
    assert min(gaps) >= 2e6 and max(gaps) <= 8e6 and np.std(gaps) > 0.5e6
    assert seq.frames[1].stamp_ns - seq.frames[0].stamp_ns == 33_333_333
    # exposure / white balance change from frame to frame: the mean colour of the (static)
    # scene drifts although the views overlap
    means = np.array([f.load_rgb().reshape(-1, 3).mean(0) for f in seq.frames[:6]])
    ratios = means / means.mean(1, keepdims=True)
    assert np.ptp(ratios, axis=0).max() > 0.005


def test_sensor_model_dropouts_and_quantisation():
    """The sensor model on synthetic input: disparity quantisation steps follow z^2 / (b f s),
    dark and specular pixels lose depth at the configured rates, the rest only by speckle."""
    cfg = SensorConfig()
    sensor = XtionSensor(cfg, np.random.default_rng(0))
    z = np.repeat(np.linspace(0.8, 3.2, 4000)[None], 200, axis=0)  # smooth ramp, no edges
    out = sensor.depth(z)
    for zc in (1.0, 2.0, 3.0):
        vals = np.unique(out[np.abs(out - zc) < 0.1])
        step = np.median(np.diff(vals))
        expect = zc ** 2 / (cfg.baseline_focal * cfg.subpixel)
        assert 0.7 * expect - 0.001 <= step <= 1.3 * expect + 0.001, (zc, step, expect)
    z = np.full((300, 300), 1.5)
    bright = np.full(z.shape, 0.6)
    bright[:100] = 0.02                      # dark band
    spec = np.zeros(z.shape)
    spec[100:200] = 0.9                      # highlight band
    out = sensor.depth(z, bright, spec)
    rate = [(out[a:a + 100] == 0).mean() for a in (0, 100, 200)]
    assert abs(rate[0] - cfg.dark_dropout) < 0.05
    assert abs(rate[1] - cfg.specular_dropout) < 0.05
    assert rate[2] < 3 * cfg.speckle_dropout
    # depth edges lose pixels
    z = np.full((100, 100), 1.0)
    z[:, 50:] = 2.0
    out = sensor.depth(z)
    assert (out[:, 49:51] == 0).mean() > 0.4 and (out[:, 10:40] == 0).mean() < 0.02
    # the highlight model (Blinn-Phong): light from the camera onto a surface facing it gives
    # 1 on the optical axis; a ray at angle a off the normal has the half vector at a / 2
    n = np.zeros((1, 3, 3))
    n[..., 2] = -1.0
    rays = np.array([[[0, 0, 1.0], [0.6, 0, 1.0], [1.0, 0, 1.0]]])
    s = specular_strength(n, rays, np.array([0, 0, -1.0]), shininess=80.0)
    a = np.arctan([0.0, 0.6, 1.0])
    assert np.allclose(s[0], np.cos(a / 2) ** 80, atol=1e-5)
    assert s[0, 0] > 0.99 and s[0, 2] < 0.01


def test_trajectory_elevations_and_object_sizes():
    w = build_world(5, [1, 3, 4, 6])
    train = circle_trajectory(w, 40, 5, (38.0, 41.0), 360.0)
    el = [elevation_deg(w, T) for T in train]
    assert 37.0 <= min(el) and max(el) <= 42.0
    # robot-like: ~0.9 m from the table centre, head camera 1.1-1.45 m above the floor,
    # looking at the table centre
    target = np.array([*w.table_centre, w.table_top_z + 0.08])
    for T in train:
        c = T[:3, 3]
        assert 0.78 <= np.linalg.norm(c[:2] - target[:2]) <= 1.0
        assert 1.1 <= c[2] <= 1.45
        ray = (target - c) / np.linalg.norm(target - c)
        assert np.degrees(np.arccos(np.clip(ray @ T[:3, 2], -1, 1))) < 3.0
    test = circle_trajectory(w, 40, 6, (8.0, 42.0), 360.0, elev_mode="sweep")
    el = [elevation_deg(w, T) for T in test]
    assert min(el) < 11 and max(el) > 39
    for o in w.objects:
        assert 0.05 <= o.mesh.extent.max() <= 0.30  # household sizes in metres
        assert abs(o.T_world_object[2, 3] - o.mesh.extent[2] / 2 - w.table_top_z) < 1e-3


def test_textures_have_detail_and_symmetric_objects_flagged(small_world):
    for o in CATALOGUE:
        m = make_object(o.obj_id, 0)
        assert m.is_textured and 400 <= len(m.faces) <= 5000, (o.name, len(m.faces))
        g = cv2.cvtColor(m.texture, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grad = np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1))
        if o.symmetric:
            # rotationally uniform: constant along u (texture rows)
            assert np.abs(np.diff(g, axis=1)).max() == 0
        else:
            assert grad.mean() > 8.0, o.name
    assert sum(o.symmetric for o in CATALOGUE) == 2
    root, summary = small_world
    info = read_models_info(root / "models" / "models_info.json")
    assert set(info) == {o.obj_id for o in CATALOGUE}
    for o in CATALOGUE:
        assert ("symmetries_continuous" in info[o.obj_id]) == o.symmetric, o.name
        assert 50.0 <= info[o.obj_id]["diameter"] <= 400.0  # mm at the file boundary
    assert sorted(summary["symmetric"]) == sorted(o.obj_id for o in CATALOGUE if o.symmetric)
    # the pipeline's models carry no texture; the ground-truth ones do
    from nol_ros.mesh import load_mesh

    assert not load_mesh(root / "models" / "obj_000001.ply").is_textured
    assert load_mesh(root / "models_textured" / "obj_000001.obj").is_textured
    sheet = cv2.imread(str(root / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] >= 480 and sheet.shape[1] >= 960
    assert list((root / "bags" / "train_000001").glob("*.mcap"))


def test_bad_presets_and_ids_are_refused(tmp_path):
    from nol_ros.datasets.synthetic.generate import Preset, generate

    with pytest.raises(NolError, match="preset 'huge' unknown"):
        generate(tmp_path, "huge")
    with pytest.raises(NolError, match="catalogue"):
        generate(tmp_path / "w", Preset(train_objects=(1, 42)), progress=False)
    assert not (tmp_path / "w").exists()  # refused before anything is written
    with pytest.raises(NolError, match="distinct"):
        Preset(train_objects=(1, 1))
    with pytest.raises(NolError, match="catalogue"):
        make_object(42, 0)


@pytest.mark.slow
def test_deterministic_by_seed(tmp_path):
    """Same seed -> byte-identical files; another seed -> another world (a 3 + 2 frame preset,
    the code path of every preset)."""
    from nol_ros.datasets.synthetic.generate import Preset, generate

    p = Preset(train_frames=3, test_frames=2, write_bag=False)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate(tmp_path / name, p, seed=seed, progress=False)
    files = ["train/000001/rgb/000002.png", "train/000001/depth/000001.png",
             "train/000001/scene_gt.json", "train/000001/scene_camera.json",
             "train/000001/scene_gt_info.json", "train/000001/scene_stamps.json",
             "train/000001/mask_visib/000000_000000.png", "test/000001/rgb/000001.png",
             "test/000001/depth/000001.png", "models/obj_000001.ply",
             "models_textured/obj_000003.png", "models/models_info.json",
             "contact_sheet.png"]
    for rel in files:
        assert _md5(tmp_path / "a" / rel) == _md5(tmp_path / "b" / rel), rel
    differ = [rel for rel in files if _md5(tmp_path / "a" / rel) != _md5(tmp_path / "c" / rel)]
    assert {"train/000001/rgb/000002.png", "train/000001/scene_gt.json",
            "models_textured/obj_000003.png"} <= set(differ)


def _scans(root, names_ids):
    """A folder of 'scanned' objects in the layout of ../shared/realdata/ycb_real_textures
    (NAME/textured.obj + .mtl + texture): catalogue objects written as textured OBJs, moved off
    their centre as a scanner's frame would be."""
    from nol_ros.mesh import Mesh, save_mesh

    for name, oid in names_ids:
        m = make_object(oid, 5)
        shifted = Mesh(m.vertices + [0.01, -0.02, 0.05], m.faces, uvs=m.uvs, texture=m.texture,
                       name=name)
        save_mesh(shifted, root / name / "textured.obj")
    return root


@pytest.mark.slow
def test_a_world_of_scanned_objects_from_a_folder(tmp_path):
    """--objects DIR: the scans (not the procedural objects) stand on the table, ids in the
    order of the folder names, untextured models for the pipeline re-centred on their boxes
    and textured ground truth, ground-truth poses that put each scan inside its mask."""
    from nol_ros.datasets.synthetic.generate import Preset, generate
    from nol_ros.mesh import load_mesh

    scans = _scans(tmp_path / "scans", [("zz_can", 3), ("aa_box", 2), ("mm_bottle", 4)])
    out = tmp_path / "world"
    generate(out, Preset(train_frames=13, test_frames=2), objects_dir=scans,
             object_names=["zz_can", "aa_box"], progress=False)
    world = json.loads((out / "world.json").read_text())
    assert world["catalogue"] == {"1": "aa_box", "2": "mm_bottle", "3": "zz_can"}
    assert world["objects"] == {"3": "zz_can", "1": "aa_box"}
    assert world["catalogue_source"] == str(scans)
    info = read_models_info(out / "models" / "models_info.json")
    assert {k: v["name"] for k, v in info.items()} == {1: "aa_box", 2: "mm_bottle", 3: "zz_can"}
    ply = load_mesh(out / "models" / "obj_000003.ply")
    assert not ply.is_textured and load_mesh(out / "models_textured" / "obj_000003.obj").is_textured
    can = make_object(3, 5)   # the scan's shape, its scanner offset removed
    assert np.allclose(ply.vertices.min(0), -(can.vertices.max(0) - can.vertices.min(0)) / 2,
                       atol=1e-5)
    seq = read_bop_scene(out / "train" / "000001", out / "models")
    assert sorted(o.obj_id for o in seq.objects) == [1, 3]
    assert _gt_poses_checked_against_masks(out, seq, min_mask_px=300) >= 5
    assert list((out / "bags" / "train_000001").glob("*.mcap"))


def test_scanned_objects_bad_folders_are_refused_with_the_fix(tmp_path, capsys):
    from nol_ros.datasets.synthetic.__main__ import main as cli
    from nol_ros.datasets.synthetic.generate import generate

    assert cli(["--out", str(tmp_path / "w"), "--objects", str(tmp_path / "nowhere"),
                "--object-names", "a,b", "--quiet"]) == 2
    assert "objects folder" in capsys.readouterr().err

    with pytest.raises(NolError, match="does not exist"):
        generate(tmp_path / "w", "small", objects_dir=tmp_path / "nowhere", progress=False)
    (tmp_path / "empty" / "thing").mkdir(parents=True)
    with pytest.raises(NolError, match="holds no NAME/textured.obj"):
        generate(tmp_path / "w", "small", objects_dir=tmp_path / "empty", progress=False)
    scans = _scans(tmp_path / "scans", [("box", 2)])
    with pytest.raises(NolError, match=r"\['mug'\] are not in the catalogue.*known: \['box'\]"):
        generate(tmp_path / "w", "small", objects_dir=scans, object_names=["mug"],
                 progress=False)
    assert not (tmp_path / "w").exists()
