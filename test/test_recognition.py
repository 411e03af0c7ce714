"""Recognition core: pose grid and in-plane rotations, render sets read back as BOP, the COCO
detector set, detector / pose-net training (losses fall, resume is exact), PnP with outliers and
"no pose", ADD/ADI and AP against hand-computed values, and bad input."""

import json

import numpy as np
import pytest
import torch

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.datasets.bop import read_bop_scene
from nol_ros.datasets.synthetic.objects import make_object
from nol_ros.errors import ConfigError, InputError
from nol_ros.geometry import fit_rigid, make_T, rotation_error_deg, so3_exp
from nol_ros.recognition.detector import Detector, detector_config, train_detector
from nol_ros.recognition.detset import DetectionSetConfig, read_coco, write_detection_set
from nol_ros.recognition.evaluate import (
    DetectionAccumulator,
    ObjectModel,
    add_error,
    average_precision,
    box_iou,
    learnt_frame_symmetry,
    learnt_frames_from_views,
    load_object_models,
    write_bop_csv,
)
from nol_ros.recognition.pnp import pnp_ransac, rigid_ransac
from nol_ros.recognition.posenet import PoseNet, posenet_config, train_posenet
from nol_ros.recognition.poses import (
    PoseGridConfig,
    bbox_centre,
    bounding_radius,
    crop_intrinsics,
    hemisphere_poses,
    roll,
    roll_homography,
)
from nol_ros.recognition.renderers import TexturedMeshRenderer
from nol_ros.recognition.trainset import (
    load_paste_samples,
    load_pose_samples,
    read_render_set,
    write_render_set,
)

GRID = PoseGridConfig(az_step_deg=60, el_step_deg=30, el_max_deg=60, inplane_step_deg=45,
                      crop_size=64)


@pytest.fixture(scope="module")
def objects():
    return {1: make_object(1, 0), 3: make_object(3, 0)}


@pytest.fixture(scope="module")
def render_set(objects, tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    for oid, m in objects.items():
        write_render_set(TexturedMeshRenderer(m), m, oid, d, GRID, source="gt", name=m.name)
    return d


@pytest.fixture(scope="module")
def coco(render_set, tmp_path_factory):
    d = tmp_path_factory.mktemp("det")
    paste = {o: load_paste_samples(render_set / f"{o:06d}", o) for o in (1, 3)}
    cfg = DetectionSetConfig(n_images=16, width=160, height=120, focal_px=538.391 / 4,
                             objects=(1, 3), n_backgrounds=4)
    summary = write_detection_set(paste, d, cfg, {1: "cracker_box", 3: "soup"})
    return d, summary, cfg


# -- poses ---------------------------------------------------------------------------------------
def test_paper_grid_counts_and_poses_look_at_the_centre():
    g = PoseGridConfig()
    assert (len(g.azimuths_deg), len(g.elevations_deg), g.n_views) == (72, 18, 1296)
    assert g.inplane_deg.tolist() == [-45, -30, -15, 0, 15, 30, 45] and g.n_images == 9072
    c = np.array([0.01, -0.02, 0.03])
    T = hemisphere_poses(c, PoseGridConfig(az_step_deg=90, el_step_deg=40, el_max_deg=80))
    assert len(T) == 4 * 3
    for Tk in T:
        p = Tk[:3, :3] @ c + Tk[:3, 3]       # the centre sits on the optical axis at 0.7 m
        np.testing.assert_allclose(p, [0, 0, 0.7], atol=1e-9)
        up = Tk[:3, :3] @ np.array([0, 0, 1.0])
        assert up[1] <= 1e-9                  # object +z points up in the image (y down)


def test_roll_is_the_image_rotation_and_crop_holds_the_object():
    m = make_object(1, 0)
    intr = crop_intrinsics(bounding_radius(m.vertices), 0.7, 96)
    assert intr.cx == pytest.approx(47.5) and intr.cy == pytest.approx(47.5)
    assert intr.fx / intr.fy == pytest.approx(SMOT_XTION.fx / SMOT_XTION.fy)
    T = hemisphere_poses(bbox_centre(m.vertices), PoseGridConfig(az_step_deg=120,
                                                                 el_step_deg=45))
    Hm = roll_homography(intr, 30.0)
    for Tk in T:
        P = m.vertices @ Tk[:3, :3].T + Tk[:3, 3]
        uv, _ = intr.project(P)
        assert uv.min() >= 0 and uv.max() <= 95        # inside the crop in every view
        T2 = roll(30.0) @ Tk
        uv2, z2 = intr.project(m.vertices @ T2[:3, :3].T + T2[:3, 3])
        h = np.c_[uv, np.ones(len(uv))] @ Hm.T
        np.testing.assert_allclose(h[:, :2] / h[:, 2:], uv2, atol=1e-6)
        np.testing.assert_allclose(z2, P[:, 2], atol=1e-12)  # a roll keeps depths
    # positive angles turn the image counter-clockwise on screen
    p = np.array([[0.05, 0.0, 0.7]])
    q = (roll(30.0)[:3, :3] @ p.T).T
    assert q[0, 1] < 0


def test_bad_grid_configs():
    with pytest.raises(ConfigError):
        PoseGridConfig(az_step_deg=0)
    with pytest.raises(ConfigError):
        PoseGridConfig(el_max_deg=90)
    with pytest.raises(InputError):
        crop_intrinsics(0.5, 0.4, 64)


# -- render sets -----------------------------------------------------------------------------------
def test_render_set_is_valid_bop_and_rotations_match_direct_renders(render_set, objects):
    meta = read_render_set(render_set)
    assert meta["source"] == "gt" and set(meta["objects"]) == {"1", "3"}
    n = GRID.n_images
    assert meta["objects"]["1"]["images"] == n == len(GRID.inplane_deg) * GRID.n_views
    seq = read_bop_scene(render_set / "000001")
    assert len(seq.frames) == n and seq.intrinsics.width == 64
    info = json.loads((render_set / "000001" / "scene_gt_info.json").read_text())
    m = objects[1]
    views = hemisphere_poses(bbox_centre(m.vertices), GRID)
    r = TexturedMeshRenderer(m)
    k = 2  # view 2, all in-plane angles
    for j, a in enumerate(GRID.inplane_deg):
        im_id = k * len(GRID.inplane_deg) + j
        fr = seq.frames[im_id]
        T_file = fr.T_camera_objects[1]
        np.testing.assert_allclose(T_file[:3, :3], (roll(a) @ views[k])[:3, :3], atol=1e-6)
        np.testing.assert_allclose(T_file[:3, 3], (roll(a) @ views[k])[:3, 3], atol=1e-6)
        # the image-space rotation equals a direct render at the rolled pose
        _, mask_direct = r.render(roll(a) @ views[k], seq.intrinsics)
        mask_file = np.asarray(__import__("cv2").imread(
            str(render_set / "000001" / "mask_visib" / f"{im_id:06d}_000000.png"), 0)) > 127
        iou = (mask_file & mask_direct[0]).sum() / (mask_file | mask_direct[0]).sum()
        assert iou > 0.9
        x, y, w, h = info[str(im_id)][0]["bbox_visib"]
        ys, xs = np.nonzero(mask_file)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                ys.max() - ys.min() + 1)
        # depth = rasterised mesh depth in 0.1 mm units, on the mask only
        d = fr.load_depth()
        assert np.all(d[mask_file] > 0.5) and np.all(d[~mask_file] == 0)


