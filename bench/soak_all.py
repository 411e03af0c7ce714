"""Soak test of the whole graph: every node running together under a 30 Hz camera stream, with
learn, render, train, select, export and transfer calls in between; memory must stay flat.

Run: ``make soak`` (= .venv/bin/python bench/soak_all.py --minutes 10 --json build/soak_all.json),
or with options:
    .venv/bin/python bench/soak_all.py [--minutes 10] [--warmup-minutes 3] [--warmup-rounds 2]
        [--cycle-minutes 2.5]
        [--dataset ../shared/realdata/rgbd_sequences/tum_fr1_desk] [--work build/soak_all]

The graph is started the way a user starts it on a robot: ``nol-ros bringup --config robot
namespace:=soak`` (the shipped graph file and parameter files, unchanged: reconstruction,
view_selection, nol, trainer, recognizer, each its own process) plus the sixth node,
``transfer_node`` with config/transfer.yaml (as graph robot_remote starts it), all with the
working folder ``--work`` as their current directory, so the shipped relative roots
(``nol_workspace``) land there. The small synthetic world (generated once, ~30 s) lies in
``nol_workspace/view_selection/_soak_world``: inside the data roots of both the nol node and the
view_selection node (their default data_root is their workspace root), so no parameter changes.

This process publishes REAL frames (TUM RGB-D fr1/desk from ../shared/realdata, undistorted,
640x480, forward and backward over and over with fresh stamps) at 30 Hz of wall time on the
camera topics, which the reconstruction node AND the recognizer subscribe to, from the start to
the end. Set-up (not counted in --minutes): LearnObject of --object from the world's bag and the
``tiny`` detector + pose estimator trained through the trainer node; the recognizer picks the
models up. Then, every --cycle-minutes (the next round starts when the previous one is done if
it took longer), one round of calls:

- nol: LearnObject of --relearn-object (bag source, render preset tiny: the whole learn job),
  and RenderViews of --object (4 poses at 128 px, then one 640x480 frame) while it runs;
- trainer: TrainDetector + TrainPoseEstimator of --object (tiny, a new seed per round: a real
  training, and new models the recognizer must reload);
- view_selection: SelectViews of --object on the world's training sequence;
- reconstruction: ExportSequence of the live buffer (every 10th frame) and GetBufferStatus;
- transfer: Fetch of that export from the node itself (serves and receives, ~60 MB);
- recognizer: recognises the live stream throughout; each round must see it process frames.
Every call goes through one NolClient (nol_ros/ros/client.py), the client users script with;
this process only adds the camera's publishers.

Every --sample-s (10 s) the resident memory of every node process is read: VmRSS (now) and
VmHWM (its peak since the last sample; reset after each read through /proc/PID/clear_refs, so
a job's peak is caught even between two samples). Verdicts (exit code 1 if any fails, naming
the node or call):
- memory: per node, the largest peak after the warm-up may exceed the largest peak during the
  warm-up by less than --max-growth (5 %). Warm-up: the first --warmup-minutes of the soak or
  the first --warmup-rounds rounds of calls, whichever ends later. A job node's peak is inside
  a job, so the baseline must hold jobs of each kind; and a process's allocators settle over
  its first jobs: the nol node's peak per LearnObject, 6 in a row in one process, was 2154,
  2335, 2615, 2535, 2537, 2518 MB, with no Python allocation growing (tracemalloc) -- with the
  set-up's learn, two rounds give it three. The peak of every node in every round is printed
  too, so a slow growth shows;
- no node died; every call was answered without an error code and every job succeeded; the
  recognizer rejected no frame after its models were loaded; the reconstruction node rejected
  no frame; no ERROR line or traceback in any node's log during the soak.
A per-node table is printed and everything is written to --json. Not part of `make test`
(test/test_soak_all.py tests the verdict and the table).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nol_ros.errors import NolError
from nol_ros.processes import stop_processes

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "realdata" / "rgbd_sequences" / "tum_fr1_desk"
CAM = "camera_rgb_optical_frame"
NS = "/soak"
NODES = ("reconstruction", "view_selection", "nol", "trainer", "recognizer", "transfer")
WORLD = Path("nol_workspace") / "view_selection" / "_soak_world"   # relative to --work
# a log line that counts as an error: rclpy's ERROR/FATAL severity or a Python traceback
ERROR_LINE = re.compile(r"^\[(ERROR|FATAL)\]|Traceback \(most recent call last\)")


# -- pure parts (tested in test/test_soak_all.py) ------------------------------------------------

@dataclass(frozen=True)
class NodeMemory:
    """One node's resident memory over the soak (MB = 2**20 bytes)."""

    node: str
    warmup_peak_mb: float     # largest resident memory during the warm-up (the baseline)
    peak_after_mb: float      # largest resident memory after the warm-up
    end_mb: float             # resident memory at the last sample
    growth: float             # (peak_after - warmup_peak) / warmup_peak
    ok: bool                  # growth < the limit


