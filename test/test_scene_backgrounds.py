"""Detector backgrounds from the robot's own frames: the learnt objects are removed (their masks
of every object learnt from the same recording, joined), frames without a mask of some learnt
object are left out, and the detector set uses them for its share of images."""

import json

import cv2
import numpy as np
import pytest

from nol_ros.camera import Intrinsics
from nol_ros.datasets.bop import BopSceneWriter
from nol_ros.errors import FileFormatError, InputError
from nol_ros.recognition.detset import DetectionSetConfig, compose_image, write_detection_set
from nol_ros.recognition.scenes import SceneBackgrounds, ScenePool
from nol_ros.recognition.trainset import PasteSample

INTR = Intrinsics(100.0, 100.0, 63.5, 47.5, 128, 96)
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _frame(k):
    """A green-grey gradient room with a red object at (20..50, 30..60) and a blue one at
    (80..110, 40..70); both masks."""
    x = np.linspace(60, 160, 128)[None, :, None]
    img = np.broadcast_to(x * np.array([0.6, 1.0, 0.7]), (96, 128, 3)).astype(np.uint8).copy()
    red = np.zeros((96, 128), bool)
    red[30:60, 20 + k:50 + k] = True
    blue = np.zeros((96, 128), bool)
    blue[40:70, 80:110] = True
    img[red], img[blue] = RED, BLUE
    return img, red, blue


def _workspaces(tmp_path, missing_blue_frame=None):
    """Two learnt-object workspaces of the same recording (each its own copy of the sequence,
    as LearnObject writes them), each with its object's masks."""
    out = []
    for name, which in (("red", 1), ("blue", 2)):
        ws = tmp_path / name
        masks = ws / "objects" / name / "masks"
        masks.mkdir(parents=True)
        with BopSceneWriter(ws / "sequence", INTR) as w:
            for k in range(4):
                img, red, blue = _frame(k)
                w.add_frame(k, img, np.ones((96, 128)), stamp_ns=1000 + k)
                if name == "blue" and k == missing_blue_frame:
                    continue
                m = red if which == 1 else blue
                cv2.imwrite(str(masks / f"{k:06d}.png"), m.astype(np.uint8) * 255)
        out.append(ws)
    return out


def _colour_pixels(img, colour, tol=60):
    return int((np.abs(img.astype(int) - colour).sum(-1) < tol).sum())


