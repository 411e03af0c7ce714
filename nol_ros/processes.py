"""Child processes stopped as Ctrl-C stops them (the bring-up, the soak, the two-host runs)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence


def stop_processes(procs: Sequence[subprocess.Popen], timeout_s: float,
                   on_kill: Callable[[subprocess.Popen], None] | None = None) -> None:
    """SIGINT to each of ``procs`` still running, then wait for all of them within one deadline
    of ``timeout_s``; one still running then is killed (``on_kill(p)`` called first) and
    reaped."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill(p)
            p.kill()
            p.wait()