def memory_verdict(samples: dict[str, list[tuple[float, float, float]]], warmup_s: float,
                   max_growth: float) -> list[NodeMemory]:
    """Per node: is the resident memory flat after the warm-up?

    samples: node -> [(t_s since the soak started, rss_mb now, peak_mb)] in time order, where
    peak_mb is the largest resident memory since the previous sample (VmHWM, reset after each
    read: a job's peak is seen whenever it falls between two samples). The baseline is the
    largest peak of the warm-up (t <= warmup_s), which holds jobs of each kind: a job node's
    memory rises inside a job and falls after it, so its last warm-up sample may be an idle
    one. Raises ValueError when a node has no sample on either side of the warm-up (the soak
    was too short to judge)."""
    out = []
    for node, ss in samples.items():
        warm = [p for t, _r, p in ss if t <= warmup_s]
        late = [p for t, _r, p in ss if t > warmup_s]
        if not warm or not late:
            raise ValueError(f"node '{node}': {len(warm)} samples in the warm-up and "
                             f"{len(late)} after it; run longer than the warm-up "
                             "(more --minutes: the warm-up's rounds and one more must fit)")
        base, peak = max(warm), max(late)
        growth = (peak - base) / base
        out.append(NodeMemory(node, base, peak, ss[-1][1], growth, growth < max_growth))
    return out


def memory_table(rows: list[NodeMemory], max_growth: float) -> str:
    """A markdown table of :func:`memory_verdict`'s rows."""
    lines = ["| node | peak RSS in the warm-up (MB) | peak RSS after (MB) | RSS at the end (MB) | "
             "growth | "
             f"< {max_growth * 100:g} % |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.node} | {r.warmup_peak_mb:.0f} | {r.peak_after_mb:.0f} | "
                     f"{r.end_mb:.0f} | {r.growth * 100:+.1f} % | "
                     f"{'met' if r.ok else '**NOT met**'} |")
    return "\n".join(lines)


def round_peaks(samples: dict[str, list[tuple[float, float, float]]],
                round_starts: list[float]) -> dict[str, list[float]]:
    """node -> the largest peak of each round (a round lasts until the next one starts; the
    last until the end). samples as for :func:`memory_verdict`."""
    out = {}
    for node, ss in samples.items():
        peaks = []
        for k, t0 in enumerate(round_starts):
            t1 = round_starts[k + 1] if k + 1 < len(round_starts) else float("inf")
            inside = [p for t, _r, p in ss if t0 <= t < t1]
            peaks.append(round(max(inside), 1) if inside else float("nan"))
        out[node] = peaks
    return out


def round_table(peaks: dict[str, list[float]], warmup_rounds: int) -> str:
    """A markdown table of :func:`round_peaks` (MB); warm-up rounds marked with *."""
    n = max((len(v) for v in peaks.values()), default=0)
    head = " | ".join(f"round {k + 1}{' *' if k < warmup_rounds else ''}" for k in range(n))
    lines = [f"| peak RSS (MB) | {head} |", "|---" * (n + 1) + "|"]
    for node, v in peaks.items():
        lines.append(f"| {node} | " + " | ".join(f"{x:.0f}" for x in v) + " |")
    return "\n".join(lines)


