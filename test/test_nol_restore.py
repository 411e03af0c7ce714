"""The restorer, the last step of a NOL render: it starts as the identity, runs on the
silhouette's box exactly as on the whole image, is applied by NolRenderer.render for method
"nol" only (and can be switched off), survives a checkpoint round trip, and its training
undoes a known blur on held-out images. The blend's cues (colour spread, distance to the
sources' silhouette edges) reach it from both render paths and let it fix what colour alone
cannot point to."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from nol_ros.errors import ConfigError, InputError, NolError
from nol_ros.nol.config import NolConfig
from nol_ros.nol.evaluate import evaluate_renderer, make_case, score
from nol_ros.nol.network import NolNet, Restorer, load_checkpoint, save_checkpoint
from nol_ros.nol.projection import mask_edge_map
from nol_ros.nol.renderer import (
    NolRenderer,
    RefineConfig,
    RenderConfig,
    blend_cues,
    composite,
    restore_image,
)
from nol_ros.nol.restore import (
    RestoreTrainConfig,
    _load,
    attach,
    evaluate_restorer,
    make_case_pairs,
    material_texture,
    train_restorer,
)

NONE = RefineConfig(method="none")


@pytest.fixture(scope="module")
def case():
    from nol_ros.datasets.synthetic.objects import make_object

    return make_case(make_object(3, 0), seed=2, n_targets=2, crop=128)


def _image(seed=0, size=80):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[20:60, 15:50] = True
    rgb[~mask] = 0
    return rgb, mask


def test_a_new_restorer_is_the_identity_and_the_box_equals_the_whole_image():
    rgb, mask = _image()
    r = Restorer(8, 4)
    assert np.array_equal(restore_image(r, rgb, mask), rgb)
    torch.manual_seed(0)
    for p in r.parameters():
        torch.nn.init.normal_(p, std=0.2)
    boxed = restore_image(r, rgb, mask)
    assert not np.array_equal(boxed, rgb)
    with torch.no_grad():
        whole = r(torch.as_tensor(rgb).permute(2, 0, 1)[None].float() / 255,
                  torch.as_tensor(mask)[None, None].float())[0].permute(1, 2, 0).numpy()
    whole = np.round(whole * 255).astype(np.uint8)
    assert np.abs(boxed.astype(int) - whole.astype(int)).max() <= 1
    assert not boxed[~mask].any()   # nothing leaks off the object
    with pytest.raises(InputError, match="Restorer wants"):
        r(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8))


def _net_with_bias(bias: float) -> NolNet:
    net = NolNet(NolConfig.preset("cpu"), device="cpu").eval()
    r = Restorer(4, 3)
    with torch.no_grad():
        r.body[-1].bias.fill_(bias)
    return attach(net, r)


def test_render_runs_the_restorer_for_nol_only_and_it_can_be_switched_off(case):
    net = _net_with_bias(0.1)
    T, intr = case.T_targets[0], case.intr_targets[0]
    on, m = NolRenderer(case.mesh, case.sources, net,
                        RenderConfig(refine=NONE, restore=True)).render(T[None], intr)
    off, m2 = NolRenderer(case.mesh, case.sources, net,
                          RenderConfig(refine=NONE, restore=False)).render(T[None], intr)
    assert np.array_equal(m, m2) and m.any()
    d = on[0].astype(int) - off[0].astype(int)
    unclipped = m[0] & (off[0] < 200).all(-1)
    assert np.all(np.abs(d[unclipped] - 25.5) <= 1.0)   # +0.1 everywhere on the object
    assert not on[0][~m[0]].any()
    ibr = NolRenderer(case.mesh, case.sources, None,
                      RenderConfig(method="ibr_angle", refine=NONE)).render(T[None], intr)[0]
    ibr_net = NolRenderer(case.mesh, case.sources, net,
                          RenderConfig(method="ibr_angle", refine=NONE, restore=True)
                          ).render(T[None], intr)[0]
    assert np.array_equal(ibr, ibr_net)


def test_the_evaluation_scores_what_render_returns(case):
    """bench/bench_nol.py scores through evaluate_renderer: its images are render's, restorer
    included, and its PSNR is theirs."""
    net = _net_with_bias(0.1)
    on = NolRenderer(case.mesh, case.sources, net, RenderConfig(refine=NONE, restore=True))
    off = NolRenderer(case.mesh, case.sources, net, RenderConfig(refine=NONE, restore=False))
    e_on, e_off = evaluate_renderer(on, case, NONE), evaluate_renderer(off, case, NONE)
    for e, r in ((e_on, on), (e_off, off)):
        for T, intr, img, gt, gm, (psnr, _) in zip(case.T_targets, case.intr_targets,
                                                   e["images"], case.gt_rgb, case.gt_mask,
                                                   e["per_target"]):
            assert np.array_equal(img, r.render(T[None], intr)[0][0])
            assert psnr == pytest.approx(score(img.astype(np.float32) / 255, gt, gm)[0])
    assert abs(e_on["psnr"] - e_off["psnr"]) > 0.5


def test_checkpoints_keep_the_restorer_and_old_ones_load_without(tmp_path):
    net = _net_with_bias(0.05)
    save_checkpoint(net, tmp_path / "with.pt", note="x")
    back, extra = load_checkpoint(tmp_path / "with.pt", "cpu")
    assert extra["note"] == "x" and back.config.restore_filters == 4
    assert torch.equal(back.restorer.body[-1].bias, net.restorer.body[-1].bias)
    plain = NolNet(NolConfig.preset("cpu"), device="cpu")
    assert plain.restorer is None
    save_checkpoint(plain, tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt", "cpu")[0].restorer is None
    # fine-tuning works on a copy of the whole network, the restorer included
    assert attach(plain, back.restorer).restorer is not back.restorer


def _blurred_pairs(seeds):
    out = []
    for s in seeds:
        rng = np.random.default_rng(s)
        gt = np.zeros((64, 64, 3), np.float32)
        for _ in range(12):   # sharp-edged rectangles of random colours
            y, x = rng.integers(0, 56, 2)
            h, w = rng.integers(4, 24, 2)
            gt[y:y + h, x:x + w] = rng.uniform(0, 1, 3)
        m = np.zeros((64, 64), bool)
        m[4:60, 4:60] = True
        gt[~m] = 0
        blur = cv2.GaussianBlur(gt, (0, 0), 1.0)
        blur[~m] = 0
        t = torch.as_tensor(np.round(blur * 255) / 255).permute(2, 0, 1).float()
        g = torch.as_tensor(np.round(gt * 255) / 255).permute(2, 0, 1).float()
        mt = torch.as_tensor(m)[None].float()
        out.append((t, g, mt, mt, None))
    return out


def test_training_undoes_a_known_blur_on_held_out_images():
    cfg = RestoreTrainConfig(cases=2, filters=12, layers=4, cues=0, steps=300, batch=4,
                             patch=48)
    r, info = train_restorer(_blurred_pairs(range(40)), cfg, log=lambda *_: None)
    before, after = evaluate_restorer(r, _blurred_pairs(range(100, 110)))
    assert after > before + 1.0, (before, after)
    assert info["train_s"] > 0


def test_bad_restorer_settings_are_named():
    with pytest.raises(ConfigError, match="restore_filters"):
        dataclasses.replace(NolConfig.preset("cpu"), restore_filters=-1)
    with pytest.raises(ConfigError, match="restore training"):
        RestoreTrainConfig(steps=0)
    with pytest.raises(ConfigError, match="material_cases 0 or >= 2"):
        RestoreTrainConfig(material_cases=1)
    with pytest.raises(ConfigError, match="pair kind 'photo'"):
        make_case_pairs(None, 0, "photo")


def test_material_textures_cover_black_white_and_photographs():
    """What the procedural generator lacks and the real scans have: near-black and near-white
    flat materials, and photographs (many distinct colours, strong edges)."""
    rng = np.random.default_rng(0)
    tex = [material_texture(rng, 64) for _ in range(60)]
    assert all(t.shape == (64, 64, 3) and t.dtype == np.uint8 for t in tex)
    means = np.array([t.mean() for t in tex])
    assert (means < 40).sum() >= 5 and (means > 190).sum() >= 3, np.sort(means)
    flat = [t for t in tex if t.std() < 8]
    photo = [t for t in tex if np.abs(np.diff(t.astype(int), axis=1)).mean() > 6]
    assert len(flat) >= 10 and len(photo) >= 10, (len(flat), len(photo))
    again = material_texture(np.random.default_rng(0), 64)
    assert np.array_equal(again, tex[0])   # deterministic by the generator



def test_mask_edge_map_is_the_clipped_distance_to_the_silhouette_edge():
    m = np.zeros((40, 40), bool)
    m[5:35, 0:30] = True          # touches the crop's left border
    e = mask_edge_map(m, 8.0)
    assert e.dtype == np.float32 and not e[~m].any()
    assert e[20, 15] == 1.0                                   # > 8 px from any edge
    assert e[5, 15] == pytest.approx(1 / 8) and e[6, 15] == pytest.approx(2 / 8)
    assert e[20, 0] == pytest.approx(1 / 8)                   # the crop border is an edge
    assert e[20, 29] == pytest.approx(1 / 8)
    with pytest.raises(InputError, match="reach_px"):
        mask_edge_map(m, 0)


def test_blend_cues_are_the_weighted_colour_spread_and_edge_distance():
    H = W = 3
    colour = torch.zeros(2, 3, H, W)
    colour[0] = 0.2
    colour[1] = 0.6
    edge = torch.stack([torch.full((1, H, W), 0.25), torch.full((1, H, W), 1.0)])
    w = torch.full((2, 1, H, W), 0.5)
    w[:, :, 0, 0] = torch.tensor([1.0, 0.0])[:, None]       # one source only: no spread
    w[:, :, 2, 2] = 0                                         # no source sees it
    blended = (w * colour).sum(0)
    c = blend_cues(colour, edge, w, blended)
    assert c.shape == (2, H, W)
    assert c[0, 1, 1] == pytest.approx(0.2) and c[1, 1, 1] == pytest.approx(0.625)
    assert c[0, 0, 0] == pytest.approx(0.0) and c[1, 0, 0] == pytest.approx(0.25)
    assert c[:, 2, 2].abs().max() == 0


def test_a_restorer_with_cues_wants_them_and_boxes_them_like_the_colour():
    rgb, mask = _image()
    cues = np.random.default_rng(1).uniform(0, 1, (2, *mask.shape)).astype(np.float32)
    cues[:, ~mask] = 0
    r = Restorer(8, 3, cues=2)
    torch.manual_seed(0)
    for p in r.parameters():
        torch.nn.init.normal_(p, std=0.2)
    with pytest.raises(InputError, match="wants cues"):
        restore_image(r, rgb, mask)
    boxed = restore_image(r, rgb, mask, cues)
    with torch.no_grad():
        whole = r(torch.as_tensor(rgb).permute(2, 0, 1)[None].float() / 255,
                  torch.as_tensor(mask)[None, None].float(),
                  torch.as_tensor(cues)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(boxed.astype(int) - np.round(whole * 255).astype(int)).max() <= 1
    assert not np.array_equal(boxed, restore_image(r, rgb, mask, cues[::-1].copy()))


@pytest.mark.parametrize("crop", [128, 256])   # the network's own size / hybrid colour
def test_render_gives_a_cue_restorer_the_cues_of_the_blend(crop):
    from nol_ros.datasets.synthetic.objects import make_object

    case = make_case(make_object(3, 0), seed=2, n_targets=1, crop=crop)
    net = NolNet(NolConfig.preset("cpu"), device="cpu").eval()
    r = Restorer(4, 3, cues=2)
    torch.manual_seed(1)
    for p in r.parameters():
        torch.nn.init.normal_(p, std=0.3)
    net = attach(net, r)
    assert net.config.restore_cues == 2
    srcs = [s for s in case.sources if s.mask.any()]   # an occluded view may show nothing
    ren = NolRenderer(case.mesh, srcs, net, RenderConfig(refine=NONE, restore=True))
    assert ren.hybrid == (crop == 256)
    T, intr = case.T_targets[:1], case.intr_targets[0]
    res = ren.render_detailed(T, intr, cues=True)
    assert ren.render_detailed(T, intr).cues is None
    c, om = res.cues[0], res.object_mask[0]
    assert c.shape == (2, *om.shape) and not c[:, ~om].any()
    assert 0 <= c.min() and c.max() <= 1 + 1e-6
    assert c[1][res.mask[0]].mean() > 0.3 and c[0][res.mask[0]].max() > 0
    out, m = ren.render(T, intr)
    want = restore_image(net.restorer, composite(res)[0], om, c)
    assert np.array_equal(m[0], om) and np.array_equal(out[0], want)
    assert not np.array_equal(out[0], composite(res)[0])


def _marked_pairs(seeds, shift=0.25):
    """The colour is off by ``shift`` in blobs the edge cue marks (as a source's silhouette
    edge would): only a restorer that sees the cues can tell which pixels to correct."""
    out = []
    for s in seeds:
        rng = np.random.default_rng(s)
        gt = rng.uniform(0.1, 0.7, (3, 1, 1)) * np.ones((3, 48, 48))
        gt += rng.uniform(-0.1, 0.1, (3, 48, 48))
        bad = cv2.GaussianBlur(rng.uniform(0, 1, (48, 48)).astype(np.float32), (0, 0), 3)
        bad = bad > np.quantile(bad, 0.7)
        x = gt + shift * bad
        cues = np.stack([np.zeros((48, 48)), np.where(bad, 0.1, 1.0)])
        m = torch.ones(1, 48, 48)
        out.append((torch.as_tensor(x).float(), torch.as_tensor(gt).float(), m, m,
                    torch.as_tensor(cues).float()))
    return out


def test_the_cues_let_training_correct_what_the_colour_alone_cannot_point_to():
    after = {}
    for cues in (0, 2):
        cfg = RestoreTrainConfig(cases=2, filters=8, layers=3, cues=cues, steps=300, batch=4,
                                 patch=32, gain_range=(1.0, 1.0))
        r, _ = train_restorer(_marked_pairs(range(30)), cfg, log=lambda *_: None)
        before, after[cues] = evaluate_restorer(r, _marked_pairs(range(100, 106)))
    assert after[2] > after[0] + 3.0 and after[2] > before + 5.0, (before, after)


def test_pair_caches_from_before_the_cues_are_named(tmp_path):
    z = np.zeros((1, 8, 8, 3), np.uint8)
    m = np.ones((1, 8, 8), bool)
    np.savez(tmp_path / "case_00000.npz", rgb=z, gt=z, gt_mask=m, mask=m)
    with pytest.raises(NolError, match="--pairs"):
        _load([tmp_path / "case_00000.npz"])
    assert _load([tmp_path / "case_00000.npz"], cues=False)[0][4] is None
    with pytest.raises(ConfigError, match="cues 0 or 2"):
        RestoreTrainConfig(cues=1)
    with pytest.raises(ConfigError, match="restore_cues"):
        dataclasses.replace(NolConfig.preset("cpu"), restore_cues=3)
