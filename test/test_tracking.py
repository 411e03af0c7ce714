"""RGB-D tracker on frames of the small synthetic preset: the TF odometry prior is used, and a
frame that fails tracking is flagged (with the reason), keeps a prediction, and is neither
integrated into the TSDF nor trusted for the next prediction."""

import numpy as np
import pytest

from nol_ros.datasets.bop import read_bop_scene
from nol_ros.errors import InputError
from nol_ros.geometry import rotation_error_deg
from nol_ros.reconstruction.tracking import RgbdTracker, TrackerConfig

pytestmark = pytest.mark.slow  # needs the small synthetic world (session fixture)


def _rel(T0, T):
    return np.linalg.inv(T0) @ T


def test_odometry_prior_bridges_a_large_gap(small_world):
    """Frames 24 deg / ~0.37 m apart: with the (here exact) odometry as prior the tracker lands
    within 1 cm / 1 deg; without it, it does not (measured: it converges to a wrong minimum,
    the table sliding on itself, with fitness 0.46 and inlier RMSE 3 mm, which the checks do
    not catch -- so frames must come at video rate or with odometry)."""
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    frames = [seq.frames[i] for i in (0, 6, 12)]
    gt = [f.T_world_camera for f in frames]
    cfg = TrackerConfig(loop_closure=False)
    plain = RgbdTracker(seq.intrinsics, cfg)
    prior = RgbdTracker(seq.intrinsics, cfg)
    for f, G in zip(frames, gt):
        rgb, depth = f.load_rgb(), f.load_depth()
        plain.process(rgb, depth)
        prior.process(rgb, depth, T_odom_camera=G)
    r = plain.result.frames[1]
    E = _rel(_rel(gt[0], gt[1]), r.T_world_camera)
    assert (not r.ok) or np.linalg.norm(E[:3, 3]) > 0.05  # the prior is what makes it work
    for k in (1, 2):
        T = prior.result.frames[k]
        assert T.ok, T.message
        E = _rel(_rel(gt[0], gt[k]), T.T_world_camera)  # tracker world = first camera
        assert np.linalg.norm(E[:3, 3]) < 0.01 and rotation_error_deg(E, np.eye(4)) < 1.0


def test_failed_frame_is_flagged_and_not_used(small_world):
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    tr = RgbdTracker(seq.intrinsics, TrackerConfig(loop_closure=False, integrate_every=1))
    loaded = {}
    for k in range(6):
        rgb, depth = seq.frames[k].load_rgb(), seq.frames[k].load_depth()
        if k == 3:  # a garbage frame: a flat wall 0.5 m away and noise for colour
            depth = np.where(depth > 0, 0.5, 0).astype(np.float32)
            rgb = np.random.default_rng(0).integers(0, 255, rgb.shape, dtype=np.uint8)
        loaded[k] = (rgb, depth)
        tr.process(rgb, depth)
    res = tr.result.frames
    assert not res[3].ok and res[3].message and not res[3].keyframe
    assert all(res[k].ok for k in (0, 1, 2, 4, 5)), [f.message for f in res]
    # the frame after the failure is tracked correctly (prediction from the good frames)
    G0 = seq.frames[0].T_world_camera
    E = _rel(_rel(G0, seq.frames[5].T_world_camera), res[5].T_world_camera)
    assert np.linalg.norm(E[:3, 3]) < 0.01
    n = tr.integrate_frames(lambda i: loaded[i])
    assert n == 5  # the failed frame is not integrated
    with pytest.raises(InputError, match="does not match the intrinsics"):
        tr.process(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.float32))


def test_a_finished_tracker_is_freed_without_the_cyclic_gc(small_world):
    """A tracker holds its TSDF (~600 MB at the default block_count). close_loops used to keep
    a closure over the tracker on the tracker (a reference cycle): only Python's cyclic GC freed
    it, which an idle node runs rarely, so the view_selection node kept one TSDF per finished
    SelectViews job (+630 MB per job, the whole-graph soak bench/soak_all.py). Dropping the
    last reference must free it at once."""
    import gc
    import weakref

    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    tr = RgbdTracker(seq.intrinsics, TrackerConfig(block_count=2000))
    for f in seq.frames:
        tr.process(f.load_rgb(), f.load_depth(), T_odom_camera=f.T_world_camera)
    assert len(tr.keyframes) >= 4   # else close_loops returns before the loop search
    tr.close_loops()
    alive = weakref.ref(tr)
    gc.collect()
    gc.disable()
    try:
        del tr
        assert alive() is None, [type(r).__name__ for r in gc.get_referrers(alive())]
    finally:
        gc.enable()