def error_lines(text: str) -> list[str]:
    """The lines of a node log that report an error (rclpy ERROR/FATAL, tracebacks)."""
    return [ln for ln in text.splitlines() if ERROR_LINE.search(ln)]


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB: resident memory now and its peak since the process
    started or :func:`reset_peak`; (NaN, NaN) when the process has gone."""
    out = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in out:
                out[key] = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return out["VmRSS"], out["VmHWM"]


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current VmRSS (Linux >= 4.0: clear_refs 5); False when
    not allowed (then the peak since the start stays)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def node_processes(parent_pid: int) -> dict[str, int]:
    """node name -> pid of the children of ``parent_pid`` started with ``-r __node:=NAME``."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent_pid:
                continue
            args = (d / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        for a in args:
            if a.startswith(b"__node:="):
                out[a[8:].decode()] = int(d.name)
    return out


# -- the run --------------------------------------------------------------------------------------

@dataclass
class Call:
    """One call of a round: answered without an error code (and, for a job, it succeeded)."""

    round: int
    name: str
    ok: bool
    seconds: float
    code: str = ""
    message: str = ""


@dataclass
class Soak:
    t0: float = 0.0                               # monotonic start of the soak (after set-up)
    phase: str = "setup"
    round: int = 0                                # the round of calls running (0: set-up)
    samples: dict = field(default_factory=dict)   # node -> [(t_s, rss_mb, peak_mb)] (soak)
    trace: list = field(default_factory=list)     # every sample, set-up included (JSON)
    calls: list = field(default_factory=list)
    died: dict = field(default_factory=dict)      # node -> (t_s, exit code or 'gone')
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, name: str, t0: float, ok: bool, code: str = "", message: str = "") -> bool:
        """One call of the current round, its outcome and duration (since ``t0``)."""
        c = Call(self.round, name, bool(ok), round(time.monotonic() - t0, 1), code,
                 message[:300])
        with self.lock:
            self.calls.append(c)
        print(f"[soak] round {c.round} {name}: {'ok' if ok else 'FAILED'} in {c.seconds:.1f} s"
              + (f" [{code}] {message[:200]}" if not ok or code else ""), flush=True)
        return c.ok


class Camera:
    """Publishes the real frames at ``rate`` Hz on its own node, from its own thread (a
    publisher needs no executor)."""

    def __init__(self, frames, intr, rate: float):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from nol_ros.ros.qos import sensor_qos

        self.frames, self.intr, self.rate = frames, intr, rate
        self.play = list(range(len(frames))) + list(range(len(frames) - 1, 0, -1))
        self.node = n = rclpy.create_node("soak_camera")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.p_rgb = n.create_publisher(Image, f"{NS}/camera/rgb/image_raw", qos)
        self.p_depth = n.create_publisher(Image, f"{NS}/camera/depth_registered/image_raw", qos)
        self.p_info = n.create_publisher(CameraInfo, f"{NS}/camera/rgb/camera_info",
                                         sensor_qos())
        self.published, self.publish_errors = 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def subscribers_ready(self) -> bool:
        """The reconstruction node and the recognizer subscribe to the images."""
        return all(p.get_subscription_count() >= 2 for p in (self.p_rgb, self.p_depth))

    def start(self):
        self.thread.start()

    def _publish(self, k: int, stamp0: int, period: float):
        from nol_ros.ros.conversions import (
            depth_to_image,
            intrinsics_to_camera_info,
            ns_to_stamp,
            numpy_to_image,
        )

        rgb, depth = self.frames[self.play[k % len(self.play)]]
        st = ns_to_stamp(stamp0 + int(k * period * 1e9))
        try:
            self.p_info.publish(intrinsics_to_camera_info(self.intr, st, CAM))
            self.p_rgb.publish(numpy_to_image(rgb, "rgb8", st, CAM))
            self.p_depth.publish(depth_to_image(depth, "16UC1", st, CAM))
        except Exception as e:  # DDS "cannot publish data" under heavy load: counted
            self.publish_errors += 1
            print(f"[soak] publish failed ({self.publish_errors}): {e}", flush=True)

    def _run(self):
        """Frame k at t_start + k / rate (late frames go out at once, to keep the rate)."""
        period = 1.0 / self.rate
        t_start, stamp0, k = time.monotonic(), time.time_ns(), 0
        while not self.stop.wait(max(0.0, t_start + k * period - time.monotonic())):
            self._publish(k, stamp0, period)
            k += 1
            self.published = k

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.node.destroy_node()


