"""One background thread per recorder that performs its registry writes in the order they were asked for.

A busy database (another process holding the write lock, `tuneforge runs list` on a slow disk, a PostgreSQL server
far away) then delays the records, never the training step that produced them. `flush()` waits until everything
asked for so far has been written; at interpreter exit every writer with pending jobs is flushed (bounded wait).
Jobs handle their own errors: an exception escaping a job is swallowed so the thread never dies.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from typing import Callable

EXIT_FLUSH_TIMEOUT_S = 120.0
_STOP = object()
_LIVE: "weakref.WeakSet[BackgroundWriter]" = weakref.WeakSet()


class BackgroundWriter:
    """A FIFO of jobs run by one daemon thread, started on the first job (and again after a fork)."""

    def __init__(self, name: str = "tuneforge-registry-writer"):
        self.name = name
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._start_thread()
            self._queue.put(job)

    def _start_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child must not share the parent's queue
            self._queue = queue.Queue()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _loop(self) -> None:
        q = self._queue
        while True:
            job = q.get()
            try:
                if job is _STOP:
                    return
                job()
            except BaseException:  # noqa: BLE001 - a job reports its own errors; the thread must survive
                pass
            finally:
                q.task_done()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far has run; False when `timeout` passed first."""
        if self._thread is None or self._pid != os.getpid():
            return True
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread (a later `submit` starts a new one)."""
        flushed = self.flush(timeout)
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None and self._pid == os.getpid():
                self._queue.put(_STOP)
        if flushed and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _LIVE.discard(self)
        return flushed

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks if self._pid == os.getpid() else 0


def _flush_all_at_exit() -> None:
    for writer in list(_LIVE):
        if writer.pending:
            writer.flush(EXIT_FLUSH_TIMEOUT_S)


atexit.register(_flush_all_at_exit)
