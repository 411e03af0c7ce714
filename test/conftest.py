"""Shared test set-up: keep DDS on localhost and give each test session its own ROS domain so
parallel runs on one machine do not see each other's nodes."""

import os

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(50 + os.getpid() % 100))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower test (still run in CI)")
    config.addinivalue_line("markers", "ros: starts real rclpy nodes (DDS on localhost)")


@pytest.fixture
def rclpy_context():
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """The small synthetic preset, generated once per test session (~20 s)."""
    from nol_ros.datasets.synthetic.generate import generate

    out = tmp_path_factory.mktemp("small_world")
    summary = generate(out, "small", seed=0, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def small_workspace(small_world, tmp_path_factory):
    """The self-annotation chain run once on the small preset's training sequence."""
    from nol_ros.datasets.bop import read_bop_scene, read_models_info
    from nol_ros.selfannotate import ObjectSpec, run_self_annotation

    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001", root / "models")
    info = read_models_info(root / "models" / "models_info.json")
    specs = [ObjectSpec(name=info[o.obj_id]["name"], mesh_path=o.mesh_path, obj_id=o.obj_id,
                        symmetric=o.symmetric) for o in seq.objects]
    ws = tmp_path_factory.mktemp("workspace")
    report = run_self_annotation(seq, specs, ws)
    return ws, report, seq, info
