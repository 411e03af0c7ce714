"""Thread settings hold whatever the import order (nol_ros/threads.py).

Each case runs in a fresh Python (the OpenMP runtime reads its wait policy once, when it
loads): open3d imported BEFORE nol_ros, after it, and with a spinning policy forced from the
environment. After the tracker is created, no OpenMP runtime that spins at barriers may run more
than one thread (a spinning idle thread steals the core from the working one on a loaded
machine: 5x slower tracking measured), and a passive one keeps all cores.
"""

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, sys
order = sys.argv[1]
if order == "open3d_first":
    import open3d  # noqa: F401
    import nol_ros  # noqa: F401
else:
    import nol_ros  # noqa: F401
    import open3d  # noqa: F401
from nol_ros.camera import Intrinsics
from nol_ros.reconstruction.tracking import RgbdTracker
from nol_ros.threads import openmp_spin_count
from threadpoolctl import threadpool_info

RgbdTracker(Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48))
gomp = [i for i in threadpool_info() if i["prefix"] == "libgomp"]
print(json.dumps([{"path": i["filepath"], "threads": i["num_threads"],
                   "spin": openmp_spin_count(i["filepath"])} for i in gomp]))
"""


def _probe(order: str, policy: str | None) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    r = subprocess.run([sys.executable, "-c", PROBE, order], capture_output=True, text=True,
                       env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("order,policy", [("open3d_first", None), ("nol_ros_first", None),
                                          ("nol_ros_first", "ACTIVE")])
def test_no_spinning_openmp_threads_whatever_the_import_order(order, policy):
    # the libgomp runtimes that tell their spin count (Open3D's among them; a bundled old
    # libgomp that cannot tell is left alone and not checked)
    rts = [rt for rt in _probe(order, policy) if rt["spin"] is not None]
    assert rts, "no libgomp runtime that reports its settings was found"
    cores = os.cpu_count() or 1
    for rt in rts:
        if rt["spin"] > 0:
            assert rt["threads"] == 1, rt       # a spinning runtime runs one thread
        else:
            assert rt["threads"] == cores, rt   # a passive one keeps every core
    if order == "nol_ros_first" and policy is None:
        assert all(rt["spin"] == 0 for rt in rts)  # nol_ros set PASSIVE in time
    if order == "open3d_first" or policy == "ACTIVE":
        assert any(rt["spin"] > 0 for rt in rts)    # too late / overridden: one thread
