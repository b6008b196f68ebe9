"""The registry with real processes: two trainings writing at once, and a training that is killed."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

from tuneforge.registry import queries
from tuneforge.registry.api import RunRecorder
from tuneforge.registry.liveness import current_owner, owner_state
from tuneforge.registry.store import open_store
from tuneforge.registry.testing import registry_url_fixture

STEPS, KEYS = 150, ("loss", "learning_rate", "grad_norm")
registry_url = registry_url_fixture()


def _writer(url: str, name: str, go, both_started, results) -> None:
    go.wait(30)
    rec = RunRecorder.start(kind="train", config={"name": name}, base_model="tiny", base_model_identity="x",
                            datasets=[("shared", "fp-shared", 10)], url=url)  # both insert the same dataset row
    both_started.wait(30)  # so the metric writes really overlap
    for step in range(STEPS):
        rec.log_metrics(step, {k: float(step) for k in KEYS}, epoch=step / STEPS)
    rec.add_eval("final", {"acc": 1.0})
    rec.finish()
    results.put((name, rec.run_id, rec.active))


def test_two_processes_write_concurrently(registry_url, capfd):
    ctx = mp.get_context("spawn")
    go, both_started, results = ctx.Event(), ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(registry_url, n, go, both_started, results)) for n in ("a", "b")]
    for p in procs:
        p.start()
    go.set()  # both open a fresh registry (migration race) and write at the same time
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    out = dict((n, (rid, active)) for n, rid, active in (results.get(timeout=5) for _ in procs))
    assert all(active for _rid, active in out.values()), "a writer turned recording off after an error"
    store = open_store(registry_url)
    for rid, _ in out.values():
        series = queries.metric_series(store, rid)
        assert sorted(series) == sorted(KEYS)
        assert all(len(series[k]) == STEPS for k in KEYS)
        assert queries.get_run(store, rid).status == "succeeded"
    err = capfd.readouterr().err
    assert "locked" not in err and "warning" not in err


def _doomed(url: str, queue) -> None:
    rec = RunRecorder.start(kind="train", config={}, base_model="tiny", base_model_identity="x", url=url)
    rec.log_metrics(1, {"loss": 1.0})
    queue.put(rec.run_id)
    signal.pause()


def test_killed_training_is_marked_interrupted(registry_url):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_doomed, args=(registry_url, queue))
    child.start()
    rid = queue.get(timeout=60)
    store = open_store(registry_url)
    assert queries.get_run(store, rid).status == "running"  # owner alive: left alone
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    runs = {r.id: r for r in queries.list_runs(store)}
    assert runs[rid].status == "interrupted"
    assert str(child.pid) in runs[rid].error and runs[rid].ended_at is not None


def test_owner_states():
    me = current_owner()
    assert owner_state(me.pid, me.hostname, me.proc_start) == "alive"
    assert owner_state(me.pid, me.hostname, me.proc_start - 60_000) == "dead"  # pid reused by another process
    assert owner_state(me.pid, "another-host", me.proc_start) == "unknown"
    assert owner_state(None, me.hostname, None) == "unknown"
