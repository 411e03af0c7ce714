"""Property-based fuzzing (Hypothesis) of what a request can send: object names, paths, options
text, poses, image stamps. Each property is the guarantee of docs/reliability.md: the request is
either refused with a NolError (a code and a message, which a node puts in its reply) or
accepted with everything it names inside the configured root -- never another exception, never
a path outside. Pure core functions (the ones the nodes call): fast, no ROS graph. Bounded:
a fixed example count per property and a derandomised seed, so a run's verdict is a function of
the code alone (issue 17)."""

from __future__ import annotations

import math
import os
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nol_ros.errors import NolError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# pieces a hostile path is made of
_PARTS = st.sampled_from(["..", ".", "", "~", "~nosuchuser", "/", "//", "etc", "passwd",
                          "mesh.ply", "link_out", "link_in", "a\x00b", "obj", " ", "..."])
HOSTILE_PATHS = st.one_of(
    st.lists(_PARTS, min_size=1, max_size=6).map("/".join),
    st.text(max_size=40),
    st.sampled_from(["/etc/passwd", "../../x", "link_out/../../y", str(Path.home()), "~/x"]),
)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """data_root with a mesh, a symlink leading out of it and one staying in; a workspace."""
    base = tmp_path_factory.mktemp("fuzz")
    data, ws, outside = base / "data", base / "ws", base / "outside"
    for d in (data, ws, outside):
        d.mkdir()
    (outside / "secret.ply").write_text("not yours\n")
    _write_box_ply(data / "mesh.ply")
    (data / "obj").mkdir()
    os.symlink(outside, data / "link_out")
    os.symlink(data / "obj", data / "link_in")
    return data, ws, outside


def _write_box_ply(path: Path) -> None:
    """A 6 cm cube in metres, ASCII PLY."""
    v = [(x, y, z) for x in (-.03, .03) for y in (-.03, .03) for z in (-.03, .03)]
    f = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1), (2, 3, 7), (2, 7, 6),
         (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    head = ["ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x",
            "property float y", "property float z", f"element face {len(f)}",
            "property list uchar int vertex_indices", "end_header"]
    path.write_text("\n".join(head + [" ".join(map(str, p)) for p in v]
                              + [f"3 {a} {b} {c}" for a, b, c in f]) + "\n")


def _inside(p: Path, root: Path) -> bool:
    r, q = root.resolve(), Path(p).resolve()
    return q == r or r in q.parents


@FUZZ
@given(name=st.one_of(st.text(max_size=80), st.sampled_from([".", "..", "a/..", "-x", "a" * 65,
                                                               "ok_name", "x\x00y", "_models"])))
def test_any_object_name_is_refused_or_stays_one_folder_inside_the_workspace(roots, name):
    from nol_ros.workspace import Workspace

    _, ws, _ = roots
    try:
        lo = Workspace(ws).learnt(name)
    except NolError as e:
        assert e.code == "BAD_PATH" and str(e)
        return
    assert lo.dir.parent == ws and lo.dir.name == name and name not in (".", "..")


@FUZZ
@given(path=HOSTILE_PATHS, must_exist=st.booleans())
def test_any_path_is_refused_or_resolves_inside_its_root(roots, path, must_exist):
    from nol_ros.workspace import confine

    data, _, outside = roots
    try:
        p = confine(data, path, "mesh_path", must_exist=must_exist)
    except NolError as e:
        assert e.code == "BAD_PATH"
        # the reply must not reveal what exists outside the root
        assert str(outside) not in str(e) or str(outside) in path
        return
    assert _inside(p, data), (path, p)
    assert not must_exist or p.exists()


def test_outside_and_missing_get_the_same_answer(roots):
    from nol_ros.workspace import confine

    data, _, outside = roots
    msgs = []
    for path in (str(outside / "secret.ply"), str(outside / "nothing.ply")):
        with pytest.raises(NolError) as e:
            confine(data, path, "mesh_path", must_exist=True)
        msgs.append(str(e.value).replace(path, "PATH"))
    assert msgs[0] == msgs[1]


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_KEYS = st.sampled_from(["self_annotation.annotate_step", "render.enabled", "render.preset",
                         "self_annotation.max_views", "workspace_root", "nonsense", "render",
                         "self_annotation", "render.image_size", "nol.lr"])
OPTIONS = st.one_of(
    st.text(max_size=200),
    st.dictionaries(_KEYS, _VALUES, max_size=4).map(
        lambda d: "\n".join(f"{k}: {v!r}" for k, v in d.items())),
    st.sampled_from(["a: &x [1]\nb: *x", "{" * 200, "- 1\n- 2", "render: {enabled: .nan}",
                     "x: " + "y" * 70000]),
)


def _all_floats(obj):
    if is_dataclass(obj):
        for f in fields(obj):
            yield from _all_floats(getattr(obj, f.name))
    elif isinstance(obj, float):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _all_floats(x)


@FUZZ
@given(text=OPTIONS)
def test_any_options_text_is_refused_or_gives_a_finite_config(text):
    from nol_ros.learn import LearnConfig
    from nol_ros.services.learning import learn_config_with_options

    base = LearnConfig(workspace_root="/nowhere")
    try:
        cfg = learn_config_with_options(base, text)
    except NolError as e:
        assert e.code in ("BAD_CONFIG", "BAD_INPUT") and len(str(e)) < 2000
        return
    assert cfg.workspace_root == base.workspace_root
    assert all(math.isfinite(x) for x in _all_floats(cfg))


@FUZZ
@given(name=st.one_of(st.sampled_from(["box", "..", "a/b"]), st.text(max_size=12)),
       mesh=st.one_of(st.just("mesh.ply"), HOSTILE_PATHS),
       source=st.integers(-3, 5), source_path=st.one_of(st.just(""), HOSTILE_PATHS),
       options=st.one_of(st.just(""), OPTIONS))
def test_any_learn_request_is_refused_with_a_code_or_names_only_files_inside(
        roots, name, mesh, source, source_path, options):
    from nol_ros.learn import LearnConfig
    from nol_ros.services.learning import LearningConfig, LearnRequest, check_learn_request

    data, ws, _ = roots
    cfg = LearningConfig(data_root=str(data), learn=LearnConfig(workspace_root=str(ws)))
    req = LearnRequest(object_name=name, mesh_path=mesh, source=source,
                       source_path=source_path, options_yaml=options)
    try:
        c = check_learn_request(cfg, req)
    except NolError as e:
        assert e.code and str(e)
        return
    assert _inside(Path(c.mesh), data) and Path(c.mesh).is_file()
    assert not c.source_path or _inside(Path(c.source_path), data)
    assert c.cfg.workspace_root == str(ws)


@FUZZ
@given(T=st.one_of(
    st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                      min_size=16, max_size=16), max_size=5).map(
        lambda x: np.array(x, np.float64).reshape(-1, 4, 4) if x else np.zeros((0, 4, 4))),
    st.integers(0, 3).map(lambda n: np.zeros((n, 3, 3)))))
