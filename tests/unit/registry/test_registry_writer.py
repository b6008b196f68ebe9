"""RunRecorder writes in the background: a locked registry never stalls the caller, and nothing is lost or reordered."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tuneforge.registry import queries
from tuneforge.registry.api import RunRecorder
from tuneforge.registry.writer import BackgroundWriter

STEPS = 20
SAFETY_RELEASE_S = 5.0  # a blocking recorder waits this long, then the test fails on the timing assertion


@contextmanager
def _write_lock(url: str):
    """Hold the registry's write lock from another connection (SQLite: BEGIN EXCLUSIVE; PostgreSQL: a table
    lock on `metrics`) until the block ends or SAFETY_RELEASE_S passed."""
    parsed, engine = make_url(url), None
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
    else:
        engine = create_engine(parsed)
        conn = engine.connect()
        conn.execute(text("LOCK TABLE metrics IN EXCLUSIVE MODE"))
    release, released = conn.rollback, threading.Lock()

    def _release_once():
        if released.acquire(blocking=False):
            release()

    timer = threading.Timer(SAFETY_RELEASE_S, _release_once)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        _release_once()
        conn.close()
        if engine is not None:
            engine.dispose()


def test_locked_registry_does_not_block_logging(store, registry_url, capsys):
    rec = RunRecorder.start(kind="train", config={}, base_model="tiny", base_model_identity="x")
    assert rec.active
    with _write_lock(registry_url):
        slowest = 0.0
        for step in range(STEPS):
            t0 = time.monotonic()
            rec.log_metrics(step, {"loss": 10.0 - step, "lr": 1e-4})
            slowest = max(slowest, time.monotonic() - t0)
        t0 = time.monotonic()
        rec.add_eval("probe", {"accuracy": 0.5})
        slowest = max(slowest, time.monotonic() - t0)
        assert slowest < 0.5, f"a logging call waited {slowest:.1f}s for the locked registry"
        assert queries.metric_series(store, rec.run_id) == {}  # nothing could be written yet
    rec.finish()
    series = queries.metric_series(store, rec.run_id)
    assert [p[0] for p in series["loss"]] == list(range(STEPS))  # (step, epoch, value, logged_at)
    assert [p[2] for p in series["loss"]] == [10.0 - s for s in range(STEPS)]
    assert queries.evals(store, rec.run_id)[0]["metrics"] == {"accuracy": 0.5}
    assert queries.get_run(store, rec.run_id).status == "succeeded"
    assert "warning" not in capsys.readouterr().err


def test_an_open_read_does_not_hold_up_a_write(store):
    """`tuneforge runs list` in another shell reads in a transaction; a training writing meanwhile must not wait."""
    from tuneforge.registry import recording
    from tuneforge.registry.records import Run

    rec = RunRecorder.start(kind="train", config={}, base_model="tiny")
    done = threading.Event()
    with store.session() as s:
        s.query(Run).all()  # the read transaction is open from here to the end of the block
        writer = threading.Thread(target=lambda: (recording.log_metrics(store, rec.run_id, 1, {"loss": 1.0}),
                                                  done.set()), daemon=True)
        writer.start()
        assert done.wait(SAFETY_RELEASE_S), "a write waited for an open read transaction"
    rec.finish()
    assert queries.final_metrics(store, rec.run_id) == {"loss": 1.0}


def test_metrics_logged_between_other_records_keep_their_order(store):
    rec = RunRecorder.start(kind="train", config={}, base_model="tiny")
    order = []
    rec.mirrors = [type("Spy", (), {"call": lambda self, hook, *a: order.append((hook, a[0])) or True})()]
    rec.log_metrics(1, {"loss": 1.0})
    rec.log_metrics(2, {"loss": 0.5})
    rec.add_eval("mid", {"acc": 1})
    rec.log_metrics(3, {"loss": 0.25})
    rec.finish()
    assert order == [("log_metrics", 1), ("log_metrics", 2), ("add_eval", "mid"), ("log_metrics", 3),
                     ("finish", "succeeded")]
    assert [p[0] for p in queries.metric_series(store, rec.run_id)["loss"]] == [1, 2, 3]


_CHILD = """
import atexit, sys
from tuneforge.registry.api import RunRecorder
rec = RunRecorder.start(kind="train", config={}, base_model="tiny")
print(rec.run_id, flush=True)
sys.stdin.readline()
for step in range(5):
    rec.log_metrics(step, {"loss": float(step)})
atexit.register(print, "exiting", flush=True)  # runs first at exit (atexit is last-in, first-out)
"""  # exits without finish(): the records still queued must be written at interpreter exit


def test_queued_records_are_flushed_when_the_process_exits(store, registry_url):
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        run_id = child.stdout.readline().strip()
        with _write_lock(registry_url):  # the child's writes are still queued when it reaches exit
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "exiting"  # the child is exiting, its writes are queued
        assert child.wait(60) == 0
    finally:
        child.kill()
    assert [p[0] for p in queries.metric_series(store, run_id)["loss"]] == list(range(5))


def test_writer_survives_a_failing_job_and_flushes():
    writer, seen = BackgroundWriter(), []
    writer.submit(lambda: 1 / 0)
    writer.submit(lambda: seen.append("after"))
    assert writer.flush(10) and seen == ["after"]
    assert writer.close(10)
