"""The one scorer (nol_ros.recognition.evaluate, nol_ros.metrics) against the references people
compare with: mAP@0.5 against pycocotools' COCOeval, ADD and ADI against the BOP toolkit's
published formulas (bop_toolkit_lib/pose_error.py: add, adi -- the toolkit is not on PyPI, so
its two formulas are written out below from its documentation), SSIM against scikit-image.
Random but seeded inputs: the verdict is a function of the code alone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation


def _random_detections(rng, n_images=12, classes=(1, 2, 3)):
    """Per image: ground-truth boxes (some classes absent) and noisy, partly wrong detections,
    xyxy pixels, with distinct scores."""
    images = []
    for _ in range(n_images):
        gt_b, gt_l, det_b, det_s, det_l = [], [], [], [], []
        for c in classes:
            for _ in range(rng.integers(0, 3)):
                x, y = rng.uniform(0, 500, 2)
                w, h = rng.uniform(20, 120, 2)
                box = np.array([x, y, x + w, y + h])
                gt_b.append(box)
                gt_l.append(c)
                for _ in range(rng.integers(0, 3)):   # near misses and hits
                    b = box + rng.normal(0, rng.choice([2.0, 15.0, 40.0]), 4)
                    det_b.append(np.r_[np.minimum(b[:2], b[2:]), np.maximum(b[:2], b[2:])])
                    det_s.append(rng.uniform())
                    det_l.append(c)
            for _ in range(rng.integers(0, 2)):       # false alarms
                x, y = rng.uniform(0, 500, 2)
                det_b.append(np.array([x, y, x + 50, y + 60]))
                det_s.append(rng.uniform())
                det_l.append(c)
        images.append(tuple(np.array(v, float).reshape(-1, 4) if i in (0, 2) else np.array(v)
                            for i, v in enumerate((gt_b, gt_l, det_b, det_s, det_l))))
    return images


def _coco_ap(images, classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in classes]}
    dets = []
    for i, (gb, gl, db, ds, dl) in enumerate(images, start=1):
        gt["images"].append({"id": i, "width": 700, "height": 700})
        for b, lab in zip(gb, gl):
            w, h = b[2] - b[0], b[3] - b[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i,
                                      "category_id": int(lab), "bbox": [b[0], b[1], w, h],
                                      "area": w * h, "iscrowd": 0})
        for b, s, lab in zip(db, ds, dl):
            dets.append({"image_id": i, "category_id": int(lab), "score": float(s),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [10000]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 0]   # (recall thresholds, classes)
    return {c: float(np.mean(prec[:, k])) for k, c in enumerate(ev.params.catIds)
            if (prec[:, k] > -1).all()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_pycocotools(seed):
    from nol_ros.recognition.evaluate import DetectionAccumulator

    classes = (1, 2, 3)
    images = _random_detections(np.random.default_rng(seed), classes=classes)
    acc = DetectionAccumulator(iou_thresh=0.5)
    for gb, gl, db, ds, dl in images:
        acc.add_image(db, ds, dl, gb, gl)
    ours, ref = acc.ap(), _coco_ap(images, classes)
    assert set(ours) == set(ref) and len(ref) >= 2
    for c in ref:
        assert ours[c] == pytest.approx(ref[c], abs=1e-9), (c, ours, ref)
    assert acc.map() == pytest.approx(np.mean(list(ref.values())), abs=1e-9)
    assert 0.05 < acc.map() < 0.95     # neither trivial case: the comparison means something


def _bop_add(R_e, t_e, R_g, t_g, pts):
    """bop_toolkit_lib.pose_error.add: mean distance between corresponding posed points."""
    e = pts @ R_e.T + t_e.reshape(1, 3)
    g = pts @ R_g.T + t_g.reshape(1, 3)
    return np.linalg.norm(e - g, axis=1).mean()


def _bop_adi(R_e, t_e, R_g, t_g, pts):
    """bop_toolkit_lib.pose_error.adi: mean over ground-truth-posed points of the distance to
    the closest estimate-posed point."""
    e = pts @ R_e.T + t_e.reshape(1, 3)
    g = pts @ R_g.T + t_g.reshape(1, 3)
    return cKDTree(e).query(g, k=1)[0].mean()


def test_add_and_adi_match_the_bop_toolkit_formulas():
    from nol_ros.metrics import add, add_s, adi

    rng = np.random.default_rng(3)
    pts = rng.uniform(-0.05, 0.05, (500, 3))
    for k in range(20):
        R_g = Rotation.random(random_state=k).as_matrix()
        t_g = rng.uniform([-0.2, -0.2, 0.5], [0.2, 0.2, 1.2])
        R_e = Rotation.from_rotvec(rng.normal(0, 0.2, 3)).as_matrix() @ R_g
        t_e = t_g + rng.normal(0, 0.01, 3)
        assert add(R_e, t_e, R_g, t_g, pts) == pytest.approx(_bop_add(R_e, t_e, R_g, t_g, pts),
                                                             rel=1e-12)
        assert adi(R_e, t_e, R_g, t_g, pts) == pytest.approx(_bop_adi(R_e, t_e, R_g, t_g, pts),
                                                             rel=1e-12)
        assert add_s(R_e, t_e, R_g, t_g, pts, True) <= add_s(R_e, t_e, R_g, t_g, pts, False)


def test_masked_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    from nol_ros.metrics import masked_ssim

    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 1, (64, 80, 3))
    img = np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1)
    mask = np.zeros((64, 80), bool)
    mask[10:50, 15:70] = True
    # the SSIM map of the paper's setting: Gaussian window sigma 1.5 (11 x 11), population
    # covariances, reflected borders; averaged over the mask
    _, smap = structural_similarity(ref, img, data_range=1.0, channel_axis=2, full=True,
                                    gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    want = float(smap[mask].mean())
    got = masked_ssim(img, ref, mask)
    assert got == pytest.approx(want, abs=1e-6), (got, want)
    assert 0.2 < want < 0.95