class Sampler:
    """Every ``sample_s``, from its own thread: the resident memory of every node process, and
    the reconstruction node's buffer status and the recognizer's status (through the
    NolClient). A failed status call is a failed call of the round."""

    def __init__(self, driver: Driver, camera: Camera, pids: dict[str, int], procs: dict,
                 soak: Soak, sample_s: float):
        self.driver, self.camera, self.pids, self.procs = driver, camera, pids, procs
        self.soak, self.sample_s = soak, sample_s
        self.peaks_reset: dict[str, bool] = {}   # node -> its VmHWM can be reset
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        t_next = time.monotonic()
        while not self.stop.wait(max(0.0, t_next - time.monotonic())):
            t_next += self.sample_s
            self.sample()

    def sample(self):
        soak = self.soak
        t = round(time.monotonic() - soak.t0, 1) if soak.phase == "soak" else None
        row = {"phase": soak.phase, "t_s": t, "wall": time.strftime("%H:%M:%S"),
               "load": round(os.getloadavg()[0], 2), "published": self.camera.published,
               "rss_mb": {}, "peak_mb": {}}
        with soak.lock:
            for name, pid in self.pids.items():
                rss, peak = memory_mb(pid)
                if not self.peaks_reset.setdefault(name, reset_peak(pid)):
                    peak = rss   # no reset: VmHWM is the peak since start; use the sample
                proc = self.procs.get(name)
                rc = proc.poll() if proc is not None else None
                if rss != rss or rc is not None:   # NaN: the process has gone
                    soak.died.setdefault(name, (t, rc if rc is not None else "gone"))
                    continue
                row["rss_mb"][name], row["peak_mb"][name] = round(rss, 1), round(peak, 1)
                if t is not None:
                    soak.samples.setdefault(name, []).append((t, rss, peak))
        t0 = time.monotonic()
        try:
            b = self.driver.nol.buffer_status(timeout_s=30.0)
            row["reconstruction"] = {
                "received": b.frames_received, "rejected": b.frames_dropped,
                "unpaired": b.messages_unpaired, "tracked": b.tracking.frames_tracked,
                "skipped": b.tracking.frames_skipped, "keyframes": b.tracking.keyframes,
                "error_code": b.error_code}
        except NolError as e:
            soak.record("GetBufferStatus (sampler)", t0, False, e.code, str(e))
        r = self.driver.rec_status()
        if r is not None:
            row["recognizer"] = {"models_loaded": r.models_loaded,
                                 "received": r.frames_received, "processed": r.frames_processed,
                                 "busy": r.frames_dropped_busy, "rejected": r.frames_rejected,
                                 "error_code": r.error_code}
        with soak.lock:
            soak.trace.append(row)
        print("[soak] " + json.dumps(row), flush=True)

    def close(self):
        self.stop.set()
        self.thread.join(self.sample_s + 10)


