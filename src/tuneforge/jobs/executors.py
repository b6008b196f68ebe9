"""Where job workers run. An executor starts `python -m tuneforge.jobs.worker JOB_ID`, tells whether a worker is
alive, and stops one. The job's record (registry) says which executor ran it and how to find its worker again, so a
restarted server can judge workers it did not start.

- `local` (default): a process on this machine, in its own session (it outlives the server; the next server adopts
  it). Liveness: pid + host + process start time, so a reused pid is not mistaken for the worker.
- `ray`: see jobs.ray_executor.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tuneforge.registry.liveness import owner_state

STALE_HEARTBEAT_S = 60.0  # a worker elsewhere that has not beaten for this long is taken for dead


@dataclass(frozen=True)
class Launched:
    """What the job's record keeps about its worker."""

    pid: int | None
    host: str | None
    start: int | None  # process start (ms since the epoch)
    ref: str | None  # the executor's own handle


class Executor(Protocol):
    name: str

    def launch(self, job_id: str, argv: list[str], env: dict[str, str], log_path: Path) -> Launched: ...

    def state(self, job) -> str:
        """alive | dead | unknown (cannot tell from here: the scheduler then goes by the heartbeat)."""

    def stop(self, job, *, force: bool = False) -> None:
        """Ask the worker to stop (SIGTERM: it saves a checkpoint after the current step), or kill it (force)."""

    def exit_code(self, job) -> int | None: ...


def worker_argv(job_id: str, storage: Path) -> list[str]:
    return [sys.executable, "-m", "tuneforge.jobs.worker", job_id, "--storage", str(storage)]


class LocalExecutor:
    name = "local"

    def __init__(self):
        self._children: dict[int, subprocess.Popen] = {}

    def launch(self, job_id: str, argv: list[str], env: dict[str, str], log_path: Path) -> Launched:
        import psutil

        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **env}, cwd=str(log_path.parent), start_new_session=True)
        self._children[proc.pid] = proc
        try:
            start = int(round(psutil.Process(proc.pid).create_time() * 1000))
        except psutil.Error:
            start = None
        return Launched(proc.pid, socket.gethostname(), start, None)

    def state(self, job) -> str:
        child = self._children.get(job.worker_pid)
        if child is not None:
            return "alive" if child.poll() is None else "dead"  # poll() also reaps it (no zombie)
        return owner_state(job.worker_pid, job.worker_host, job.worker_start)

    def exit_code(self, job) -> int | None:
        child = self._children.pop(job.worker_pid, None)
        return child.poll() if child is not None else None

    def stop(self, job, *, force: bool = False) -> None:
        if self.state(job) != "alive":
            return
        try:
            os.kill(job.worker_pid, signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            pass


def make_executor(name: str, ray_address: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from tuneforge.jobs.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    raise ValueError(f"unknown executor {name!r}")