def test_any_pose_list_is_refused_or_every_pose_is_finite_and_in_front(T):
    from nol_ros.services.learning import check_poses

    try:
        out = check_poses(T, max_poses=4)
    except NolError as e:
        assert e.code and str(e)
        return
    assert 1 <= len(out) <= 4 and np.isfinite(out).all() and (out[:, 2, 3] > 0).all()


@FUZZ
@given(steps=st.lists(st.one_of(st.integers(-40, 40).map(lambda k: k * 10**8),
                                st.sampled_from([-3600 * 10**9, 3600 * 10**9, 0])),
                      min_size=1, max_size=60))
def test_every_stamp_is_ingested_dropped_or_held_exactly_once(steps):
    """StampGuard: the frames it lets through since the last reset never go back more than
    jump_s or forward more than future_s from the newest before them, and no frame is lost
    without being counted (dropped) or duplicated."""
    from nol_ros.services.reconstruction import StampGuard

    S = 10**9
    g = StampGuard(jump_s=1.0, future_s=10.0, frames=3)
    t, sent, ingested, dropped, newest = 10**6 * S, [], [], [], None
    for d in steps:
        t = max(1, t + d)
        sent.append(t)
        verdict, stamps = g.check(t)
        if verdict == "hold":      # earlier held ones it contradicts are dropped
            dropped += stamps
            continue
        if verdict == "reset":
            assert stamps[-1] == t and len(stamps) == 3
            newest = None
            got = stamps
        else:
            dropped += stamps
            got = [t]
        for s in got:
            if newest is not None:
                assert newest - S <= s <= newest + 10 * S, (newest, s)
            newest = s if newest is None else max(newest, s)
        ingested += got
    assert sorted(ingested + dropped + g.held) == sorted(sent)
