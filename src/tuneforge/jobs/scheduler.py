"""The job queue's loop, a thread in the server: start queued jobs while fewer than `concurrency` workers run,
watch the workers, and settle every job whose worker is gone.

A worker writes its own job's end (jobs.worker). One that died without doing so (killed, out of memory, the machine
rebooted) leaves its job `running` or `pausing`; the scheduler then queues it again (it resumes from its last
checkpoint) until `max_attempts` starts have been used, and fails it with the reason after that. The same pass
runs when a server starts, so jobs of a server that died are settled too, and workers that outlived it are adopted.
A cancelled job's worker gets SIGTERM, and SIGKILL when it has not stopped after CANCEL_GRACE_S.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from pathlib import Path

from tuneforge.jobs import store as js
from tuneforge.jobs.executors import STALE_HEARTBEAT_S, Executor, worker_argv
from tuneforge.registry.records import utcnow
from tuneforge.registry.store import Store

log = logging.getLogger("tuneforge.jobs")
CANCEL_GRACE_S = 30.0
_NO_WORKER = dict(worker_pid=None, worker_host=None, worker_start=None, worker_ref=None)


class Scheduler:
    def __init__(self, store: Store, executor: Executor, storage: Path, *, concurrency: int = 1,
                 max_attempts: int = 3, poll_s: float = 0.5):
        self.store, self.executor, self.storage = store, executor, Path(storage)
        self.concurrency, self.max_attempts, self.poll_s = concurrency, max_attempts, poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping: dict[str, dt.datetime] = {}  # cancelled job → when its worker got SIGTERM

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.tick()  # settle what a previous server left before answering requests
        self._thread = threading.Thread(target=self._loop, name="tuneforge-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop; running workers go on (the next server adopts them)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a failing pass (busy database) must not end the loop
                log.exception("job scheduler pass failed; retrying")

    # --- one pass ----------------------------------------------------------------------------------------------------

    def tick(self) -> None:
        for job in js.jobs_with_workers(self.store):
            self._watch(job)
        self._dispatch()
        for job in js.jobs_in(self.store, js.ACTIVE):
            if job.worker_pid is None and job.worker_ref is None:  # marked running, but its worker never started
                self._settle_dead(job, "its worker was never started (the server stopped while launching it)")

    def _state(self, job) -> str:
        state = self.executor.state(job)
        if state != "unknown":
            return state
        beat = job.heartbeat_at or job.started_at
        return "alive" if beat and (utcnow() - beat).total_seconds() < STALE_HEARTBEAT_S else "dead"

    def _watch(self, job) -> None:
        state = self._state(job)
        if state == "alive":
            if job.status == "cancelled":
                self._stop_cancelled(job)
            return
        code = self.executor.exit_code(job)
        self._stopping.pop(job.id, None)
        js.update_job(self.store, job.id, **_NO_WORKER)
        if job.status in js.ACTIVE:
            self._settle_dead(job, _how_it_ended(code))

    def _stop_cancelled(self, job) -> None:
        first = self._stopping.get(job.id)
        if first is None:
            self._stopping[job.id] = utcnow()
            self.executor.stop(job)
        elif (utcnow() - first).total_seconds() > CANCEL_GRACE_S:
            self.executor.stop(job, force=True)

    def _settle_dead(self, job, how: str) -> None:
        """A job whose worker ended without writing the job's end."""
        from tuneforge.train.output import checkpoint_step, latest_checkpoint

        if job.status == "pausing":
            js.update_job(self.store, job.id, status="paused", requested=None, estimated_finish=None, **_NO_WORKER)
            js.add_event(self.store, job.id, f"Fine-tuning job paused: {how}", level="warn")
            return
        ckpt = latest_checkpoint(Path(job.run_dir)) if job.run_dir else None
        where = f"checkpoint step {checkpoint_step(ckpt)}" if ckpt else "the start (no checkpoint yet)"
        if job.attempts < self.max_attempts:
            js.update_job(self.store, job.id, status="queued", estimated_finish=None, **_NO_WORKER)
            js.add_event(self.store, job.id, f"The worker stopped unexpectedly ({how}); the job restarts from "
                                             f"{where} (start {job.attempts + 1} of {self.max_attempts})", level="warn")
            return
        message = f"the worker stopped unexpectedly ({how}) on each of {job.attempts} starts"
        js.update_job(self.store, job.id, status="failed", finished_at=utcnow(), estimated_finish=None,
                      error={"code": "worker_died", "message": message, "param": None}, **_NO_WORKER)
        js.add_event(self.store, job.id, f"Fine-tuning job failed: {message}; its log: "
                                         f"{self._log_path(job.id)}", level="error")

    def _busy(self) -> int:
        return len(js.jobs_with_workers(self.store))

    def _dispatch(self) -> None:
        free = self.concurrency - self._busy()
        for job in js.jobs_in(self.store, ("queued",))[:max(free, 0)]:
            claimed = self._claim(job.id)
            if claimed is not None:
                self._launch(claimed)

    def _claim(self, job_id: str):
        """queued → running in one transaction (a cancel in between wins); None when the job is no longer queued."""
        from tuneforge.registry.serving import FineTuningJob

        def go(s):
            row = s.get(FineTuningJob, job_id)
            if row is None or row.status != "queued":
                return None
            row.status, row.attempts, row.executor = "running", row.attempts + 1, self.executor.name
            row.started_at = row.started_at or utcnow()
            row.heartbeat_at = utcnow()
            return row

        return self.store.write(go)

    def _launch(self, job) -> None:
        env = {"TUNEFORGE_REGISTRY_URL": self.store.url, "PYTHONUNBUFFERED": "1"}
        try:
            launched = self.executor.launch(job.id, worker_argv(job.id, self.storage), env, self._log_path(job.id))
        except Exception as err:  # noqa: BLE001 - the job fails with the reason instead of staying queued
            log.exception("starting a worker for %s failed", job.id)
            js.update_job(self.store, job.id, status="failed", finished_at=utcnow(),
                          error={"code": "worker_start_failed", "message": f"{type(err).__name__}: {err}",
                                 "param": None})
            js.add_event(self.store, job.id, f"Fine-tuning job failed: its worker could not start: {err}",
                         level="error")
            return
        js.update_job(self.store, job.id, worker_pid=launched.pid, worker_host=launched.host,
                      worker_start=launched.start, worker_ref=launched.ref)

    def _log_path(self, job_id: str) -> Path:
        return self.storage / "jobs" / job_id / "worker.log"


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "its process is gone"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