class Driver:
    """The calls of the soak, all through one NolClient; every outcome goes to soak.calls."""

    def __init__(self, soak: Soak, world: Path, obj: str, relearn: str):
        from nol_ros.datasets.bop import read_bop_scene, read_models_info
        from nol_ros.ros.client import NolClient

        self.soak, self.world, self.obj, self.relearn = soak, world, obj, relearn
        info = read_models_info(world / "models" / "models_info.json")
        self.ids = {v["name"]: k for k, v in info.items()}
        for name in (obj, relearn):
            if name not in self.ids:
                raise SystemExit(f"object '{name}' is not in the world; it has "
                                 f"{sorted(self.ids)}")
        self.seq = read_bop_scene(world / "train" / "000001", world / "models")
        self.nol = NolClient(namespace=NS)

    def mesh(self, name: str) -> Path:
        return self.world / "models" / f"obj_{self.ids[name]:06d}.ply"

    def wait_ready(self, timeout_s: float = 180.0):
        """Until all six nodes serve; the recognizer's status subscribed."""
        from nol_ros.ros.client import PROBES

        self.nol.wait_for_nodes(PROBES, timeout_s)
        self.rec_status()

    def rec_status(self):
        """The recognizer's last RecognizerStatus (None before the first)."""
        st = self.nol.recognizer_status
        return st[-1] if st else None

    # -- calls and jobs ------------------------------------------------------------------------
    def call(self, name: str, fn, check=lambda r: (True, "")):
        """A synchronous call ``fn()``; ``check(reply)`` -> (ok, message). The reply, or None
        when the call raised or the check failed."""
        t0 = time.monotonic()
        try:
            r = fn()
        except NolError as e:
            self.soak.record(name, t0, False, e.code, str(e))
            return None
        ok, message = check(r)
        return r if self.soak.record(name, t0, ok, getattr(r, "error_code", ""), message) \
            else None

    def submit(self, jobs: list, name: str, fn) -> None:
        """Submit a job (``fn()`` -> Job) and append (name, job, t0) to ``jobs``; a refusal is
        a failed call."""
        t0 = time.monotonic()
        try:
            jobs.append((name, fn(), t0))
        except NolError as e:
            self.soak.record(name, t0, False, e.code, str(e))

    def wait_jobs(self, jobs: list, timeout_s: float = 3600.0) -> None:
        """Wait for all jobs of :meth:`submit` at once (NolClient.wait, a thread each) and
        record each when it ends, with its own duration."""
        def finish(item):
            name, job, t0 = item
            try:
                res = self.nol.wait(job, timeout_s)
                self.soak.record(name, t0, res.succeeded, res.error_code, res.message)
            except NolError as e:
                self.soak.record(name, t0, False, e.code, str(e))

        if jobs:
            with ThreadPoolExecutor(len(jobs)) as ex:
                list(ex.map(finish, jobs))

    def learn(self, name: str):
        from nol_ros.learn import SOURCE_BAG

        return lambda: self.nol.learn_object(name, str(self.mesh(name)), SOURCE_BAG,
                                             str(self.world / "bags" / "train_000001"),
                                             "render.preset: tiny")

    def trainings(self, seed: int):
        opts = f"seed: {seed}"
        return [("TrainDetector", lambda: self.nol.train_detector([self.obj], "tiny", opts)),
                ("TrainPoseEstimator",
                 lambda: self.nol.train_pose_estimator([self.obj], "tiny", opts))]

    def render_views(self) -> None:
        """RenderViews of --object: 4 poses of the world's sequence in a 128 px crop around
        the object, then one full 640x480 frame."""
        from nol_ros.camera import Intrinsics

        K, oid = self.seq.intrinsics, self.ids[self.obj]
        n = len(self.seq.frames)
        Ts = [self.seq.T_camera_object(i, oid) for i in range(0, n, max(1, n // 4))][:4]
        c = K.K @ Ts[0][:3, 3]
        u, v = c[0] / c[2], c[1] / c[2]
        crop = Intrinsics(K.fx, K.fy, K.cx - round(u - 64), K.cy - round(v - 64), 128, 128)
        for name, intr, poses in (("RenderViews 4x128px", crop, Ts),
                                  ("RenderViews 640x480", K, Ts[:1])):
            self.call(name, lambda i=intr, p=poses: self.nol.render_views(self.obj, p, i),
                      lambda r, p=poses: (len(r.images) == len(p),
                                          f"{len(r.images)} images for {len(p)} poses"))

    def round(self) -> None:
        """One round of calls (see the module doc)."""
        t_round = time.monotonic()
        rec0 = self.rec_status()
        jobs: list = []
        self.submit(jobs, f"LearnObject {self.relearn}", self.learn(self.relearn))
        for name, fn in self.trainings(seed=self.soak.round):
            self.submit(jobs, name, fn)
        self.submit(jobs, "SelectViews", lambda: self.nol.select_views(
            [self.obj], [self.mesh(self.obj)], self.world / "train" / "000001", "soak_select"))
        self.render_views()
        # the live buffer exported, then fetched by the transfer node from itself
        if self.call("ExportSequence", lambda: self.nol.export_sequence("soak_export", 10),
                     lambda r: (True, f"{r.frames} frames")) is not None:
            self.submit(jobs, "Fetch soak_export", lambda: self.nol.fetch(
                f"{NS}/transfer", "soak_export", "_soak_fetch/soak_export"))
        self.wait_jobs(jobs)
        self.call("GetBufferStatus", self.nol.buffer_status,
                  lambda s: (s.error_code == "" and s.frames_received > 0,
                             f"{s.frames_received} frames received, {s.frames_dropped} rejected"))
        # the recognizer: it recognised frames of the live stream during the round and
        # rejected none (its models were reloaded after the training)
        rec1 = self.rec_status()
        ok = (rec0 is not None and rec1 is not None and rec1.models_loaded
              and rec1.frames_processed > rec0.frames_processed
              and rec1.frames_rejected == rec0.frames_rejected)
        self.soak.record("recognizer stream", t_round, ok, rec1.error_code if rec1 else "",
                         "" if rec1 is None or rec0 is None else
                         f"{rec1.frames_processed - rec0.frames_processed} frames recognised, "
                         f"{rec1.frames_dropped_busy - rec0.frames_dropped_busy} skipped while "
                         f"busy, {rec1.frames_rejected - rec0.frames_rejected} rejected")

    def setup(self) -> None:
        """Learn --object, then train the tiny recognisers once; wait for the recognizer to
        load them."""
        for stage, calls in (("the object could not be learnt",
                              [(f"LearnObject {self.obj}", self.learn(self.obj))]),
                             ("training", self.trainings(seed=0))):
            jobs: list = []
            for name, fn in calls:
                self.submit(jobs, name, fn)
            self.wait_jobs(jobs)
            if not all(c.ok for c in self.soak.calls):
                raise SystemExit(f"set-up failed: {stage}")
        self.nol.wait_until(lambda: (s := self.rec_status()) is not None and s.models_loaded,
                            120, "the recognizer to load the models")

    def destroy(self):
        self.nol.destroy()


def prepare(work: Path) -> Path:
    """The working folder: a fresh nol_workspace holding the small world (generated once)."""
    ws = work / "nol_workspace"
    world = work / WORLD
    keep = None
    if (world / "world.json").is_file() and (world / "bags" / "train_000001").is_dir():
        keep = work / "_world_kept"
        shutil.rmtree(keep, ignore_errors=True)
        world.rename(keep)
    shutil.rmtree(ws, ignore_errors=True)
    shutil.rmtree(work / "logs", ignore_errors=True)
    world.parent.mkdir(parents=True, exist_ok=True)
    if keep is not None:
        keep.rename(world)
    else:
        from nol_ros.datasets.synthetic.generate import generate

        print(f"[soak] generating the small synthetic world in {world} ...", flush=True)
        generate(world, "small", seed=0, progress=False)
    return world


def log_offsets(logs: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in logs.glob("*.log")}


def new_log_errors(logs: Path, offsets: dict[str, int]) -> dict[str, list[str]]:
    out = {}
    for p in sorted(logs.glob("*.log")):
        with open(p, "rb") as f:
            f.seek(offsets.get(p.name, 0))
            errs = error_lines(f.read().decode(errors="replace"))
        if errs:
            out[p.stem] = errs
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="soak length after set-up")
    ap.add_argument("--warmup-minutes", type=float, default=3.0,
                    help="warm-up: this long or the first round of calls, whichever is longer")
    ap.add_argument("--warmup-rounds", type=int, default=2,
                    help="warm-up: at least this many rounds of calls (see the module doc)")
    ap.add_argument("--cycle-minutes", type=float, default=2.5,
                    help="a round of calls starts this often (or when the last one ended)")
    ap.add_argument("--dataset", default=str(DEFAULT_DATA), help="TUM RGB-D sequence folder")
    ap.add_argument("--work", default="build/soak_all", help="working folder (the nodes' cwd)")
    ap.add_argument("--object", default="mustard_bottle",
                    help="learnt and trained at set-up; rendered, selected, trained each round")
    ap.add_argument("--relearn-object", default="cracker_box", help="learnt again each round")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--max-growth", type=float, default=0.05)
    ap.add_argument("--json", default="build/soak_all.json")
    a = ap.parse_args(argv)

    from nol_ros.ros.environment import default_ros_env

    default_ros_env()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
    work = Path(a.work).resolve()
    world = prepare(work)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    started = datetime.datetime.now().isoformat(timespec="seconds")

    from nol_ros.datasets.tum import read_tum_sequence

    seq = read_tum_sequence(a.dataset, intrinsics="calibrated")
    print(f"[soak] decoding {len(seq.frames)} frames of {seq.name} ...", flush=True)
    frames = [(f.load_rgb(), f.load_depth()) for f in seq.frames]

    bin_dir = Path(sys.executable).parent
    bringup_log = open(work / "bringup.log", "w")  # noqa: SIM115
    transfer_log = open(logs / "transfer.log", "w")  # noqa: SIM115
    bringup = subprocess.Popen(
        [str(bin_dir / "nol-ros"), "bringup", "--config", "robot", f"namespace:={NS[1:]}",
         "--log-dir", str(logs)], cwd=work, stdout=bringup_log, stderr=subprocess.STDOUT)
    transfer = subprocess.Popen(
        [str(bin_dir / "transfer_node"), "--ros-args", "-r", "__node:=transfer", "-r",
         f"__ns:={NS}", "--params-file", str(ROOT / "config" / "transfer.yaml")],
        cwd=work, stdout=transfer_log, stderr=subprocess.STDOUT)
    soak = Soak()
    pids: dict[str, int] = {}
    import rclpy

    rclpy.init()
    camera = driver = sampler = None
    code = 0
    try:
        t_wait = time.monotonic()
        while True:
            pids = {**node_processes(bringup.pid), "transfer": transfer.pid}
            if set(pids) >= set(NODES):
                break
            if bringup.poll() is not None or transfer.poll() is not None:
                raise SystemExit(f"the graph did not start (see {work}/bringup.log, {logs})")
            if time.monotonic() - t_wait > 60:
                raise SystemExit(f"node processes not found: have {sorted(pids)}")
            time.sleep(0.5)
        pids = {k: pids[k] for k in NODES}
        print(f"[soak] graph up: {pids}", flush=True)
        driver = Driver(soak, world, a.object, a.relearn_object)
        camera = Camera(frames, seq.intrinsics, a.rate)
        sampler = Sampler(driver, camera, pids, {"transfer": transfer}, soak, a.sample_s)
        driver.wait_ready()
        driver.nol.wait_until(camera.subscribers_ready, 120,
                              "the reconstruction node and the recognizer to subscribe")
        camera.start()
        sampler.start()
        t_setup = time.monotonic()
        driver.setup()
        setup_s = time.monotonic() - t_setup
        offsets = log_offsets(logs)
        soak.t0, soak.phase = time.monotonic(), "soak"
        print(f"[soak] set-up done in {setup_s:.0f} s; soaking {a.minutes:g} min", flush=True)
        rnd, round_starts, round_ends = 0, [], []
        while time.monotonic() - soak.t0 < a.minutes * 60 and not soak.died \
                and bringup.poll() is None:
            rnd += 1
            soak.round = rnd
            round_starts.append(time.monotonic() - soak.t0)
            driver.round()
            round_ends.append(time.monotonic() - soak.t0)
            nxt = soak.t0 + rnd * a.cycle_minutes * 60
            driver.nol.wait_until(lambda n=nxt: time.monotonic() >= n or bool(soak.died),
                                  a.cycle_minutes * 60 + 5, "the next round")
        n_trace = len(soak.trace)   # one more sample after the last round
        driver.nol.wait_until(lambda: len(soak.trace) > n_trace, a.sample_s * 2 + 5,
                              "a last sample")
        soak_s = time.monotonic() - soak.t0
        soak.phase = "end"
        log_errs = new_log_errors(logs, offsets)
    finally:
        for part in (sampler, camera):
            if part is not None:
                part.close()
        if driver is not None:
            driver.destroy()
        rclpy.shutdown()
        stop_processes((bringup, transfer), 30.0)
        bringup_log.close()
        transfer_log.close()
    load_end = os.getloadavg()
    if len(round_ends) <= a.warmup_rounds:
        print(f"[soak] only {len(round_ends)} rounds: the warm-up needs {a.warmup_rounds} and "
              "one more to judge; give more --minutes", flush=True)
    warmup_s = max([a.warmup_minutes * 60] + round_ends[:a.warmup_rounds])
    try:
        mem = memory_verdict(soak.samples, warmup_s, a.max_growth)
    except ValueError as e:   # too short to judge: say so, fail
        print(f"FAIL {e}", flush=True)
        mem = [NodeMemory(n, 0.0, 0.0, 0.0, float("nan"), False) for n in soak.samples]
    per_round = round_peaks(soak.samples, round_starts)
    failed_calls = [c for c in soak.calls if not c.ok]
    rej_rec = [s["reconstruction"]["rejected"] for s in soak.trace
               if s["phase"] == "soak" and "reconstruction" in s]
    verdicts = {
        "memory flat": all(m.ok for m in mem),
        "no node died": not soak.died,
        "every call answered without an error": not failed_calls,
        "reconstruction rejected no frame": bool(rej_rec) and rej_rec[-1] == rej_rec[0],
        "no error in the node logs": not log_errs,
    }
    table = memory_table(mem, a.max_growth)
    rounds = max((c.round for c in soak.calls), default=0)
    result = {"started": started, "minutes": a.minutes, "soak_s": round(soak_s, 1),
              "setup_s": round(setup_s, 1), "warmup_s": round(warmup_s, 1),
              "warmup_rounds": a.warmup_rounds, "round_starts_s": round_starts,
              "round_ends_s": round_ends, "round_peaks_mb": per_round, "rounds": rounds,
              "cycle_minutes": a.cycle_minutes, "rate_hz": a.rate,
              "published": camera.published, "publish_errors": camera.publish_errors,
              "load_start": load_start, "load_end": load_end,
              "memory": [asdict(m) for m in mem], "verdicts": verdicts,
              "died": soak.died, "log_errors": log_errs,
              "calls": [asdict(c) for c in soak.calls], "trace": soak.trace}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"\n[soak] {rounds} rounds of calls in {soak_s / 60:.1f} min after a {setup_s:.0f} s "
          f"set-up; warm-up {warmup_s:.0f} s; {camera.published} frame sets published at "
          f"{a.rate:g} Hz; load {load_start[0]:.1f} -> {load_end[0]:.1f}")
    print(table)
    print(round_table(per_round, a.warmup_rounds))
    per_call: dict[str, list[float]] = {}
    for c in soak.calls:
        per_call.setdefault(c.name, []).append(c.seconds)
    print("calls (seconds per round): " + "; ".join(
        f"{k} {', '.join(f'{s:.0f}' for s in v)}" for k, v in per_call.items()))
    last = soak.trace[-1] if soak.trace else {}
    print(f"last status: reconstruction {last.get('reconstruction')}, recognizer "
          f"{last.get('recognizer')}")
    for k, ok in verdicts.items():
        print(f"{'ok  ' if ok else 'FAIL'} {k}")
    for m in mem:
        if not m.ok:
            print(f"FAIL memory of node '{m.node}' grew {m.growth * 100:+.1f} % after the warm-up")
    for name, (t, rc) in soak.died.items():
        print(f"FAIL node '{name}' died at t={t} s (exit {rc})")
    for c in failed_calls:
        print(f"FAIL round {c.round} {c.name}: [{c.code}] {c.message}")
    for node, errs in log_errs.items():
        print(f"FAIL {len(errs)} error line(s) in {node}.log, first: {errs[0][:200]}")
    if not all(verdicts.values()):
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
