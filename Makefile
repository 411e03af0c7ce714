# nol_ros: the two commands a user needs are `make demo` and `make test`; both set up first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Python caches compiled modules in .venv (setup installs with --no-compile): with
# PYTHONDONTWRITEBYTECODE set in the caller's environment every process the tests and the demo
# start (nodes, CLI, torchrun ranks) compiled torch, Open3D, rclpy, ... again, ~5.5 CPU-s each
# (10.5 s against 4.8 s to import a node's modules, measured on the reference machine).
unexport PYTHONDONTWRITEBYTECODE
# pytest-xdist processes for `make test`; each test runs one thread (NOL_TEST_THREADS), so two
# keep both cores of the reference machine busy. A test file stays on one worker (its module
# fixtures, e.g. a started ROS graph, are built once). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: setup test test-fast test-load test-scale demo lint bench soak soak-live clean

setup:
	@NOL_VENV=$(abspath $(VENV)) bash tools/setup.sh

# The whole suite (slow tests included). pytest exits non-zero when no test ran (exit 5).
test: setup
	$(PY) -m pytest -p no:cacheprovider $(XDIST) $(PYTEST_ARGS) test

# Everything except tests marked slow, for a quick check while developing.
test-fast: setup
	$(PY) -m pytest -p no:cacheprovider $(XDIST) -m "not slow" $(PYTEST_ARGS) test

# The scale-out tests alone (docs/deployment.md): transfer core and nodes, the two network-
# namespace hosts (need root; skipped with the kernel's reason where it refuses namespaces),
# 2-process DDP training (gloo) and sharded rendering. `make test` runs them with the rest.
test-scale: setup
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS) test/test_transfer.py \
		test/test_transfer_node.py test/test_two_hosts.py test/test_distributed.py \
		test/test_render_shards.py test/test_handoff.py

# The whole suite from a fresh clone with every core kept busy by a CPU hog, 3 runs in a row
# (RUNS=n, HOGS=n to change); all must pass. See tools/test_under_load.sh.
test-load:
	@bash tools/test_under_load.sh

demo: setup
	$(PY) -m nol_ros.demo

lint: setup
	$(VENV)/bin/ruff check nol_ros test bench

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Soak tests, NOT part of `make test` (each runs for more than 10 minutes; BENCHMARKS.md).
# soak: the whole graph (`nol-ros bringup --config robot` + the transfer node) under a 10-minute
# 30 Hz replay of real frames, with rounds of learn, render, train, select, export and transfer
# calls in between; every node's resident memory must stay flat after the warm-up (growth
# < 5 %), no node may die, no call may fail (bench/soak_all.py; its verdict and table are
# tested by test/test_soak_all.py).
soak: setup
	$(PY) bench/soak_all.py --minutes 10 --json build/soak_all.json

# soak-live: the reconstruction node alone under the same replay (bench/soak_live.py).
soak-live: setup
	$(PY) bench/soak_live.py --minutes 10 --json build/soak_live.json

clean:
	rm -rf build .nol_demo
