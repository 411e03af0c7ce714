"""Tracking on REAL frames (a 37-frame piece of TUM RGB-D fr1/desk, test/data/tum_fr1_desk_piece:
320x240, undistorted, every 2nd frame of 520-594; made by tools/make_tum_test_piece.py).

The TUM reader and trajectory files; the default tracker's accuracy on the piece; time-scaled
prediction and re-localisation after 20 and 60 dropped frames; a forced loss flagged within a
few frames; the keyframe memory budget; the chain's refusal of a lost stretch; `nol-ros track`.
"""

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from nol_ros.datasets.tum import read_tum_sequence, read_tum_trajectory, write_tum_trajectory
from nol_ros.errors import ConfigError, FileFormatError
from nol_ros.metrics import align_umeyama, ate_rmse
from nol_ros.reconstruction.tracking import RgbdTracker, TrackerConfig

PIECE = Path(__file__).resolve().parent / "data" / "tum_fr1_desk_piece"
# the piece is 320x240: track at its own resolution (the default halves 640x480 input)
CFG = TrackerConfig(tracking_downscale=1)


@pytest.fixture(scope="module")
def piece():
    seq = read_tum_sequence(PIECE)
    return seq, [(f.load_rgb(), f.load_depth()) for f in seq.frames]


def test_tum_reader_and_trajectory_files(piece, tmp_path):
    seq, data = piece
    assert len(seq.frames) == 37 and (seq.intrinsics.width, seq.intrinsics.height) == (320, 240)
    assert abs(seq.intrinsics.fx - 517.3 / 2) < 1e-6           # intrinsics.json's pinhole K
    assert all(f.T_world_camera is not None for f in seq.frames)  # ground truth interpolated
    rgb, depth = data[0]
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    assert depth.dtype == np.float32 and 0.5 < np.median(depth[depth > 0]) < 3.0  # metres
    stamps = [f.stamp_ns * 1e-9 for f in seq.frames]
    poses = [f.T_world_camera for f in seq.frames]
    out = write_tum_trajectory(tmp_path / "t.txt", stamps, poses, comment="test")
    st, P = read_tum_trajectory(out)
    assert np.allclose(st, stamps, atol=1e-6) and np.allclose(P, poses, atol=1e-5)
    (tmp_path / "bad.txt").write_text("1.0 0 0 0 0 0 0\n")
    with pytest.raises(FileFormatError, match="timestamp tx ty tz qx qy qz qw"):
        read_tum_trajectory(tmp_path / "bad.txt")
    # 0 and 65535 in a depth file are both "no reading"
    d16 = cv2.imread(seq.frames[0].depth_path, cv2.IMREAD_UNCHANGED)
    d16[:10, :10] = 65535
    cv2.imwrite(str(tmp_path / "d.png"), d16)
    fr = replace(seq.frames[0], depth_path=str(tmp_path / "d.png"))
    assert np.all(fr.load_depth()[:10, :10] == 0)


def test_default_tracker_on_real_frames(piece):
    """Bar 1.5 cm ATE over the 37 frames (~45 cm of motion); measured 0.6-0.7 cm."""
    seq, data = piece
    tr = RgbdTracker(seq.intrinsics, CFG)
    for f, (rgb, d) in zip(seq.frames, data):
        tr.process(rgb, d, None, f.stamp_ns)
    assert tr.result.ok.all(), [f.message for f in tr.result.frames if not f.ok]
    ate, _ = ate_rmse(tr.result.poses, [f.T_world_camera for f in seq.frames])
    print(f"ATE {ate * 100:.2f} cm")
    assert ate < 0.015


def _playlist(n):
    """Forward, backward, forward, backward: the camera comes back to what it saw."""
    fwd, bwd = list(range(n)), list(range(n - 1, -1, -1))
    return fwd + bwd + fwd + bwd


