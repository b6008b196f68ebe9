"""The pipe protocol between bench/sft_throughput.py and its contestant processes, and their memory readings.

Standard library only: the anchor contestants (bench/sft_anchor_child.py) import it from their own venvs, which
have no tuneforge."""

from __future__ import annotations

import json
import os
from pathlib import Path


class Channel:
    """JSON lines over two pipe fds (parent ↔ child); stdout/stderr of the child stay free for library chatter."""

    def __init__(self, rfd: int, wfd: int):
        self.r = os.fdopen(rfd, "r", encoding="utf-8")
        self.w = os.fdopen(wfd, "w", encoding="utf-8")

    def send(self, **msg):
        self.w.write(json.dumps(msg) + "\n")
        self.w.flush()

    def recv(self) -> dict:
        line = self.r.readline()
        if not line:
            raise EOFError("channel closed")
        return json.loads(line)


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MB (VmHWM, VmRSS); NaN when the system has none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM: per address space, so not inherited from the forking parent);
    getrusage's maximum where /proc is missing."""
    peak = status_mb("VmHWM")
    if peak == peak:  # not NaN
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident set now (VmRSS): what a contestant holds while the others run."""
    return status_mb("VmRSS")


# Set by the parent (sft_throughput --trim): "0" leaves each contestant's allocator as its framework configures it.
TRIM_ENV = "TUNEFORGE_BENCH_TRIM"


def cpu_since(start: os.times_result) -> dict:
    """This process's user and system CPU seconds (all its threads) since `start`, and their sum as `cpu`.

    The split matters on a virtual machine, where page faults are expensive: system time is mostly the kernel
    mapping and unmapping memory, user time the computation itself."""
    now = os.times()
    user, sys_ = now.user - start.user, now.system - start.system
    return {"cpu": user + sys_, "user": user, "sys": sys_}


def release_free_memory() -> None:
    """Give freed heap pages back to the OS while a contestant waits, so idle contestants stay small (unless the
    parent said not to: TRIM_ENV=0). The price: every step faults its working set in again."""
    if os.environ.get(TRIM_ENV, "1") == "0":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