def test_pose_samples_have_exact_object_coordinates(render_set, objects):
    ps = load_pose_samples(render_set / "000003", 3, objects[3], 32, wide=1.6)
    assert len(ps) == GRID.n_images
    assert ps.rgb.shape == (len(ps), 32, 32, 3) and ps.xyz.dtype == np.float16
    V = objects[3].vertices
    for i in (0, 7, 20):
        sel = ps.amodal[i]
        assert sel.sum() > 20 and ps.visib[i].sum() > 0
        q = ps.xyz[i][sel]
        assert np.all(q >= V.min(0) - 1e-4) and np.all(q <= V.max(0) + 1e-4)
        # coordinates re-projected with the crop intrinsics land on their pixels
        K, T = ps.K[i], ps.T[i]
        P = q @ T[:3, :3].T + T[:3, 3]
        uv = (P @ K.T)[:, :2] / P[:, 2:3]
        vv, uu = np.nonzero(sel)
        assert np.median(np.linalg.norm(uv - np.stack([uu, vv], 1), axis=1)) < 0.1


def test_renderer_without_object_pixels_is_refused(tmp_path, objects):
    class Blank:
        def render(self, T, intr):
            return (np.zeros((len(T), intr.height, intr.width, 3), np.uint8),
                    np.zeros((len(T), intr.height, intr.width), bool))

    with pytest.raises(InputError, match="no object pixels"):
        write_render_set(Blank(), objects[3], 3, tmp_path, GRID)
    with pytest.raises(InputError):
        write_render_set(object(), objects[3], 3, tmp_path, GRID)


def test_empty_sets_are_refused(tmp_path, render_set):
    with pytest.raises(InputError, match="empty"):
        write_detection_set({}, tmp_path / "d")
    with pytest.raises(InputError):
        write_detection_set({1: []}, tmp_path / "d")
    with pytest.raises(InputError, match="nothing to train"):
        load_pose_samples(render_set / "000001", 9, make_object(9, 0), 32)
    with pytest.raises(InputError):
        train_posenet([], {}, tmp_path / "p", posenet_config("tiny"))
    from nol_ros.recognition.pipeline import TrainPlan, recognition_preset

    with pytest.raises(InputError, match="empty"):
        TrainPlan(recognition_preset("tiny"), (), tmp_path / "w", tmp_path / "m")


# -- detector set ----------------------------------------------------------------------------------
def test_detection_set_is_valid_coco(coco):
    d, summary, cfg = coco
    images, cats = read_coco(d / "annotations.json")
    assert [c["id"] for c in cats] == [1, 3] and cats[0]["name"] == "cracker_box"
    assert len(images) == cfg.n_images == summary["images"]
    n_boxes = 0
    for im in images:
        assert im.path.is_file() and (im.width, im.height) == (160, 120)
        img = __import__("cv2").imread(str(im.path))
        assert img.shape == (120, 160, 3)
        b = im.boxes_xyxy
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 2] <= 160) and np.all(b[:, 3] <= 120)
        assert np.all(b[:, 2] > b[:, 0]) and set(im.labels.tolist()) <= {1, 3}
        n_boxes += len(b)
    assert n_boxes >= cfg.n_images  # at least one annotated object per image on average
    coco_json = json.loads((d / "annotations.json").read_text())
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in coco_json["annotations"])


