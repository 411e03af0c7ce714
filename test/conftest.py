"""Shared test set-up.

Every test's outcome must be a function of the code alone, whatever the machine and its load:

- DDS stays on localhost, and each test process gets its own ROS domain so parallel runs on one
  machine, and the pytest-xdist workers of one run (``make test`` runs two), do not see each
  other's nodes;
- one thread count for every numeric library in every test (``NOL_TEST_THREADS``, default 1):
  OpenMP (Open3D's RANSAC and odometry, torch) and torch's intra-op pool. It is set in the
  environment before torch or Open3D load their OpenMP runtime, so the processes the tests
  start (nodes, the CLI, the demo) inherit it, and again before each test, so no test inherits
  another's setting. Parallel float reductions and Open3D's multi-threaded RANSAC give results
  that depend on the thread count and, for RANSAC, on the scheduling; with one thread they
  depend on the code and the seed only;
- every test starts from the same seeds (Python, NumPy's global generator, torch).

``NOL_TEST_THREADS=2 make test`` runs the suite with two threads, to check that the verdicts of
the learned-quality tests do not depend on it.
"""

import os
import pickle
import random

# Before anything loads an OpenMP runtime (torch, Open3D, scikit-learn): they read it once.
TEST_THREADS = int(os.environ.get("NOL_TEST_THREADS", "1"))
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)
from nol_ros.ros.environment import default_ros_env  # noqa: E402  (no ROS import)

default_ros_env()  # as every nol_ros process: DDS on localhost, the Fast DDS profile


def _ros_domain() -> int:
    """1..96 (Linux's safe domain range is 0..101). An xdist worker ('gw0', 'gw1', ...): a block
    of 8 domains chosen by the run (its controller, our parent process), the worker's place in
    it, so the two workers of one run never share a domain; a plain run: by its pid."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker:
        return 1 + (os.getppid() % 12) * 8 + int(worker.removeprefix("gw")) % 8
    return 1 + os.getpid() % 96


if os.environ.get("PYTEST_XDIST_WORKER"):  # a domain set by the caller would be shared
    os.environ["ROS_DOMAIN_ID"] = str(_ros_domain())
else:
    os.environ.setdefault("ROS_DOMAIN_ID", str(_ros_domain()))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower test (still run in CI)")
    config.addinivalue_line("markers", "ros: starts real rclpy nodes (DDS on localhost)")


# The longest files, longest first (seconds of one quiet `make test`, --durations=0, summed per
# file, 2026-12-04), except that the third is dealt before the second: the first and the second
# both need the small world, and one worker would wait while the other generates it. Only the
# order changes: every test still runs, each file in its own order.
LONGEST_FILES = ("test_demo.py", "test_distributed.py", "test_reconstruction_node.py",
                 "test_nol_renderer.py", "test_render_shards.py", "test_bad_input_catalogue.py",
                 "test_nodes_learn_to_recognize.py", "test_cli_pipeline.py",
                 "test_two_hosts.py", "test_recognition.py", "test_view_selection_node.py",
                 "test_selfannotate.py", "test_bringup.py", "test_registration.py")


def pytest_collection_modifyitems(config, items):
    """Longest files first, then the other files with slow tests, then the rest (each file
    keeps its own order): pytest-xdist (``--dist loadfile --no-loadscope-reorder``, the
    Makefile) hands whole files to the workers in this order, and a long file dealt last makes
    the other worker wait at the end. The longest-first order is what balances two workers;
    xdist's own reorder (by number of tests) dealt the one-test demo file last."""
    slow_files = {it.path for it in items if it.get_closest_marker("slow")}
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda it: (rank.get(it.path.name, len(rank)), it.path not in slow_files))


def pytest_report_header(config):
    return f"nol_ros tests: {TEST_THREADS} thread(s) for OpenMP and torch (NOL_TEST_THREADS)"


def seed_everything(seed: int = 0) -> None:
    """The same start for every random generator a test may touch without seeding it."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _deterministic_start():
    """Before each test: the session's thread count and fixed seeds (module- and session-scoped
    fixtures seed themselves: they run before this)."""
    torch.set_num_threads(TEST_THREADS)
    seed_everything(0)
    yield


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


def built_once(tmp_path_factory, name: str, build):
    """``build(folder)`` -> a picklable result, run once per test run and shared by its
    pytest-xdist workers: the first worker to get here builds into a folder of the run's base
    temp directory under a file lock, the others wait for it and load the result. Without
    xdist, once per session as before. What is built is only read by the tests."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent          # popen-gw0, popen-gw1, ... share their parent
    folder, done = base / name, base / f"{name}.pickle"
    with FileLock(str(base / f"{name}.lock")):
        if done.is_file():
            return pickle.loads(done.read_bytes())
        folder.mkdir()
        result = build(folder)
        done.write_bytes(pickle.dumps(result))
        return result


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """The small synthetic preset, generated once per test run (~20 s)."""
    from nol_ros.datasets.synthetic.generate import generate

    def build(out):
        return out, generate(out, "small", seed=0, progress=False)

    return built_once(tmp_path_factory, "small_world", build)


@pytest.fixture(scope="session")
def small_workspace(small_world, tmp_path_factory):
    """The self-annotation chain run once per test run on the small preset's training
    sequence (~60 s)."""
    from nol_ros.datasets.bop import read_bop_scene, read_models_info
    from nol_ros.selfannotate import ObjectSpec, run_self_annotation

    root, _ = small_world
    seq = read_bop_scene(root / "train" / "000001", root / "models")
    info = read_models_info(root / "models" / "models_info.json")
    specs = [ObjectSpec(name=info[o.obj_id]["name"], mesh_path=o.mesh_path, obj_id=o.obj_id,
                        symmetric=o.symmetric) for o in seq.objects]
    ws, report = built_once(tmp_path_factory, "workspace",
                            lambda ws: (ws, run_self_annotation(seq, specs, ws)))
    return ws, report, seq, info