@pytest.mark.parametrize("drop", [20, 60])
def test_relocalises_after_dropped_frames(piece, drop):
    """A gap of ``drop`` frames (0.7 / 2 s) in the stamps: the first frame after it is
    re-localised against the keyframes (not tracked from an extrapolated guess), every later
    frame is trusted, and the poses after the recovery are within 2 cm (RMSE) of the truth
    (measured 0.4-0.8 cm)."""
    seq, data = piece
    n = len(data)
    play = _playlist(n)
    gap_at = n + 3
    sent = [k for k in range(len(play)) if not (gap_at <= k < gap_at + drop)]
    tr = RgbdTracker(seq.intrinsics, CFG)
    for k in sent:
        tr.process(*data[play[k]], None, 10**18 + k * 33_333_333)
    res = tr.result.frames
    post = [j for j, k in enumerate(sent) if k >= gap_at + drop]
    assert res[post[0]].state == "relocalised", res[post[0]]
    assert all(res[j].ok for j in post), [res[j].message for j in post if not res[j].ok]
    ok = [j for j in range(len(res)) if res[j].ok]
    P = np.array([res[j].T_world_camera[:3, 3] for j in ok])
    G = np.array([seq.frames[play[sent[j]]].T_world_camera[:3, 3] for j in ok])
    A = align_umeyama(P, G)
    e = np.linalg.norm(P @ A[:3, :3].T + A[:3, 3] - G, axis=1)
    after = np.sqrt(np.mean(e[[i for i, j in enumerate(ok) if j in set(post)]] ** 2))
    print(f"drop {drop}: ATE after recovery {after * 100:.2f} cm")
    assert after <= 0.02


def test_forced_loss_is_flagged_within_three_frames_and_recovers(piece):
    seq, data = piece
    cfg = replace(CFG, relocalise=False)  # without re-localisation: stays lost
    for reloc in (False, True):
        tr = RgbdTracker(seq.intrinsics, replace(cfg, relocalise=reloc))
        rng = np.random.default_rng(0)
        states = []
        for k in range(16):
            rgb, d = data[k]
            if 8 <= k <= 10:  # the sensor is covered: a flat wall, noise for colour
                d = np.where(d > 0, 0.6, 0).astype(np.float32)
                rgb = rng.integers(0, 255, rgb.shape, dtype=np.uint8)
            r = tr.process(rgb, d, None, 10**18 + k * 33_333_333)
            states.append(r.state)
            if 8 <= k <= 10:
                assert not r.ok and r.message
        assert states[8:11] == ["failed", "failed", "lost"], states
        assert tr.lost is not reloc
        if reloc:
            assert states[11] == "relocalised" and all(s == "tracking" for s in states[12:])
        else:
            assert all(s == "lost" for s in states[11:]), states


def test_keyframe_budget(piece):
    """At most max_keyframes keyframes keep images and features (the others keep their pose
    only), so the tracker's memory does not grow with the sequence."""
    seq, data = piece
    tr = RgbdTracker(seq.intrinsics, replace(CFG, max_keyframes=3, keyframe_dist_m=0.03))
    for k in range(len(data)):
        tr.process(*data[k], None, 10**18 + k * 33_333_333)
    with_data = [kf for kf in tr.keyframes if kf["packed"] is not None]
    assert len(tr.keyframes) > 3 and len(with_data) <= 3
    assert all(kf["features"] is None for kf in tr.keyframes if kf["packed"] is None)
    # a live tracker keeps only its last results
    live = RgbdTracker(seq.intrinsics, CFG, max_results=5)
    for k in range(8):
        live.process(*data[k], None, 10**18 + k * 33_333_333)
    assert [f.index for f in live.result.frames] == [3, 4, 5, 6, 7]


def test_the_chain_refuses_a_lost_stretch(tmp_path):
    from nol_ros.selfannotate import SelfAnnotationConfig, TrackingLostError, track_sequence

    d = tmp_path / "seq"
    shutil.copytree(PIECE, d)
    seq = read_tum_sequence(d)
    for f in seq.frames[12:18]:  # six frames with almost no depth: tracking is lost there
        z = cv2.imread(f.depth_path, cv2.IMREAD_UNCHANGED)
        z[:, 20:] = 0
        cv2.imwrite(f.depth_path, z)
    cfg = SelfAnnotationConfig(tracker=replace(CFG, relocalise=False, loop_closure=False))
    with pytest.raises(TrackingLostError, match=r"frames 12-\d+") as e:
        track_sequence(seq, cfg)
    assert e.value.code == "TRACKING_LOST"
    # a short loss (under max_lost_fraction of the frames, 10 %) is not refused: those frames
    # are flagged and never used
    cfg2 = SelfAnnotationConfig(tracker=replace(CFG, loop_closure=False),
                                max_lost_fraction=0.5)  # re-localisation on: it recovers
    tr = track_sequence(seq, cfg2)
    ok = tr.result.ok
    assert (~ok[12:18]).sum() >= 3 and ok[:12].all() and ok[20:].all(), ok


