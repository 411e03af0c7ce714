"""JobManager: order, progress, failures with codes, cancellation, queue limit."""

import threading

import pytest

from nol_ros.errors import InputError
from nol_ros.jobs import JobManager, JobState, QueueFullError


def test_jobs_run_in_order_with_progress_and_results():
    updates = []
    m = JobManager(on_update=updates.append)
    order = []

    def make(name):
        def fn(p):
            for i in range(3):
                p.report("work", (i + 1) / 3, f"{name} step {i}")
            order.append(name)
            return f"/tmp/{name}"
        return fn

    a = m.submit("learn_object", make("a"), "a")
    b = m.submit("learn_object", make("b"), "b")
    assert m.wait(b.job_id, 60).state == JobState.SUCCEEDED
    assert order == ["a", "b"]
    assert m.get(a.job_id).result_path == "/tmp/a" and m.get().job_id == b.job_id
    fr = [u.fraction for u in updates if u.job_id == a.job_id and u.state == JobState.RUNNING]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)
    m.shutdown()


def test_failure_is_recorded_and_worker_survives():
    m = JobManager()

    def bad(p):
        raise InputError("mesh 'x.ply' not found; pass an existing file")

    def crash(p):
        raise ZeroDivisionError("boom")

    j1 = m.submit("learn_object", bad)
    j2 = m.submit("learn_object", crash)
    j3 = m.submit("learn_object", lambda p: "ok")
    assert m.wait(j3.job_id, 60).state == JobState.SUCCEEDED
    f1, f2 = m.get(j1.job_id), m.get(j2.job_id)
    assert f1.state == JobState.FAILED and f1.error_code == "BAD_INPUT" and "x.ply" in f1.message
    assert f2.state == JobState.FAILED and f2.error_code == "INTERNAL_ERROR"
    m.shutdown()


def test_cancel_running_and_queued_and_queue_limit():
    m = JobManager(max_queued=1)
    started, release = threading.Event(), threading.Event()

    def long(p):
        started.set()
        while True:
            release.wait(0.01)
            p.report("loop", 0.5)

    run = m.submit("learn_object", long)
    assert started.wait(60)
    queued = m.submit("learn_object", lambda p: "never")
    with pytest.raises(QueueFullError, match="max_queued=1"):
        m.submit("learn_object", lambda p: "x")
    assert m.cancel(queued.job_id).state == JobState.CANCELLED
    m.cancel(run.job_id)
    assert m.wait(run.job_id, 60).state == JobState.CANCELLED
    m.shutdown()


def test_job_ids_differ_across_restarts_and_old_jobs_are_forgotten():
    a, b = JobManager(), JobManager(keep_finished=3)
    ja = a.submit("learn_object", lambda p: "x")
    jb = b.submit("learn_object", lambda p: "x")
    assert ja.job_id != jb.job_id and ja.job_id.endswith("-0001") and jb.job_id.endswith("-0001")
    assert b.get(ja.job_id) is None        # an id of the "previous run": unknown, not another job
    for _ in range(5):
        j = b.submit("learn_object", lambda p: "x")
        b.wait(j.job_id, 60)
    assert len(b.jobs()) == 4 and b.get(j.job_id).state == JobState.SUCCEEDED   # 3 + the last
    a.shutdown()
    b.shutdown()


def test_a_job_past_its_time_budget_fails_and_the_worker_goes_on():
    """max_job_s: a running job that reports progress past its budget fails with TIME_BUDGET
    (the next job gets a budget of its own); a job that ends within it succeeds."""
    import time

    m = JobManager(max_job_s=0.05)
    reports = []

    def endless(p):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:   # the budget stops it long before
            p.report("work", 0.5)
            reports.append(time.monotonic() - t0)
            time.sleep(0.005)
        return "never"

    j1 = m.submit("learn_object", endless)
    j2 = m.submit("learn_object", lambda p: (p.report("work", 1.0), "ok")[1])
    assert m.wait(j2.job_id, 120).state == JobState.SUCCEEDED
    f1 = m.get(j1.job_id)
    assert f1.state == JobState.FAILED and f1.error_code == "TIME_BUDGET", f1
    assert "max_job_s = 0.05" in f1.message
    assert reports and reports[-1] < 30      # stopped by the budget, not by the loop's end
    m.shutdown()
    with pytest.raises(ValueError, match="max_job_s"):
        JobManager(max_job_s=float("nan"))


def test_job_messages_are_cut_to_a_bounded_size():
    """An error that echoes a huge input (a 100 kB name) gives a status message of at most
    MAX_MESSAGE_CHARS, saying how much was cut; short messages are left alone."""
    from nol_ros.errors import MAX_MESSAGE_CHARS, NolError

    m = JobManager()
    huge = "x" * 100_000
    j1 = m.submit("learn_object", lambda p: (_ for _ in ()).throw(InputError(f"name {huge}")))
    j2 = m.submit("learn_object", lambda p: (_ for _ in ()).throw(KeyError(huge)))
    assert m.wait(j2.job_id, 60).done
    for j in (j1, j2):
        msg = m.get(j.job_id).message
        assert len(msg) <= MAX_MESSAGE_CHARS and msg.endswith("characters cut]"), len(msg)
    assert str(NolError("short")) == "short"
    m.shutdown()


def test_a_reported_error_code_is_raised_again_as_its_own_class():
    """error_for_code (learn and the selection service re-raise a report's per-object error):
    a code a class defines comes back as that class (MESH_MISMATCH: bad input, the CLI's exit
    2); an unknown code as a NolError that carries it."""
    from nol_ros.errors import NolError, error_for_code
    from nol_ros.reconstruction.registration import MeshMismatchError, RegistrationError

    e = error_for_code("MESH_MISMATCH", "mug: the mesh matches nothing")
    assert type(e) is MeshMismatchError and isinstance(e, InputError) and e.code == "MESH_MISMATCH"
    assert type(error_for_code("REGISTRATION_FAILED", "x")) is RegistrationError
    u = error_for_code("SOMETHING_NEW", "y")
    assert type(u) is NolError and u.code == "SOMETHING_NEW" and str(u) == "y"
