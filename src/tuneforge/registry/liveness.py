"""Is the process that owns a `running` run still alive? (pid + host + process start time)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Owner:
    pid: int
    hostname: str
    proc_start: int | None  # process creation time in ms since the epoch; tells a reused pid apart


def _start_ms(proc: psutil.Process) -> int:
    return int(round(proc.create_time() * 1000))


def current_owner() -> Owner:
    pid = os.getpid()
    try:
        start = _start_ms(psutil.Process(pid))
    except (psutil.Error, OSError):
        start = None
    return Owner(pid=pid, hostname=socket.gethostname(), proc_start=start)


def owner_state(pid: int | None, hostname: str | None, proc_start: int | None) -> str:
    """'alive', 'dead' or 'unknown' (another host, or no pid recorded: we cannot tell from here)."""
    if pid is None or hostname != socket.gethostname():
        return "unknown"
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return "dead"
        if proc_start is not None and abs(_start_ms(proc) - proc_start) > 1000:
            return "dead"  # the pid now belongs to another process
        return "alive"
    except psutil.NoSuchProcess:
        return "dead"
    except (psutil.Error, OSError):
        return "unknown"
