"""Progress of long work: the one callback type of the package and its helpers.

Every long function takes ``progress: ProgressFn = noop_progress`` and calls
``progress(stage, fraction, message)``:

* ``stage`` (str): short name of the step being run ("tracking", "render", "train detector");
  a new name starts a new step;
* ``fraction`` (float, 0..1): how much of that stage is done (a caller that runs several stages
  maps them onto one job fraction with :class:`OverallProgress`);
* ``message`` (str, may be ""): a human-readable detail ("frame 120/600").

A job's ``Progress.report`` (nol_ros.jobs), the ROS ``~/progress`` feedback, the client's
``wait(on_progress=...)`` and the terminal bar :class:`TqdmProgress` all take these three
arguments, so any of them can be passed where a ``ProgressFn`` is expected.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm

ProgressFn = Callable[[str, float, str], None]


def noop_progress(stage: str, fraction: float, message: str = "") -> None:
    """The default :data:`ProgressFn`: reports nowhere."""


def prefixed(progress: ProgressFn, prefix: str, stage: str | None = None) -> ProgressFn:
    """``progress`` with ``"{prefix}: "`` before every message (and every stage renamed to
    ``stage`` when given): how a caller that runs one function per object tells them apart."""
    def report(s: str, fraction: float, message: str = "") -> None:
        progress(stage or s, fraction, f"{prefix}: {message}")
    return report


class OverallProgress:
    """Maps the (stage, fraction of that stage) reports of a core function onto one monotonic
    job fraction: ``spans`` gives each stage's share [lo, hi) of the job; unknown stages keep
    the current span. Calls ``report(stage, overall_fraction, message)``."""

    def __init__(self, report: ProgressFn, spans: dict[str, tuple[float, float]],
                 default=(0.0, 1.0)):
        self.report, self.spans, self._span, self._best = report, spans, default, 0.0

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self._span = self.spans.get(stage, self._span)
        lo, hi = self._span
        f = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
        self._best = max(self._best, f)
        self.report(stage, self._best, message)


class TqdmProgress:
    """A terminal progress bar as a :data:`ProgressFn`: a tqdm bar (0..100 %) whose postfix is
    "stage: message". On a log (not a terminal) it redraws rarely, so logs stay short.

        with TqdmProgress("tracking") as progress:
            track_frames(..., progress=progress)

    ``stages``: show only these stages (None = all). ``stage_lines``: for a function whose
    stages each run 0..1 (not one overall fraction), each finished stage is left as a line
    above the bar and the bar starts again at the next stage. ``disable``: no output at all."""

    def __init__(self, label: str = "", stages: tuple[str, ...] | None = None,
                 stage_lines: bool = False, disable: bool = False, file=None,
                 tty_interval_s: float = 0.5, log_interval_s: float = 30.0):
        self.label, self.stages, self.stage_lines, self.disable = label, stages, stage_lines, \
            disable
        self.file = file or sys.stderr
        self._stage: str | None = None
        self._message = ""
        tty = hasattr(self.file, "isatty") and self.file.isatty()
        # miniters=0: redraw decided by time alone (tqdm's dynamic miniters would skip the
        # reports of a slow stage after a fast one)
        self.bar = tqdm(total=100, desc=label, file=self.file, disable=disable, miniters=0,
                        mininterval=tty_interval_s if tty else log_interval_s,
                        ncols=120 if tty else 100,
                        bar_format="{desc} {percentage:5.1f}%|{bar}|{postfix}")

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if self.stages is not None and stage not in self.stages:
            return
        if self.stage_lines and stage != self._stage:
            self._end_stage()
            self.bar.reset(total=100)
        self._stage, self._message = stage, message
        self.bar.set_postfix_str(f"{stage}: {message}"[:60], refresh=False)
        # update() redraws at most every mininterval (a per-frame report would flood a log);
        # a new stage may start lower: the bar goes back
        self.bar.update(round(100 * min(max(float(fraction), 0.0), 1.0), 1) - self.bar.n)

    def _end_stage(self) -> None:
        if self.stage_lines and self._stage is not None and not self.disable:
            self.bar.write(f"{self.label} {self._stage}: {self._message}".strip(),
                           file=self.file)

    def close(self) -> None:
        self._end_stage()
        self.bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