def test_detection_set_is_reproducible(render_set, tmp_path):
    paste = {3: load_paste_samples(render_set / "000003", 3)}
    cfg = DetectionSetConfig(n_images=2, width=96, height=64, focal_px=100.0, n_backgrounds=2)
    write_detection_set(paste, tmp_path / "a", cfg)
    write_detection_set(paste, tmp_path / "b", cfg)
    for i in range(2):
        a = (tmp_path / "a" / "images" / f"{i:06d}.jpg").read_bytes()
        assert a == (tmp_path / "b" / "images" / f"{i:06d}.jpg").read_bytes()


# -- detector --------------------------------------------------------------------------------------
def _state_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["centernet", "retinanet"])
def test_tiny_detector_learns_and_resumes_exactly(coco, tmp_path, arch):
    d, _, _ = coco
    # Learning: 12 epochs on the 16 images without augmentation, so that the epoch loss
    # measures the fit and not the random draws (with augmentation the RetinaNet's epoch loss
    # moves by +-0.15 between epochs).
    cfg = detector_config("tiny", arch=arch, epochs=12, batch_size=4, lr=3e-3, warmup_steps=2,
                          augment=False)
    r = train_detector(d / "annotations.json", tmp_path / "a", cfg, seed=3)
    losses = [h["loss"] for h in r["history"]]
    print(f"{arch}: epoch losses {[round(x, 3) for x in losses]}")
    # Bar: the loss at least halves. Measured (1 and 2 threads alike): centernet 5.25 -> 0.78
    # (0.15x), retinanet 2.06 -> 0.60 (0.29x): margins 3.4x and 1.7x below the bar.
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0], losses
    # Resume, with augmentation (its random draws must resume too): interrupted after the first
    # epoch (time budget), then continued: the same losses and weights as one run
    aug = cfg.replace(epochs=3, augment=True)
    ref = train_detector(d / "annotations.json", tmp_path / "ref", aug, seed=3)
    train_detector(d / "annotations.json", tmp_path / "b", aug, seed=3, max_seconds=0.0)
    ck = torch.load(tmp_path / "b" / "detector_last.pt", weights_only=True)
    assert ck["epoch"] == 1
    r2 = train_detector(d / "annotations.json", tmp_path / "b", aug, seed=3)
    assert [h["loss"] for h in r2["history"]] == pytest.approx(
        [h["loss"] for h in ref["history"]], rel=1e-6)
    a = torch.load(tmp_path / "ref" / "detector.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "detector.pt", weights_only=True)["model"]
    assert _state_equal(a, b)
    # inference runs on any image size and honours the class list
    det = Detector.load(tmp_path / "a" / "detector.pt", classes=[1, 3])
    out = det.detect(np.zeros((120, 160, 3), np.uint8), score_thresh=0.0)
    assert all(o.obj_id in (1, 3) for o in out)
    with pytest.raises(ConfigError, match="trained for objects"):
        Detector.load(tmp_path / "a" / "detector.pt", classes=[1, 4])
    with pytest.raises(InputError):
        det.detect(np.zeros((120, 160, 3), np.float32))
    with pytest.raises(ConfigError):  # resuming with another config is refused
        train_detector(d / "annotations.json", tmp_path / "b", aug.replace(lr=1e-3), seed=3)
    # ... but a longer schedule continues the checkpoint
    r3 = train_detector(d / "annotations.json", tmp_path / "b", aug.replace(epochs=4), seed=3)
    assert len(r3["history"]) == 4 and r3["history"][:3] == r2["history"]


# -- pose network ----------------------------------------------------------------------------------
def test_tiny_posenet_learns_and_resumes_exactly(render_set, objects, tmp_path):
    cfg = posenet_config("tiny", steps=150, ckpt_every=50, batch_size=8, lr=1e-2)
    samples = [load_pose_samples(render_set / f"{o:06d}", o, objects[o], cfg.store_size,
                                 wide=cfg.wide) for o in (1, 3)]
    verts = {o: objects[o].vertices for o in (1, 3)}
    r = train_posenet(samples, verts, tmp_path / "a", cfg, seed=1)
    h = r["history"]
    print("posenet (xyz error, loss) every 25 steps:",
          [(round(x["xyz"], 3), round(x["loss"], 3)) for x in h])
    # Bars: the coordinate error falls below 0.95x and the loss below 0.9x of the first 25
    # steps' mean. Measured with 150 steps (1 and 2 threads): 0.85x and 0.74x (60 steps gave
    # 0.88x / 0.82x, too close to the bars).
    assert h[-1]["xyz"] < 0.95 * h[0]["xyz"] and h[-1]["loss"] < 0.9 * h[0]["loss"]
    train_posenet(samples, verts, tmp_path / "b", cfg, seed=1, max_seconds=0.0)
    assert torch.load(tmp_path / "b" / "posenet_last.pt", weights_only=True)["step"] == 1
    train_posenet(samples, verts, tmp_path / "b", cfg, seed=1)
    a = torch.load(tmp_path / "a" / "posenet.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "posenet.pt", weights_only=True)["model"]
    assert _state_equal(a, b)
    pn = PoseNet.load(tmp_path / "a" / "posenet.pt", classes=[1, 3])
    out = pn.predict(np.zeros((2, 32, 32, 3), np.uint8), [1, 3])
    assert out[0].xyz.shape == (32, 32, 3) and 0 <= out[1].err.min() <= out[1].err.max() <= 1
    with pytest.raises(ConfigError):
        PoseNet.load(tmp_path / "a" / "posenet.pt", classes=[3, 1])
    with pytest.raises(InputError):
        pn.predict(np.zeros((1, 48, 48, 3), np.uint8), [1])
    with pytest.raises(InputError):
        pn.predict(np.zeros((1, 32, 32, 3), np.uint8), [5])


# -- PnP -------------------------------------------------------------------------------------------
def _correspondences(rng, n, T, K, noise_px=0.3):
    P = rng.uniform(-0.08, 0.08, (n, 3))
    Q = P @ T[:3, :3].T + T[:3, 3]
    p = (Q @ K.T)[:, :2] / Q[:, 2:3]
    return P, p + rng.normal(0, noise_px, p.shape)


def test_pnp_recovers_a_known_pose_despite_outliers():
    rng = np.random.default_rng(0)
    K = SMOT_XTION.K
    T = make_T(so3_exp([0.4, -1.1, 0.3]), [0.05, -0.03, 0.9])
    P, p = _correspondences(rng, 300, T, K)
    out = rng.random(300) < 0.35
    p[out] = rng.uniform([0, 0], [640, 480], (out.sum(), 2))
    r = pnp_ransac(P, p, K, reproj_px=2.0, min_inliers=12)
    assert r.T_camera_object is not None
    assert rotation_error_deg(r.T_camera_object[:3, :3], T[:3, :3]) < 0.5
    assert np.linalg.norm(r.T_camera_object[:3, 3] - T[:3, 3]) < 0.005
    assert 0.55 < r.score < 0.75 and r.n_inliers == pytest.approx((~out).sum(), abs=8)


def test_pnp_reports_no_pose_for_inconsistent_or_few_points():
    rng = np.random.default_rng(1)
    K = SMOT_XTION.K
    P = rng.uniform(-0.08, 0.08, (200, 3))
    p = rng.uniform([250, 200], [350, 280], (200, 2))   # no consistent pose
    r = pnp_ransac(P, p, K, reproj_px=1.0, min_inliers=20)
    assert r.T_camera_object is None and r.score == 0.0 and r.reason
    T = make_T(np.eye(3), [0, 0, 0.8])
    P, p = _correspondences(rng, 8, T, K)
    r = pnp_ransac(P, p, K, min_inliers=12)
    assert r.T_camera_object is None and "correspondences" in r.reason
    with pytest.raises(InputError):
        pnp_ransac(P, p[:5], K)


def test_rigid_ransac_recovers_a_known_pose_despite_outliers():
    rng = np.random.default_rng(3)
    T = make_T(so3_exp([-0.7, 0.9, 1.6]), [-0.04, 0.02, 0.85])
    P = rng.uniform(-0.06, 0.06, (400, 3))
    Q = P @ T[:3, :3].T + T[:3, 3] + rng.normal(0, 0.002, (400, 3))
    out = rng.random(400) < 0.4
    Q[out] = T[:3, 3] + rng.uniform(-0.2, 0.2, (out.sum(), 3))
    assert np.allclose(fit_rigid(P[~out][:50], P[~out][:50] @ T[:3, :3].T + T[:3, 3]), T)
    r = rigid_ransac(P, Q, thresh_m=0.008)
    assert r.T_camera_object is not None
    assert rotation_error_deg(r.T_camera_object[:3, :3], T[:3, :3]) < 1.0
    assert np.linalg.norm(r.T_camera_object[:3, 3] - T[:3, 3]) < 0.002
    assert 0.5 < r.score < 0.7 and r.n_inliers == pytest.approx((~out).sum(), abs=15)


def test_rigid_ransac_residuals_as_one_product_equal_applying_every_pose():
    from nol_ros.recognition.pnp import _squared_residuals

    rng = np.random.default_rng(5)
    Ts = np.stack([make_T(so3_exp(rng.normal(size=3)), rng.uniform(-0.3, 0.3, 3) + [0, 0, 0.9])
                   for _ in range(7)])
    P = rng.uniform(-0.1, 0.1, (50, 3))
    Q = rng.uniform(-0.2, 0.2, (50, 3)) + [0, 0, 0.9]
    direct = np.stack([((P @ T[:3, :3].T + T[:3, 3] - Q) ** 2).sum(1) for T in Ts])
    assert np.allclose(_squared_residuals(Ts, P, Q), direct, rtol=0, atol=1e-12)


def test_rigid_ransac_reports_no_pose_for_inconsistent_few_or_collinear_points():
    rng = np.random.default_rng(4)
    P = rng.uniform(-0.08, 0.08, (200, 3))
    r = rigid_ransac(P, rng.uniform(-0.1, 0.1, (200, 3)) + [0, 0, 0.8], thresh_m=0.005,
                     min_inliers=20)
    assert r.T_camera_object is None and r.score == 0.0 and r.reason
    r = rigid_ransac(P[:8], P[:8] + [0, 0, 0.8], min_inliers=12)
    assert r.T_camera_object is None and "correspondences" in r.reason
    line = np.outer(np.linspace(-0.1, 0.1, 50), [1.0, 0.5, 0.2])   # fixes no rotation
    r = rigid_ransac(line, line + [0, 0, 0.8])
    assert r.T_camera_object is None and "degenerate" in r.reason
    with pytest.raises(InputError):
        rigid_ransac(P, P[:5])


def test_rigid_ransac_refuses_a_fit_to_a_patch_of_the_object():
    # a poorly trained pose net: its coordinates are right on a 3 cm patch and collapse to one
    # point elsewhere; the depth sees a 12 cm face. The fit to the patch is consistent (40
    # inliers) but fixes no pose worth publishing
    rng = np.random.default_rng(5)
    T = make_T(so3_exp([0.3, -0.4, 0.2]), [0.05, -0.02, 0.9])
    face = np.c_[rng.uniform(-0.06, 0.06, (200, 2)), np.zeros(200)]
    Q = face @ T[:3, :3].T + T[:3, 3]
    P = np.tile([0.03, 0.03, 0.0], (200, 1)) + rng.normal(0, 0.001, (200, 3))
    patch = np.flatnonzero(np.linalg.norm(face[:, :2], axis=1) < 0.03)[:40]
    P[patch] = face[patch]
    loose = rigid_ransac(P, Q, thresh_m=0.005, min_inliers=12)
    assert loose.T_camera_object is not None and loose.n_inliers >= 30
    r = rigid_ransac(P, Q, thresh_m=0.005, min_inliers=12, min_extent_m=0.03)
    assert r.T_camera_object is None and "patch" in r.reason, r


def _crop_prediction(m, T, S=64, pad=1.2):
    """A perfect pose-network output for the object at pose T: the crop around its projection,
    true object coordinates, zero error, both masks."""
    from nol_ros.recognition.posenet import CoordPrediction
    from nol_ros.recognition.trainset import crop_image_box, object_coordinates, square_box

    xyz, mask = object_coordinates(m, T, SMOT_XTION)
    v, u = np.nonzero(mask)
    det = (float(u.min()), float(v.min()), float(u.max() + 1 - u.min()),
           float(v.max() + 1 - v.min()))
    box = square_box(det, pad)
    cx = crop_image_box(xyz, box, S, "nearest").astype(np.float64)
    cm = crop_image_box(mask.astype(np.uint8), box, S, "nearest").astype(np.float32)
    return CoordPrediction(cx, np.zeros((S, S), np.float32), cm, cm), box, det


def test_pose_from_prediction_with_depth_and_the_mask_box():
    from nol_ros.geometry import invert_T, look_at
    from nol_ros.rasterizer import Scene
    from nol_ros.recognition.posenet import pose_from_prediction
    from nol_ros.recognition.recognizer import _mask_box

    m = make_object(6, 0)
    T = invert_T(look_at(np.array([0.45, -0.55, 0.5]), np.zeros(3)))
    depth = Scene([m], [np.eye(4)]).render(SMOT_XTION, invert_T(T)).depth.astype(np.float32)
    cfg = posenet_config("cpu")
    pred, box, det = _crop_prediction(m, T, cfg.input_size, cfg.pad)
    # a third of the silhouette predicts coordinates of the wrong side of the object
    rng = np.random.default_rng(0)
    v, u = np.nonzero(pred.amodal > 0.5)
    bad = rng.random(len(u)) < 0.33
    pred.xyz[v[bad], u[bad]] = rng.uniform(-0.1, 0.1, (bad.sum(), 3))
    pts = m.vertices[:500]
    rd = pose_from_prediction(pred, box, SMOT_XTION.K, cfg, det_box_xywh=det, model_points=pts,
                              depth=depth, rgbd_thresh_m=0.01)
    assert rd.T_camera_object is not None
    # exact (measured 0.03 mm, 0.01 deg); sampling the depth one pixel off gives 0.2 mm, 0.6 deg
    assert np.linalg.norm(rd.T_camera_object[:3, 3] - T[:3, 3]) < 0.0005
    assert rotation_error_deg(rd.T_camera_object, T) < 0.3
    # no depth anywhere -> no 3D-3D pose (the recognizer then falls back to PnP)
    none = pose_from_prediction(pred, box, SMOT_XTION.K, cfg, det_box_xywh=det,
                                model_points=pts, depth=np.zeros_like(depth))
    assert none.T_camera_object is None and "correspondences" in none.reason
    # the visible mask's box, mapped back to the image, is the object's box within a crop pixel
    mb = _mask_box(pred.visib > 0.5, box, cfg.input_size)
    assert np.allclose(mb, det, atol=box[2] / cfg.input_size + 0.5), (mb, det)
    assert _mask_box(np.zeros((64, 64), bool), box, 64) is None


# -- metrics ---------------------------------------------------------------------------------------
def test_add_and_adi_match_hand_computed_values():
    pts = np.array([[0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, -0.1, 0]])
    T_gt = make_T(np.eye(3), [0, 0, 1.0])
    shifted = make_T(np.eye(3), [0.003, 0.004, 1.0])          # 5 mm
    asym = ObjectModel(1, "a", pts, 0.2, symmetric=False)
    sym = ObjectModel(2, "s", pts, 0.2, symmetric=True)
    assert add_error(shifted, T_gt, asym) == pytest.approx(0.005)
    turned = make_T(so3_exp([0, 0, np.pi / 2]), [0, 0, 1.0])  # maps the set onto itself
    assert add_error(turned, T_gt, asym) == pytest.approx(0.1 * np.sqrt(2))
    assert add_error(turned, T_gt, sym) == pytest.approx(0.0, abs=1e-12)
    assert add_error(shifted, T_gt, sym) == pytest.approx(0.005)


def test_the_learnt_frame_is_the_nearest_mesh_symmetry_and_add_is_scored_in_it(tmp_path):
    """A box registered turned 180 deg about its height (its own surface: an untextured mesh
    cannot tell) is scored in that frame; a turn that is no symmetry stays an error."""
    from nol_ros.mesh import save_mesh

    box = make_object(1, 0)                      # the cracker box, 16 x 6 x 21 cm
    rng = np.random.default_rng(3)
    Rz180 = make_T(so3_exp([0, 0, np.pi]), np.zeros(3))
    small = make_T(so3_exp([0.01, -0.008, 0.005]), [0.002, 0, 0])   # ~0.8 deg of noise
    gts = [make_T(so3_exp(rng.normal(size=3)), [0, 0, 1.0]) for _ in range(5)]
    S, res, off = learnt_frame_symmetry([(G @ Rz180 @ small, G) for G in gts],
                                        box.vertices, box.faces)
    assert rotation_error_deg(S, Rz180) < 1e-6 and res < 1.5 and off > 178
    # 90 deg about z does not map a 16 x 6 cm box onto itself: the identity is as near as
    # the 180-deg twin and the 90 deg stay (residual 90)
    Rz90 = make_T(so3_exp([0, 0, np.pi / 2]), np.zeros(3))
    S2, res2, _ = learnt_frame_symmetry([(G @ Rz90, G) for G in gts], box.vertices, box.faces)
    assert res2 == pytest.approx(90.0, abs=0.5)
    with pytest.raises(InputError, match="cannot be measured"):
        learnt_frame_symmetry([], box.vertices, box.faces)

    # from files, as the benchmark does: a BOP models folder, scene_gt, views.json
    models_dir, scene, od = tmp_path / "models", tmp_path / "scene", tmp_path / "obj"
    for d in (models_dir, scene, od):
        d.mkdir()
    save_mesh(box, models_dir / "obj_000001.ply")
    (models_dir / "models_info.json").write_text(json.dumps(
        {"1": {"diameter": 1000 * box.diameter, "name": "cracker_box"}}))
    (scene / "scene_gt.json").write_text(json.dumps(
        {str(k): [{"obj_id": 1, "cam_R_m2c": G[:3, :3].ravel().tolist(),
                   "cam_t_m2c": (1000 * G[:3, 3]).tolist()}] for k, G in enumerate(gts)}))
    (od / "views.json").write_text(json.dumps(
        {"views": [{"frame": str(k), "T_camera_object": (G @ Rz180).tolist()}
                   for k, G in enumerate(gts)]}))
    models = load_object_models(models_dir, [1])
    G = gts[0]
    assert add_error(G @ Rz180, G, models[1]) > 0.05            # the model's frame: 2 x 8 cm off
    info = learnt_frames_from_views(models, {1: od}, scene, models_dir)
    assert info[1]["sym_deg"] == pytest.approx(180.0) and info[1]["frames"] == 5
    assert add_error(G @ Rz180, G, models[1]) < 1e-9             # the learnt frame
    assert add_error(G @ Rz180, G, models[1], learnt_frame=False) > 0.05
    with pytest.raises(InputError, match="not a learnt object folder"):
        learnt_frames_from_views(models, {1: tmp_path}, scene, models_dir)


def test_pose_error_parts_split_tilt_from_the_turn_about_the_axis():
    """A known turn about the model's height and a known tilt come back apart, in the learnt
    frame when there is one; the per-object summary counts the turned poses."""
    from nol_ros.recognition.evaluate import ObjectModel, SceneResult, pose_error_parts

    m = ObjectModel(1, "can", np.zeros((4, 3)), 0.1, False)
    G = make_T(so3_exp([0.3, -1.1, 0.4]), [0.05, -0.02, 0.9])
    turn = make_T(so3_exp([0, 0, np.radians(40)]), np.zeros(3))
    tilt = make_T(so3_exp([np.radians(3), 0, 0]), np.zeros(3))
    shift = make_T(np.eye(3), [0.004, 0, 0])
    ti, tu, t_mm = pose_error_parts(G @ turn @ tilt @ shift, G, m)
    assert ti == pytest.approx(3.0, abs=0.05) and tu == pytest.approx(40.0, abs=0.2)
    assert t_mm == pytest.approx(4.0, abs=0.3)
    ti, tu, _ = pose_error_parts(G @ make_T(so3_exp([0, 0, np.radians(-170)]), np.zeros(3)), G, m)
    assert ti < 1e-4 and tu == pytest.approx(170.0, abs=1e-6)      # [0, 180], either way round
    # a learnt frame (the 180-deg twin): an estimate in it has no error
    Rz180 = make_T(so3_exp([0, 0, np.pi]), np.zeros(3))
    m2 = ObjectModel(1, "can", np.zeros((4, 3)), 0.1, False, T_model_learnt=Rz180)
    assert pose_error_parts(G @ Rz180, G, m2)[1] < 1e-6
    assert pose_error_parts(G @ Rz180, G, m)[1] == pytest.approx(180.0)
    inst = [{"obj_id": 1, "tilt_deg": 1.0, "turn_deg": tu, "t_mm": 2.0}
            for tu in (5.0, 10.0, 50.0, 120.0)]
    inst.append({"obj_id": 1, "tilt_deg": np.nan, "turn_deg": np.nan, "t_mm": np.nan})  # no pose
    r = SceneResult(0.0, {}, {}, {}, {}, 1, 0.0, [], inst)
    e = r.pose_errors()[1]
    assert e["n"] == 4 and e["median_turn_deg"] == pytest.approx(30.0)
    assert e["turned_share"] == pytest.approx(0.5) and e["median_t_mm"] == 2.0


def test_average_precision_and_accumulator_by_hand(tmp_path):
    # 2 ground truths; detections TP (0.9), FP (0.8), TP (0.7): precision envelope 1 up to
    # recall 0.5, 2/3 up to recall 1 -> AP = (51 * 1 + 50 * 2/3) / 101
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert average_precision(np.array([]), np.array([], bool), 3) == 0.0
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3)
    acc = DetectionAccumulator()
    gt = np.array([[10, 10, 50, 50], [100, 100, 140, 160], [0, 0, 20, 20]], float)
    acc.add_image(det_boxes=np.array([[11, 11, 50, 52], [100, 100, 140, 160],
                                      [101, 99, 141, 160], [0, 0, 19, 21], [200, 200, 220, 220]]),
                  det_scores=np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
                  det_labels=np.array([1, 2, 2, 1, 1]),
                  gt_boxes=gt, gt_labels=np.array([1, 2, 1]),
                  gt_ignore=np.array([False, False, True]))
    ap = acc.ap()
    # class 1: TP 0.9, (0.6 on an ignored box: skipped), FP 0.5 -> AP 1
    # class 2: TP 0.8, duplicate FP 0.7 -> AP 1
    assert ap == {1: pytest.approx(1.0), 2: pytest.approx(1.0)} and acc.map() == 1.0
    acc.add_image(np.zeros((0, 4)), [], [], np.array([[0, 0, 30, 30]]), np.array([2]))
    assert acc.ap()[2] == pytest.approx(51 / 101)   # recall 0.5 at precision 0.5..1
    rows = [(1, 4, 2, 0.5, np.eye(3), np.array([1.0, 2.0, 800.0]), 0.1)]
    p = write_bop_csv(tmp_path / "r.csv", rows)
    lines = p.read_text().splitlines()
    assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time"
    f = lines[1].split(",")
    assert f[:3] == ["1", "4", "2"] and len(f[4].split()) == 9 and len(f[5].split()) == 3


def test_intrinsics_type_is_checked_by_the_renderer(objects):
    r = TexturedMeshRenderer(objects[3])
    with pytest.raises(InputError):
        r.render(np.eye(4)[None], "not intrinsics")
    with pytest.raises(InputError, match="behind the camera"):
        r.render(np.eye(4)[None], Intrinsics(50, 50, 15.5, 15.5, 32, 32))
    with pytest.raises(InputError):
        TexturedMeshRenderer(objects[3].untextured())


def test_centernet_targets_decode_back_to_the_boxes():
    from nol_ros.recognition.centernet import CenterNet

    cfg = detector_config("tiny", arch="centernet", min_size=120, max_size=160,
                          score_thresh=0.5)
    net = CenterNet(cfg, n_classes=2).eval()
    boxes = torch.tensor([[10.0, 20.0, 50.0, 90.0], [80.0, 30.0, 150.0, 70.0]])
    t = [{"boxes": boxes, "labels": torch.tensor([1, 2])}]
    scales = [(1.0, 1.0)]
    heat, ind, bidx, size_t, off_t = net._targets(t, scales, (30, 40), "cpu")
    assert heat.shape == (1, 2, 30, 40) and heat.max() == 1.0 and len(ind) == 2
    # perfect predictions: logits of the target heat map, the target sizes and offsets
    logit = torch.logit(heat.clamp(1e-6, 1 - 1e-6))
    size = torch.zeros(1, 2, 30, 40)
    off = torch.zeros(1, 2, 30, 40)
    for i, s, o in zip(ind, size_t, off_t):
        size[0, :, i // 40, i % 40] = torch.tensor(s)
        off[0, :, i // 40, i % 40] = torch.tensor(o)
    out = net._decode((logit, size, off), scales, [(120, 160)])[0]
    assert sorted(out["labels"].tolist()) == [1, 2]
    order = torch.argsort(out["labels"])
    np.testing.assert_allclose(out["boxes"][order].numpy(), boxes.numpy(), atol=1e-3)
    # training mode returns the two losses, and they are finite
    net.train()
    ld = net([torch.rand(3, 120, 160)], t)
    assert set(ld) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) for v in ld.values())


def test_symmetric_coordinates_are_canonical_about_the_axis():
    from nol_ros.recognition.trainset import canonical_symmetric_coords

    rng = np.random.default_rng(4)
    xyz = rng.uniform(-0.05, 0.05, (6, 6, 3))
    mask = np.ones((6, 6), bool)
    mask[0] = False
    T = make_T(so3_exp([1.2, 0.1, 0.4]), [0.02, -0.01, 0.8])
    axis, off = np.array([0, 0, 1.0]), np.array([0, 0, 0.01])
    for th in (0.3, 2.0, -2.9):
        S = make_T(so3_exp(axis * th), off - so3_exp(axis * th) @ off)  # symmetry about axis
        # the object turned by S looks the same; its surface points seen at the same pixels
        # have coordinates S^-1 x
        xyz2 = (xyz - off) @ so3_exp(axis * th) + off
        a = canonical_symmetric_coords(xyz, mask, T, axis, off)
        b = canonical_symmetric_coords(xyz2, mask, T @ S, axis, off)
        np.testing.assert_allclose(a[mask], b[mask], atol=1e-12)
        np.testing.assert_array_equal(a[~mask], xyz[~mask])


def test_printed_objects_of_revolution_get_labels_unique_about_their_axis():
    """canonical_turns: a printed can's pose labels are made unique about its shape's axis (the
    print step finds the turn); without it only objects declared symmetric are; an object with
    no axis (the drill) never."""
    from pathlib import Path

    from nol_ros.recognition.pipeline import TrainObject, label_axis

    can, drill = make_object(3, 0), make_object(6, 0)
    on, off = (posenet_config("cpu", canonical_turns=c) for c in (True, False))
    printed = TrainObject(3, "can", Path("can.ply"), Path("scene"))
    axis, point = label_axis(printed, can, on)
    assert abs(axis[2]) > 0.999                         # the can stands on its z axis
    np.testing.assert_allclose(point[:2], can.vertices[:, :2].mean(0), atol=1e-3)
    assert label_axis(printed, can, off) is None
    plain = TrainObject(3, "can", Path("can.ply"), Path("scene"), symmetric=True)
    assert label_axis(plain, can, off) is not None
    assert label_axis(TrainObject(6, "drill", Path("d.ply"), Path("scene")), drill, on) is None


def test_icp_refines_a_perturbed_pose_on_rendered_depth():
    from nol_ros.geometry import invert_T, look_at, perturb_T
    from nol_ros.rasterizer import Scene
    from nol_ros.recognition.pnp import refine_icp

    m = make_object(6, 0)   # the drill: no symmetry
    T = invert_T(look_at(np.array([0.5, -0.6, 0.45]), np.zeros(3)))
    res = Scene([m], [np.eye(4)]).render(SMOT_XTION, invert_T(T))
    depth, mask = res.depth.astype(np.float32), res.mask
    T0 = perturb_T(T, 0.015, np.radians(4), np.random.default_rng(2), mode="fixed")
    r = refine_icp(T0, m, depth, SMOT_XTION, mask)
    assert r.refined and r.fitness > 0.8
    assert np.linalg.norm(r.T_camera_object[:3, 3] - T[:3, 3]) < 0.003
    assert rotation_error_deg(r.T_camera_object, T) < 1.0
    # no depth where the mask is -> the RGB pose comes back unrefined, with the reason
    r = refine_icp(T0, m, np.zeros_like(depth), SMOT_XTION, mask)
    assert not r.refined and np.array_equal(r.T_camera_object, T0) and "depth" in r.reason


def test_icp_is_not_pulled_off_by_missing_depth_on_a_bottle():
    """Real depth has holes on an object (a dark label, specular spots) and noise at 1.3 m. The
    visible model points with no observed partner must not tilt or shift the pose: on a bottle
    the tilt and the offset are all the error there is (the turn about the axis is free). A
    point-to-point fit of the model onto the depth, as before, lands 1.2-3.3 mm and up to
    1.9 deg off here; the point-to-plane finest stage 0.2-0.7 mm and 0.3 deg."""
    from nol_ros.geometry import invert_T, look_at, perturb_T
    from nol_ros.rasterizer import Scene
    from nol_ros.recognition.pnp import refine_icp

    m = make_object(4, 0)   # the bottle: a surface of revolution about its z axis
    T = invert_T(look_at(np.array([0.7, -1.0, 0.55]), np.array([0, 0, 0.1])))
    res = Scene([m], [np.eye(4)]).render(SMOT_XTION, invert_T(T))
    depth, mask = res.depth.astype(np.float32), res.mask
    rng = np.random.default_rng(0)
    depth[mask] += rng.normal(0, 0.003, int(mask.sum())).astype(np.float32)
    rows = np.nonzero(mask)[0]
    band = np.zeros_like(mask)
    band[int(np.percentile(rows, 40)):int(np.percentile(rows, 62))] = True
    depth[band & mask] = 0          # a fifth of the bottle without depth
    for i in range(4):
        T0 = perturb_T(T, 0.01, np.radians(3), np.random.default_rng(i), mode="fixed")
        r = refine_icp(T0, m, depth, SMOT_XTION, mask)
        assert r.refined and r.fitness > 0.8
        assert np.linalg.norm(r.T_camera_object[:3, 3] - T[:3, 3]) < 0.001
        tilt = np.degrees(np.arccos(np.clip(r.T_camera_object[:3, 2] @ T[:3, 2], -1, 1)))
        assert tilt < 0.5


@pytest.mark.slow
def test_paper_presets_build_and_run():
    """The paper's RetinaNet ResNet-50-FPN and the ResNet-50 Pix2Pose-style net (random init;
    inputs shrunk so the check is quick)."""
    from nol_ros.recognition.detector import build_detector
    from nol_ros.recognition.posenet import build_posenet

    det = build_detector(detector_config("paper", min_size=96, max_size=128), 4).eval()
    assert type(det).__name__ == "RetinaNet"
    assert sum(p.numel() for p in det.parameters()) > 30e6
    with torch.no_grad():
        out = det([torch.rand(3, 96, 128)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
    net = build_posenet(posenet_config("paper", input_size=64), 2).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 12, 64, 64)
    with pytest.raises(ConfigError, match="weights"):
        build_detector(detector_config("paper", backbone_weights="/nonexistent.pth"), 4)


def test_recognizer_config_refuses_unknown_solver_and_bad_thresholds():
    from nol_ros.recognition.recognizer import RecognizerConfig

    assert RecognizerConfig().solver == "rgbd" and not RecognizerConfig().refine_boxes
    for bad in (dict(solver="depth"), dict(rgbd_thresh_m=0.0), dict(refine_top=-1),
                dict(appearance_step_deg=0.0), dict(appearance_step_deg=200.0),
                dict(icp_plane_kernel_m=-0.01)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            RecognizerConfig(**bad)