def test_on_a_geometry_colour_conflict_the_pose_nearer_the_prediction_wins(small_world):
    """Frames 1 and 6 from a prediction ~1 cm / 0.6 deg off: point-to-plane alone slides
    1.1 cm along the table (measured), the colour refinement lands within 1 mm. With
    the colour caps at zero every refinement is a conflict, and with an odometry prediction
    the tie-break must keep the colour pose (the one nearer the prediction), not the geometric
    one."""
    from nol_ros.geometry import se3_exp

    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    fa, fb = seq.frames[1], seq.frames[6]
    truth = np.linalg.inv(fa.T_world_camera) @ fb.T_world_camera
    rng = np.random.default_rng(0)
    init = truth @ se3_exp(np.r_[rng.normal(0, 0.01, 3), rng.normal(0, 0.01, 3)])

    def align(cfg, from_odometry=True):
        tr = RgbdTracker(seq.intrinsics, cfg)
        _, small_a = tr._images(fa.load_rgb(), fa.load_depth())
        _, small_b = tr._images(fb.load_rgb(), fb.load_depth())
        T, _, _, colour_used = tr._odometry(small_b, small_a, init, tr.criteria[:3], tr.method,
                                            cfg.method == "geometry_then_colour",
                                            prefer_prediction=from_odometry)
        return T, colour_used

    def off_m(T):
        return float(np.linalg.norm((np.linalg.inv(truth) @ T)[:3, 3]))

    geometric, _ = align(TrackerConfig(loop_closure=False, method="point_to_plane"))
    strict = TrackerConfig(loop_closure=False, colour_max_shift_m=0.0, colour_max_shift_deg=0.0,
                           colour_max_shift_fraction=0.0)
    chosen, colour_used = align(strict)
    assert off_m(geometric) > 0.005   # the situation the tie-break is for
    assert colour_used and off_m(chosen) < 0.002, (off_m(chosen), off_m(geometric))
    # a prediction not from odometry referees nothing: the geometric pose stays
    kept, colour_used = align(strict, from_odometry=False)
    assert not colour_used and np.allclose(kept, geometric, atol=1e-6)


def test_a_pose_that_disagrees_with_the_odometry_is_not_trusted(small_world):
    """With an odometry prior, a correction beyond odometry_check_m + 3 % of the odometry's
    motion is not trusted: frame 2's odometry is shifted 5 cm (a wheel slip), the images say
    otherwise, so the frame is flagged and gets no trusted pose; the frames around it are
    tracked. With the check opened up (odometry_check_m = max_step_m) the same frame passes."""
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    frames = seq.frames[:4]
    odom = [f.T_world_camera.copy() for f in frames]
    odom[2][:3, 3] += np.array([0.05, 0.0, 0.0])

    def run(cfg):
        tr = RgbdTracker(seq.intrinsics, cfg)
        for f, T in zip(frames, odom):
            tr.process(f.load_rgb(), f.load_depth(), T, f.stamp_ns)
        return tr.result.frames

    res = run(TrackerConfig(loop_closure=False))
    assert [r.ok for r in res] == [True, True, False, True], [r.message for r in res]
    assert "too large" in res[2].message or "odometry" in res[2].message, res[2].message
    loose = run(TrackerConfig(loop_closure=False, odometry_check_m=0.2, odometry_check_deg=20))
    assert all(r.ok for r in loose), [r.message for r in loose]


def _track(seq, frames, cfg):
    """Vision alone (no odometry), frames with their stamps: [(result, cm from the truth)]."""
    tr = RgbdTracker(seq.intrinsics, cfg)
    G0 = seq.frames[0].T_world_camera
    out = []
    for i in frames:
        f = seq.frames[i]
        r = tr.process(f.load_rgb(), f.load_depth(), None, f.stamp_ns)
        E = _rel(_rel(G0, f.T_world_camera), r.T_world_camera)
        out.append((r, float(np.linalg.norm(E[:3, 3])) * 100))
    return out


