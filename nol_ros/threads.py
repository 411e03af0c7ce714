"""Thread settings of the native runtimes (OpenMP of Open3D and torch, BLAS), whatever the
import order.

Why: an OpenMP runtime whose idle threads spin at every barrier (libgomp's default spins
300000 times, ``OMP_WAIT_POLICY=ACTIVE`` far longer) makes the tracker several times slower on
a loaded 2-core machine: the spinning thread takes the core from the one doing the work
(measured 2026-12-01: 100 frames tracking + TSDF at load ~12, 123.7 s wall with spinning, 25.1 s
passive, 21.5 s with one thread). ``nol_ros/__init__.py`` sets ``OMP_WAIT_POLICY=PASSIVE`` in
the environment, but libgomp reads it once, when the library loads: after ``import open3d``
(or torch) it is too late, and libgomp has no call to change it.

So :func:`configure_threads` looks at every OpenMP runtime actually loaded in the process
(threadpoolctl finds them), reads the spin count it really uses (``omp_display_env``, OpenMP
5.1, prints the runtime's settings: ``GOMP_SPINCOUNT`` 0 means passive), and

* passive runtime: ``num_threads`` threads (default: all cores);
* runtime that does not tell (LLVM/Intel OpenMP, an old libgomp): ``num_threads``;
* spinning runtime (loaded before the environment could be set): ONE thread -- with a team of
  one no thread waits at a barrier, so none spins -- and a warning that says how to get the
  threads back (set ``OMP_WAIT_POLICY=PASSIVE`` before starting Python, or import nol_ros
  before open3d/torch).

torch's intra-op pool is set with ``torch.set_num_threads`` when torch is loaded. The call is
cheap and idempotent; :class:`nol_ros.reconstruction.tracking.RgbdTracker` makes it once after it
imports Open3D, so the tracker is safe whichever module came first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)
_lock = threading.Lock()
_done: dict[tuple, ThreadReport] = {}
_pools: dict[int, ThreadPoolExecutor] = {}


@dataclass
class RuntimeInfo:
    path: str
    prefix: str
    spin_count: int | None          # None: could not be read
    threads: int


@dataclass
class ThreadReport:
    requested: int
    runtimes: list[RuntimeInfo] = field(default_factory=list)
    torch_threads: int | None = None
    warnings: list[str] = field(default_factory=list)


def openmp_spin_count(path: str) -> int | None:
    """GOMP_SPINCOUNT in effect in the libgomp loaded from ``path`` (0 = passive wait), read
    with ``omp_display_env``; None when the runtime cannot tell (not libgomp, too old)."""
    try:
        lib = ctypes.CDLL(path)  # the library is already loaded: this returns its handle
        fn = lib.omp_display_env
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            fn(1)  # verbose: the GOMP_* values too
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    for line in text.splitlines():
        if "GOMP_SPINCOUNT" in line:
            try:
                return int(line.split("=")[1].strip().strip("'"))
            except (IndexError, ValueError):
                return None
    return None


def configure_threads(num_threads: int | None = None, force: bool = False) -> ThreadReport:
    """Set the thread pools of every loaded OpenMP runtime and torch (see the module doc).
    ``num_threads``: None = all cores. Repeated calls with the same request do nothing unless
    new runtimes were loaded in between or ``force``."""
    n = int(num_threads or default_threads())
    ctl = ThreadpoolController()
    omp = [lc for lc in ctl.lib_controllers if lc.user_api == "openmp"]
    key = (n, tuple(sorted(lc.filepath for lc in omp)), "torch" in sys.modules)
    with _lock:
        if not force and key in _done:
            return _done[key]
        rep = ThreadReport(requested=n)
        for lc in omp:
            spin = openmp_spin_count(lc.filepath) if lc.prefix == "libgomp" else None
            # unknown (another runtime, an old libgomp): left at n, nothing known to fix
            want = n if (spin is None or spin == 0) else 1
            if want != n:
                msg = (f"the OpenMP runtime {os.path.basename(lc.filepath)} was loaded with "
                       f"spinning waits (GOMP_SPINCOUNT {spin}), before nol_ros could set "
                       "OMP_WAIT_POLICY=PASSIVE (open3d or torch imported first); it runs "
                       "one thread so that no thread spins on a loaded machine. To use "
                       f"{n} threads: export OMP_WAIT_POLICY=PASSIVE before starting Python, "
                       "or import nol_ros first")
                rep.warnings.append(msg)
                log.warning(msg)
            lc.set_num_threads(want)
            rep.runtimes.append(RuntimeInfo(lc.filepath, lc.prefix, spin, want))
        if "torch" in sys.modules:
            # lazy: torch (~2 s) to import, loaded only when this runs
            import torch

            own = [r for r in rep.runtimes if f"{os.sep}torch{os.sep}" in r.path]
            torch_n = own[0].threads if own else n
            if torch.get_num_threads() != torch_n:
                torch.set_num_threads(torch_n)
            rep.torch_threads = torch.get_num_threads()
        _done[key] = rep
        return rep


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is set to a positive number (the standard way to ask), else
    all cores."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 1)


@contextmanager
def thread_settings(num_threads: int | None = None):
    """:func:`configure_threads`' choice applied to the CALLING thread for a block, restored
    after. OpenMP's thread count is a per-thread setting: a job on a worker thread otherwise
    runs with whatever that thread was left with, and Open3D's sums (ICP, odometry, TSDF)
    change in their last digits with the team size -- the same data must give the same answer
    on any thread of the process."""
    rep = configure_threads(num_threads)
    want = {r.path: r.threads for r in rep.runtimes}
    omp = [lc for lc in ThreadpoolController().lib_controllers if lc.user_api == "openmp"]
    old = [(lc, lc.num_threads) for lc in omp]
    for lc in omp:
        lc.set_num_threads(want.get(lc.filepath, rep.requested))
    try:
        yield rep
    finally:
        for lc, n in old:
            lc.set_num_threads(n)


def set_threads(n: int) -> ThreadReport:
    """Force ``n`` threads (benchmarks, ``--threads``)."""
    return configure_threads(n, force=True)


def _one_openmp_thread() -> None:
    """Worker initialiser: this thread's OpenMP teams have one thread (a per-thread setting in
    every loaded runtime)."""
    for lc in ThreadpoolController().lib_controllers:
        if lc.user_api == "openmp":
            lc.set_num_threads(1)


def worker_pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n`` threads (made once per size, kept) for jobs that run side by
    side, each worker's OpenMP teams of one thread: the parallelism is the workers', the total
    stays near ``n`` threads, and a job's result does not depend on which worker ran it.
    OpenMP runtimes loaded after a worker started keep their default in it: load the
    libraries the jobs use (open3d, torch) before the first call."""
    with _lock:
        pool = _pools.get(n)
        if pool is None:
            pool = _pools[n] = ThreadPoolExecutor(n, thread_name_prefix=f"nol-pool{n}",
                                                  initializer=_one_openmp_thread)
    return pool