def test_track_command(tmp_path):
    exe = Path(sys.executable).parent / "nol-ros"
    h = subprocess.run([str(exe), "track", "--help"], capture_output=True, text=True, timeout=60)
    assert h.returncode == 0 and "nol-ros track --dataset" in h.stdout
    out = tmp_path / "traj.txt"
    r = subprocess.run([str(exe), "track", "--dataset", str(PIECE), "--out", str(out),
                        "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "frames 37: tracked 37, lost 0" in r.stdout and "fps" in r.stdout, r.stdout
    st, P = read_tum_trajectory(out)
    seq = read_tum_sequence(PIECE)
    assert len(st) == 37
    ate, _ = ate_rmse(list(P), [f.T_world_camera for f in seq.frames])
    assert ate < 0.02  # 640x480-style default (tracking at 160x120 here): measured ~1 cm
    bad = subprocess.run([str(exe), "track", "--dataset", str(tmp_path / "nope"), "--out",
                          str(out)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_depth_downscaling_averages_valid_blocks_and_drops_edges_and_holes():
    from nol_ros.reconstruction.tracking import downscale_depth

    rng = np.random.default_rng(4)
    d = rng.uniform(0.5, 2.0, (9, 13)).astype(np.float32)
    d[rng.random(d.shape) < 0.3] = 0.0
    for s in (2, 3):
        out = downscale_depth(d, s, max_spread_m=0.5)
        assert out.shape == (9 // s, 13 // s) and out.dtype == np.float32
        for r in range(9 // s):
            for c in range(13 // s):
                b = d[r * s:(r + 1) * s, c * s:(c + 1) * s].ravel()
                v = b[b > 0]
                keep = 2 * len(v) >= s * s and v.max() - v.min() <= 0.5
                assert out[r, c] == pytest.approx(v.mean() if keep else 0.0, abs=1e-6)


def test_a_loop_check_refused_on_its_geometry_gets_no_colour_refinement(piece):
    """The colour gate of RgbdTracker._odometry: a geometric alignment the loop check refuses
    on its fitness or rmse (which colour does not change) is returned without the colour step;
    one it accepts is refined exactly as without the gate."""
    seq, data = piece
    tr = RgbdTracker(seq.intrinsics, CFG)
    for k in range(len(data)):
        tr.process(*data[k], None, seq.frames[k].stamp_ns)
    assert len(tr.keyframes) >= 3
    a, b = tr._kf_rgbd(0), tr._kf_rgbd(2)
    init = np.linalg.inv(tr.keyframes[0]["T"]) @ tr.keyframes[2]["T"]

    def odo(colour, gate=None):
        return tr._odometry(b, a, init, tr.loop_criteria, tr.loop_method, colour,
                            baseline_cap=False, colour_gate=gate)

    geometric, coloured = odo(False), odo(True)
    assert coloured[3] and not np.allclose(coloured[0], geometric[0], atol=1e-9)
    fit, rmse = geometric[1], geometric[2]
    for gate in [(fit + 0.01, 1.0), (0.0, rmse - 1e-4)]:             # refused: no colour
        T, *_, used = odo(True, gate)
        assert not used and np.array_equal(T, geometric[0])
    T, *_, used = odo(True, (fit - 0.01, rmse + 1e-4))                # accepted: as before
    assert used and np.array_equal(T, coloured[0])


def test_loop_checks_beside_the_tracking_give_the_poses_of_checks_after_it(piece, monkeypatch):
    """The offline chain (``track_frames``) starts each new keyframe's first-round loop checks
    on a worker while the tracking goes on, and runs the later rounds on ``loop_workers``
    threads. The poses and loop closures must be exactly those of a tracker that makes every
    check after the tracking, on one worker (forward and back over the piece: the camera
    comes back to the same places, so there are loops to close)."""
    from nol_ros.selfannotate import track_frames
    from nol_ros.threads import thread_settings

    seq, data = piece
    play = _playlist(len(data))[:2 * len(data)]   # forward and back
    frames = [data[k] for k in play]
    stamps = [10**18 + k * 33_333_333 for k in range(len(play))]
    submitted_at = []   # how many frames were tracked when each loop check was started
    submit = RgbdTracker._submit_loop_check

    def spy(self, *a):
        submitted_at.append(len(self.result.frames))
        return submit(self, *a)

    monkeypatch.setattr(RgbdTracker, "_submit_loop_check", spy)
    # the front ends with OpenMP teams of one, as the loop workers: a team of two may sum in
    # another order on a loaded machine, and this test compares the loop closure alone
    with thread_settings(1):
        beside = track_frames(seq.intrinsics, len(frames), lambda i: frames[i], CFG,
                              integrate=False, stamps_ns=stamps)
        assert sum(n < len(frames) for n in submitted_at) >= 10, submitted_at  # while tracking
        after = RgbdTracker(seq.intrinsics, replace(CFG, loop_workers=1))
        for k, f in enumerate(frames):
            after.process(*f, None, stamps[k])
        after.close_loops()
        after.adjust_bundle()
        after.smooth()
    print(f"{len(beside.keyframes)} keyframes, {len(submitted_at)} loop checks "
          f"({sum(n < len(frames) for n in submitted_at)} while tracking), "
          f"{len(beside.loop_closures)} loop closures")
    assert len(beside.loop_closures) >= 5
    assert after.loop_closures == beside.loop_closures
    for a, b in zip(after.result.poses, beside.result.poses, strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(ConfigError, match="loop_workers must be >= 1"):
        TrackerConfig(loop_workers=0)


def test_the_offline_chain_adjusts_the_keyframes_with_their_features_on_real_frames(piece):
    """``track_frames`` ends with the feature bundle adjustment (reconstruction/bundle.py; its
    accuracy on the whole fr1/desk is in BENCHMARKS.md): on the real piece, forward and back,
    it runs, finds landmarks seen from several keyframes, and keeps the piece's accuracy bar
    (1.5 cm ATE). Without features (re-localisation and adjustment off) it does not run."""
    from nol_ros.selfannotate import track_frames

    seq, data = piece
    play = _playlist(len(data))[:2 * len(data)]
    frames = [data[k] for k in play]
    gt = [seq.frames[k].T_world_camera for k in play]
    stages = []
    # without the smoother after it: the second adjustment below starts from the first's poses
    tr = track_frames(seq.intrinsics, len(frames), lambda i: frames[i],
                      replace(CFG, smoothing=False), integrate=False,
                      progress=lambda stage, *_: stages.append(stage))
    assert "bundle_adjustment" in stages
    kf = [k["frame"] for k in tr.keyframes]
    before = [p.copy() for p in tr.result.poses]
    res = tr.adjust_bundle()      # again, from the adjusted poses: the same landmarks
    assert res is not None and res.landmarks >= 200 and res.observations >= 2 * res.landmarks
    moved = max(np.linalg.norm(tr.result.poses[k][:3, 3] - before[k][:3, 3]) for k in kf)
    ate, _ = ate_rmse(tr.result.poses, gt)
    print(f"{res.landmarks} landmarks, {res.observations} observations, {res.pairs} pairs; "
          f"ATE {ate * 100:.2f} cm; a second adjustment moves a keyframe {moved * 1000:.2f} mm")
    assert ate < 0.015
    assert moved < 0.002     # the first one converged: the same landmarks agree with its poses
    off = RgbdTracker(seq.intrinsics, replace(CFG, relocalise=False, bundle_adjustment=False))
    for f in frames[:10]:
        off.process(*f, None, None)
    assert off.adjust_bundle() is None and all(k["features"] is None for k in off.keyframes)


def test_the_offline_chain_smooths_the_frames_on_real_frames(piece):
    """``track_frames`` ends with the motion-prior smoother (reconstruction/smoothing.py; the
    whole fr1/desk is in BENCHMARKS.md). On the real piece (every 2nd frame, 15 Hz, with its
    stamps) the frame-to-frame error against the motion capture drops (measured 0.446 ->
    0.309 cm/frame) and the accuracy does not suffer (ATE 0.476 -> 0.437 cm)."""
    from nol_ros.metrics import rpe
    from nol_ros.selfannotate import track_frames

    seq, data = piece
    gt = [f.T_world_camera for f in seq.frames]
    stamps = [f.stamp_ns for f in seq.frames]
    stages = []
    tr = track_frames(seq.intrinsics, len(data), lambda i: data[i],
                      replace(CFG, smoothing=False), integrate=False, stamps_ns=stamps,
                      progress=lambda stage, *_: stages.append(stage))
    assert "smoothing" not in stages
    before = [p.copy() for p in tr.result.poses]
    assert tr.smooth() == len(data)
    after = tr.result.poses
    r0, r1 = rpe(before, gt, 1)[0], rpe(after, gt, 1)[0]
    a0, a1 = ate_rmse(before, gt)[0], ate_rmse(after, gt)[0]
    print(f"RPE {r0 * 100:.3f} -> {r1 * 100:.3f} cm/frame, ATE {a0 * 100:.3f} -> "
          f"{a1 * 100:.3f} cm")
    assert r1 < 0.8 * r0 and a1 < a0 + 0.001
    stages.clear()
    again = track_frames(seq.intrinsics, len(data), lambda i: data[i], CFG, integrate=False,
                         stamps_ns=stamps, progress=lambda stage, *_: stages.append(stage))
    assert "smoothing" in stages
    assert np.allclose(again.result.poses, after, atol=1e-9)


def test_a_job_given_up_while_tracking_drops_its_queued_loop_checks(piece, monkeypatch):
    """Loop checks queued while tracking hold the tracker (and its TSDF); when the job stops
    early (a frame without depth here, a cancelled job in a node) the ones not yet run are
    dropped, not run for nothing. The loop worker is kept busy so that all of them are
    still queued when the bad frame comes."""
    import threading

    from nol_ros.errors import InputError
    from nol_ros.selfannotate import track_frames
    from nol_ros.threads import worker_pool

    seq, data = piece
    frames = [data[k] for k in _playlist(len(data))[:2 * len(data)]]
    futures = []
    submit = RgbdTracker._submit_loop_check

    def spy(self, *a):
        futures.append(submit(self, *a))
        return futures[-1]

    def load(i):
        rgb, depth = frames[i]
        return (rgb, np.zeros_like(depth)) if i == len(frames) - 3 else (rgb, depth)

    monkeypatch.setattr(RgbdTracker, "_submit_loop_check", spy)
    gate = threading.Event()
    busy = worker_pool(max(1, CFG.loop_workers - 1)).submit(gate.wait, 60)
    try:
        with pytest.raises(InputError, match="no valid depth"):
            track_frames(seq.intrinsics, len(frames), load, CFG, integrate=False,
                         stamps_ns=[10**18 + k * 33_333_333 for k in range(len(frames))])
        assert len(futures) >= 5 and all(f.cancelled() for f in futures)
    finally:
        gate.set()
        busy.result()


def test_the_reconstruction_gives_its_points_in_the_same_order_every_run(piece):
    """The TSDF's hash map hands its points out in an order that can change from run to run
    (it did between runs beside a test suite); the registration sees the order, so the points
    come sorted by x, then y, then z, and the same frames give the same array."""
    seq, data = piece
    clouds = []
    for _ in range(2):
        tr = RgbdTracker(seq.intrinsics, replace(CFG, block_count=4000))
        for k, f in enumerate(data):
            tr.process(*f, None, seq.frames[k].stamp_ns)
        tr.integrate_frames(lambda i: data[i])
        clouds.append(tr.extract_point_cloud())
    (p0, c0), (p1, c1) = clouds
    assert len(p0) > 1000
    assert np.array_equal(np.lexsort((p0[:, 2], p0[:, 1], p0[:, 0])), np.arange(len(p0)))
    assert np.array_equal(p0, p1) and np.array_equal(c0, c1)