def test_without_odometry_a_pose_tracked_over_a_gap_is_checked_by_relocalisation(small_world):
    """Vision alone over skipped frames (the live node when it cannot keep up) the alignment
    can settle in a false minimum that passes every check. Measured on these frames: frame 17
    (5 frames after 12) lands 6.2 cm off and is trusted without the check; re-localisation
    (ORB + PnP, a start independent of the motion prediction) lands 0.1 cm off, and wins."""
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    frames = [0, 2, 6, 10, 12, 17]
    unchecked = _track(seq, frames, TrackerConfig(loop_closure=False, verify_after_gap_s=-1))
    r, cm = unchecked[-1]
    assert r.ok and cm > 3.0, (r.state, cm)       # the situation the check is for
    checked = _track(seq, frames, TrackerConfig(loop_closure=False))
    assert all(cm < 1.0 for r, cm in checked if r.ok), [(r.state, cm) for r, cm in checked]
    r, cm = checked[-1]
    assert r.ok and r.state == "relocalised" and "re-localised one" in r.message, r.message


def test_without_odometry_an_unverifiable_pose_is_not_trusted(small_world):
    """Frames 0, 12, 24 (~50 deg apart, no odometry): frame 12 lands 66 cm off (the table
    sliding on itself) and re-localisation cannot check it (one keyframe, another view): it
    is not trusted, says why, and is not a keyframe. Without the check it was trusted."""
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    unchecked = _track(seq, [0, 12, 24], TrackerConfig(loop_closure=False, verify_after_gap_s=-1))
    assert unchecked[1][0].ok and unchecked[1][1] > 5.0
    checked = _track(seq, [0, 12, 24], TrackerConfig(loop_closure=False))
    r = checked[1][0]
    assert not r.ok and r.state == "unverified" and not r.keyframe
    assert "not verified" in r.message, r.message
    assert all(cm < 1.0 for r, cm in checked if r.ok), [(r.state, cm) for r, cm in checked]


def test_the_odometry_check_grows_by_3_percent_of_the_motion(small_world):
    """Frames 0, 6, 12 with odometry, frame 12's shifted 2.5 cm (a slip) over a 31 cm move: the
    check allows 1 cm + 3 % of the move = 1.9 cm, so the frame is refused although the images
    are right here -- the price of catching false minima over long gaps (measured offline on
    the demo world with drifting odometry and 3-15 frames skipped: at 10 % 7 of 16 trials
    trusted poses more than 2 cm off, at 3 % none, with 2 of 230 frames refused). At 10 % the
    same frame passes."""
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    frames = [seq.frames[i] for i in (0, 6, 12)]
    odom = [f.T_world_camera.copy() for f in frames]
    odom[2][:3, 3] += np.array([0.0, 0.025, 0.0])

    def run(cfg):
        tr = RgbdTracker(seq.intrinsics, cfg)
        return [tr.process(f.load_rgb(), f.load_depth(), T, f.stamp_ns)
                for f, T in zip(frames, odom)]

    res = run(TrackerConfig(loop_closure=False))
    assert [r.ok for r in res] == [True, True, False], [r.message for r in res]
    assert "odometry" in res[2].message, res[2].message
    loose = run(TrackerConfig(loop_closure=False, odometry_check_fraction=0.1))
    assert all(r.ok for r in loose), [r.message for r in loose]


def test_frames_without_stamps_are_one_thirtieth_of_a_second_apart(small_world):
    """Without stamps a frame's time is its index at 30 Hz, for the motion prediction as for
    the trusted frames it extrapolates from. The prediction took its "now" from the frame
    counter after it had been advanced: consecutive frames looked 2/30 s apart, the constant
    velocity was extrapolated over two frames and every frame passed the 0.05 s gap after
    which vision alone is verified by re-localisation. The same frames with 30 Hz stamps see
    the same gaps."""
    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001")
    frames = seq.frames[:4]

    def gaps(stamped: bool) -> list[float]:
        tr = RgbdTracker(seq.intrinsics, TrackerConfig(loop_closure=False))
        seen = []
        predict = tr._predict

        def spy(odom, t_now):
            T, gap = predict(odom, t_now)
            seen.append(gap)
            return T, gap

        tr._predict = spy
        t0 = frames[0].stamp_ns
        for k, f in enumerate(frames):
            r = tr.process(f.load_rgb(), f.load_depth(), None,
                           t0 + k * 33_333_333 if stamped else None)
            assert r.ok, r.message
        return seen

    plain = gaps(False)
    assert np.allclose(plain, 1 / 30, atol=1e-6), plain
    assert np.allclose(gaps(True), plain, atol=1e-6)
