"""Real-sensor effects of the synthetic world (nol_ros/datasets/synthetic/sensor.py options):
depth/colour misregistration, auto-exposure jumps, holes at depth edges, 65535 as invalid depth,
dropped frames and stamp jitter. Each is off by default (the small/demo presets and their tests
are unchanged) and on in the ``full`` preset; here they are checked one by one on the sensor
model, then together in a short generated sequence that the tracker must still follow."""

from dataclasses import replace

import cv2
import numpy as np

from nol_ros.datasets.synthetic.generate import PRESETS, Preset, generate
from nol_ros.datasets.synthetic.sensor import SensorConfig, XtionSensor

ALL_ON = SensorConfig(misregistration_px=(2.0, 1.0), auto_exposure_jump_prob=0.3,
                      edge_hole_px=2, saturated_fraction=0.5, drop_frame_prob=0.25,
                      stamp_jitter_ms=1.5)


def _box_depth():
    z = np.full((120, 160), 1.5)
    z[40:80, 60:100] = 1.0  # a box in front of a wall
    return z


def test_each_effect_on_the_sensor_model():
    z = _box_depth()
    plain = XtionSensor(SensorConfig(), np.random.default_rng(0))
    d0 = plain.depth(z)
    assert plain.saturated_mask(d0) is None and not plain.drop_frame() and plain.jitter_ns() == 0
    # misregistration: the depth image is shifted by (dx, dy) = (2, 1) px against the colour
    shifted = XtionSensor(SensorConfig(misregistration_px=(2.0, 1.0)),
                          np.random.default_rng(0)).depth(z)
    near0, near1 = d0 < 1.2, shifted < 1.2
    ys, xs = np.nonzero(near0 & (d0 > 0))
    ys1, xs1 = np.nonzero(near1 & (shifted > 0))
    assert abs((xs1.mean() - xs.mean()) - 2.0) < 0.3 and abs((ys1.mean() - ys.mean()) - 1.0) < 0.3
    # edge holes: a wider invalid band around the box outline
    holes = XtionSensor(SensorConfig(edge_hole_px=2), np.random.default_rng(0)).depth(z)
    assert (holes == 0).sum() > (d0 == 0).sum() + 2 * (40 + 40) * 2
    # 65535: only pixels without a reading are marked
    sat = XtionSensor(SensorConfig(saturated_fraction=0.5), np.random.default_rng(0))
    m = sat.saturated_mask(holes)
    assert m.any() and not (m & (holes > 0)).any()
    # auto-exposure: jumps of ~25 % against a drift of ~2 % per frame
    ae = XtionSensor(SensorConfig(auto_exposure_jump_prob=0.3), np.random.default_rng(0))
    img = np.full((8, 8, 3), 0.5)
    exp = []
    for _ in range(30):
        ae.rgb(img)
        exp.append(ae.exposure)
    assert np.abs(np.diff(exp)).max() > 0.15
    # drops and jitter draw from the sensor's generator (seeded)
    dj = XtionSensor(replace(SensorConfig(), drop_frame_prob=0.5, stamp_jitter_ms=2.0),
                     np.random.default_rng(0))
    drops = [dj.drop_frame() for _ in range(200)]
    assert 60 < sum(drops) < 140
    jit = np.array([dj.jitter_ns() for _ in range(200)]) / 1e6
    assert 1.5 < jit.std() < 2.5


def test_the_colour_gain_the_sensor_reports_is_the_one_it_applied():
    """Benchmarks score against the truth at gain 1 and report what the drift costs from
    ``XtionSensor.gain``: on a flat grey image it is the gain each frame's pixels carry
    (the walk moves it ~2 % per frame, so the previous frame's gain would not pass)."""
    sensor = XtionSensor(SensorConfig(), np.random.default_rng(3))
    grey = np.full((200, 200, 3), 0.4)
    gains = []
    for _ in range(6):
        out = sensor.rgb(grey).astype(np.float64) / 255.0
        gains.append(sensor.gain)
        assert np.abs(out[20:-20, 20:-20].mean((0, 1)) / 0.4 - sensor.gain).max() < 0.003
    assert np.abs(np.diff(gains, axis=0)).max() > 0.01


def test_a_sequence_with_every_effect_is_written_read_and_tracked(tmp_path):
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.metrics import ate_rmse
    from nol_ros.selfannotate import SelfAnnotationConfig, track_sequence

    p = Preset(train_frames=12, train_arc_deg=36.0, test_sequences=0, write_bag=False,
               sensor=ALL_ON)
    generate(tmp_path, p, seed=0, progress=False)
    seq = read_bop_scene(tmp_path / "train" / "000001")
    n = len(seq.frames)
    assert 4 <= n < 12  # some frames were dropped (seeded)
    dt = np.diff([f.stamp_ns for f in seq.frames]) / 33_333_333
    assert dt.max() > 1.8                                   # a gap where frames were dropped
    assert np.abs(dt - np.round(dt)).max() > 0.01           # jittered stamps
    raw = [cv2.imread(f.depth_path, cv2.IMREAD_UNCHANGED) for f in seq.frames]
    assert all((r == 65535).any() for r in raw)             # "no reading" written as 65535
    assert all(f.load_depth().max() < 10.0 for f in seq.frames)  # ... and read as invalid
    # the tracker follows it (bar 1 cm; the frames are 3 deg apart, up to ~9 deg over drops)
    tr = track_sequence(seq, SelfAnnotationConfig())
    ate, _ = ate_rmse(tr.result.poses, [f.T_world_camera for f in seq.frames])
    print(f"{n} frames, ATE {ate * 100:.2f} cm")
    assert tr.result.ok.all() and ate < 0.01
    # the effects are on in the full preset only
    assert PRESETS["full"].sensor != SensorConfig()
    assert PRESETS["small"].sensor == SensorConfig() == PRESETS["demo"].sensor