def test_learnt_objects_are_removed_and_frames_without_masks_left_out(tmp_path):
    ws = _workspaces(tmp_path, missing_blue_frame=2)
    bg = SceneBackgrounds.from_workspaces(ws, width=128, step=1, dilate_px=2)
    # one recording (same stamps) -> masks joined; frame 2 has no blue mask -> left out
    assert [s.rsplit(":", 1)[1] for s in bg.sources] == ["0", "1", "3"]
    for img, k in zip(bg.images, (0, 1, 3)):
        orig, red, blue = _frame(k)
        assert img.shape == (96, 128, 3)
        assert _colour_pixels(orig, RED) > 800 and _colour_pixels(orig, BLUE) > 800
        # neither object is left in the background (inpainted from the room around it) ...
        assert _colour_pixels(img, RED) == 0 and _colour_pixels(img, BLUE) == 0
        # ... and the room is kept as it was away from them
        far = ~cv2.dilate((red | blue).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        assert np.abs(img[far].astype(int) - orig[far]).max() <= 2
    # a single workspace: its object removed, the other (unknown to it) stays
    one = SceneBackgrounds.from_workspaces(ws[:1], width=128, step=2)
    assert len(one.images) == 2 and _colour_pixels(one.images[0], BLUE) > 800


def test_scene_views_and_the_detection_set_use_them(tmp_path):
    bg = SceneBackgrounds.from_workspaces(_workspaces(tmp_path), width=128, step=1)
    rng = np.random.default_rng(0)
    v = bg.background(rng, 48, 64)
    assert v.shape == (48, 64, 3) and v.dtype == np.uint8
    # a dark grey square object cut-out to paste
    s = PasteSample(1, np.full((20, 20, 3), 40, np.uint8), np.ones((20, 20), bool), 100.0, 0.7)
    cfg = DetectionSetConfig(n_images=6, width=64, height=48, focal_px=50.0, n_backgrounds=2,
                             objects=(1, 1), distractors=(0, 0), occluders=(0, 0),
                             scene_bg_prob=1.0)
    from nol_ros.recognition.augment import BackgroundPool

    pool = BackgroundPool(2, 0, size=64)
    room = np.array([0.6, 1.0, 0.7])
    for i in range(3):
        img, anns = compose_image({1: [s]}, ScenePool(pool, bg, cfg.scene_bg_prob), cfg,
                                  np.random.default_rng([1, i]))
        assert len(anns) == 1
        x, y, w, h = anns[0]["bbox"]
        keep = np.ones(img.shape[:2], bool)
        keep[y:y + h, x:x + w] = False
        # the background is the room: its green-grey colour, not a random texture
        c = img[keep].reshape(-1, 3).mean(0)
        assert np.allclose(c / c[1], room, atol=0.15), c
    summ = write_detection_set({1: [s]}, tmp_path / "d", cfg, scenes=bg)
    coco = json.loads((tmp_path / "d" / "annotations.json").read_text())
    assert summ["scene_backgrounds"] == coco["info"]["scene_backgrounds"] == len(bg.images) == 4
    assert len(coco["images"]) == 6 and len(coco["annotations"]) == 6


def test_bad_scene_input_is_named(tmp_path):
    with pytest.raises(FileFormatError, match="not a learnt-object workspace"):
        SceneBackgrounds.from_workspaces([tmp_path / "nothing"])
    ws = _workspaces(tmp_path)
    with pytest.raises(InputError, match="step"):
        SceneBackgrounds.from_workspaces(ws, step=0)
    for p in (ws[1] / "objects" / "blue" / "masks").iterdir():
        p.unlink()
    (ws[1] / "objects" / "blue" / "masks" / "000000.png").write_bytes(b"not a png")
    with pytest.raises(FileFormatError, match="unreadable"):
        SceneBackgrounds.from_workspaces(ws, step=1)
    (ws[1] / "objects" / "blue" / "masks" / "000000.png").unlink()
    # every frame lacks the blue object's mask: nothing can be used
    with pytest.raises(InputError, match="no scene backgrounds"):
        SceneBackgrounds.from_workspaces(ws, step=1)
    with pytest.raises(Exception, match="scene_bg_prob"):
        DetectionSetConfig(scene_bg_prob=1.5)


def test_scene_pool_zooms_and_is_the_plain_pool_without_scenes(tmp_path):
    from nol_ros.recognition.augment import BackgroundPool

    bg = SceneBackgrounds.from_workspaces(_workspaces(tmp_path), width=128, step=1)
    pool = BackgroundPool(2, 0, size=64)
    same = ScenePool(pool, None, 1.0).background(np.random.default_rng(3), 32, 32)
    assert np.array_equal(same, pool.background(np.random.default_rng(3), 32, 32))
    # a pose crop's background: a window of an object's size (the room's gradient spans a
    # fraction of its full 100 grey levels across a 2.5-5x zoomed 32 px window)
    crop = ScenePool(pool, bg, 1.0, zoom=(2.5, 5.0)).background(np.random.default_rng(4), 32, 32)
    wide = bg.background(np.random.default_rng(4), 32, 32, zoom=(1.0, 1.0))
    span = lambda im: float(np.ptp(im[..., 1].mean(0)))   # noqa: E731
    assert span(crop) < 0.6 * span(wide), (span(crop), span(wide))
    with pytest.raises(InputError, match="probability"):
        ScenePool(pool, bg, 2.0)
