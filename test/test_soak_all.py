"""The pure parts of the whole-graph soak (bench/soak_all.py, `make soak`): the memory verdict
per node, its table, the error lines of a node log, and finding the node processes of a
bring-up. The soak itself runs for more than 10 minutes and is not part of `make test`."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak_all", ROOT / "bench" / "soak_all.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["soak_all"] = mod   # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("soak_all", None)


def test_memory_verdict_compares_the_peaks_before_and_after_the_warm_up(soak):
    samples = {   # (t_s, RSS now, peak RSS since the previous sample)
        # a job node: up inside each job, down after; the peaks do not rise -> flat
        "nol": [(0, 900.0, 900.0), (10, 950.0, 1800.0), (20, 950.0, 960.0),
                (30, 960.0, 1790.0), (40, 960.0, 960.0)],
        # fills during the warm-up, then flat within 4.9 %
        "reconstruction": [(0, 500.0, 500.0), (10, 2000.0, 2000.0), (20, 2000.0, 2098.0),
                           (30, 2000.0, 2000.0)],
        # a leak: +6 % after the warm-up
        "view_selection": [(0, 1000.0, 1000.0), (10, 1000.0, 1000.0), (20, 1030.0, 1030.0),
                           (30, 1060.0, 1060.0)],
    }
    rows = {r.node: r for r in soak.memory_verdict(samples, warmup_s=10, max_growth=0.05)}
    nol = rows["nol"]
    assert (nol.warmup_peak_mb, nol.peak_after_mb, nol.end_mb) == (1800.0, 1790.0, 960.0)
    assert nol.ok and nol.growth == pytest.approx(-10 / 1800)
    assert rows["reconstruction"].ok and rows["reconstruction"].growth == pytest.approx(0.049)
    vs = rows["view_selection"]
    assert not vs.ok and vs.growth == pytest.approx(0.06)
    # the peaks are judged, not the RSS at the sample: nol's samples alone never show a job
    rss_only = {"nol": [(t, r, r) for t, r, _p in samples["nol"]]}
    assert soak.memory_verdict(rss_only, 10, 0.05)[0].peak_after_mb == 960.0
    # the bar is strict: growth equal to the limit fails
    assert not soak.memory_verdict({"x": [(0, 100.0, 100.0), (10, 105.0, 105.0)]}, 0, 0.05)[0].ok


def test_memory_verdict_refuses_to_judge_without_samples_on_both_sides(soak):
    with pytest.raises(ValueError, match="node 'nol': 2 samples in the warm-up and 0 after"):
        soak.memory_verdict({"nol": [(0, 1.0, 1.0), (10, 1.0, 1.0)]}, 10, 0.05)
    with pytest.raises(ValueError, match="0 samples in the warm-up"):
        soak.memory_verdict({"nol": [(20, 1.0, 1.0)]}, 10, 0.05)


def test_memory_table_names_each_node_and_its_verdict(soak):
    rows = soak.memory_verdict({"recognizer": [(0, 800.0, 800.0), (20, 812.0, 812.0)],
                                "trainer": [(0, 1000.0, 1000.0), (20, 1000.0, 1100.0)]}, 10, 0.05)
    table = soak.memory_table(rows, 0.05).splitlines()
    assert table[0].startswith("| node |") and table[0].endswith("< 5 % |")
    assert table[2] == "| recognizer | 800 | 812 | 812 | +1.5 % | met |"
    assert table[3] == "| trainer | 1000 | 1100 | 1000 | +10.0 % | **NOT met** |"


def test_the_peak_of_a_process_is_read_and_reset(soak):
    """VmHWM through /proc: a 200 MB buffer touched and freed between two samples is seen."""
    code = ("import sys\nx = bytearray(200 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
            "del x\nprint('freed', flush=True)\nsys.stdin.readline()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "freed"
        rss, peak = soak.memory_mb(p.pid)
        assert peak - rss > 150.0, (rss, peak)
        assert soak.reset_peak(p.pid)
        rss2, peak2 = soak.memory_mb(p.pid)
        assert peak2 - rss2 < 5.0, (rss2, peak2)
    finally:
        p.kill()
        p.wait()
    assert soak.memory_mb(p.pid)[0] != soak.memory_mb(p.pid)[0]   # NaN: gone


def test_peaks_per_round_and_their_table(soak):
    samples = {"nol": [(0, 900.0, 900.0), (5, 950.0, 2154.0), (10, 950.0, 960.0),
                       (20, 960.0, 2335.0), (31, 1000.0, 2615.0)],
               "transfer": [(0, 80.0, 80.0), (31, 82.0, 83.0)]}
    peaks = soak.round_peaks(samples, [0, 10, 30])
    assert peaks["nol"] == [2154.0, 2335.0, 2615.0]
    assert peaks["transfer"][0] == 80.0 and peaks["transfer"][1] != peaks["transfer"][1]
    table = soak.round_table(peaks, warmup_rounds=2).splitlines()
    assert table[0] == "| peak RSS (MB) | round 1 * | round 2 * | round 3 |"
    assert table[1] == "|---|---|---|---|"
    assert table[2] == "| nol | 2154 | 2335 | 2615 |"
    assert table[3] == "| transfer | 80 | nan | 83 |"


def test_error_lines_are_rclpy_errors_and_tracebacks(soak):
    log = "\n".join([
        "[INFO] [1733.1] [soak.nol]: job learn_object-1 done",
        "[WARN] [1733.2] [soak.nol]: an error rate of 0 is fine",
        "[ERROR] [1733.3] [soak.nol]: job 2 failed [BAD_MESH]: ...",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "[FATAL] [1733.4] [soak.trainer]: out of memory",
        "the word ERROR inside a line is not a severity",
    ])
    assert soak.error_lines(log) == [
        "[ERROR] [1733.3] [soak.nol]: job 2 failed [BAD_MESH]: ...",
        "Traceback (most recent call last):", "[FATAL] [1733.4] [soak.trainer]: out of memory"]


def test_node_processes_finds_children_by_their_node_name(soak):
    """What the soak samples: the children of the bring-up process, by ``__node:=NAME``."""
    # each child says 'ready' once its interpreter runs (right after exec its resident memory
    # can still be under 1 MB on a loaded machine); they share the parent's stdout, so each
    # line is one write (atomic on a pipe; unbuffered, print's two writes interleaved:
    # 'readyready')
    code = ("import os, subprocess, sys, time\n"
            "ps = [subprocess.Popen([sys.executable, '-c', "
            "'import os, time; os.write(1, b\\'ready\\\\n\\'); time.sleep(60)', "
            "'--ros-args', '-r', f'__node:={n}']) for n in ('nol', 'trainer')]\n"
            "os.write(1, b'up\\n'); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        lines = sorted(parent.stdout.readline().strip() for _ in range(3))
        assert lines == ["ready", "ready", "up"], lines
        found = soak.node_processes(parent.pid)
        assert set(found) == {"nol", "trainer"}, found
        assert all(soak.memory_mb(pid)[0] > 1.0 for pid in found.values())
        assert soak.node_processes(os.getpid()) == {}   # this process has no node children
    finally:
        for pid in soak.node_processes(parent.pid).values():
            os.kill(pid, 9)
        parent.kill()
        parent.wait()
