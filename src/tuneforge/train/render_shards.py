"""A stage's rows rendered into Arrow shards, in chunks, by several processes when there are many rows.

Workers are forked, so they inherit the tokenizer and the stage without pickling them; each renders a range of rows
with `stage.prepare` and writes its items as one shard. Results come back in row order, so the shards (and every
item) are the same for any number of processes.

Rows: with several processes the records are first written, pickled one after another, to a file in the entry's
staging folder and dropped from the parent; each worker unpickles only its own range from the memory-mapped file. A
million rows then cost their bytes once (in the page cache, shared) instead of their Python objects in the parent
plus the pages every worker copies when it touches them (reference counts write to every object a worker reads).
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import pickle
import signal
import time
from array import array
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from tuneforge.data.arrow_items import write_shard
from tuneforge.utils.errors import DataError
from tuneforge.utils.progress import progress_bar

CHUNK_ROWS = 4096
AUTO_PARALLEL_ROWS = 10_000  # num_proc auto: below this many rows one process renders (forking costs more)

_JOB: tuple | None = None  # (stage, rows, tok, data_cfg, params, folder, prefix), set before the fork
SPILLED = "rows.pickles"  # the spilled records, removed once rendered


class SpilledRows:
    """Records pickled one after another in a file: `rows[start:stop]` unpickles that range only."""

    def __init__(self, records: list, path: Path):
        self.offsets = array("q", [0])
        with open(path, "wb") as f:
            for rec in records:
                f.write(pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL))
                self.offsets.append(f.tell())
        self.path = path
        self._map = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, span: slice) -> list:
        if self._map is None:  # opened in each worker after the fork
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.offsets[-1] else b""
        start, stop, _ = span.indices(len(self))
        return [pickle.loads(self._map[self.offsets[i]:self.offsets[i + 1]]) for i in range(start, stop)]


def resolve_num_proc(setting, rows: int) -> int:
    """`data.num_proc` → a process count: auto is one per usable core from AUTO_PARALLEL_ROWS rows on, else 1."""
    if setting != "auto":
        return max(1, int(setting))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if rows >= AUTO_PARALLEL_ROWS else 1


def _render_chunk(task: tuple[int, int, int]) -> tuple[str | None, dict, int]:
    n, start, stop = task
    stage, rows, tok, data_cfg, params, folder, prefix = _JOB
    prepared = stage.prepare(rows[start:stop], tok, data_cfg, params)
    if not prepared.items:
        return None, prepared.stats, stop - start
    name = f"{prefix}-{n:05d}.arrow"
    write_shard(folder / name, prepared.items)
    return name, prepared.stats, stop - start


def merge_stats(parts: list[dict]) -> dict:
    """Per-chunk render counts → one: numbers add up (`longest…` takes the maximum), lists join (first 20)."""
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, list):
                out[k] = (out.get(k, []) + v)[:20]
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                out.setdefault(k, v)
            elif k.startswith(("longest", "max")):
                out[k] = max(out.get(k, v), v)
            else:
                out[k] = out.get(k, 0) + v
    return out


def render_to_shards(stage, records: list, tok, data_cfg, params, folder: Path, prefix: str, num_proc: int,
                     show_progress: bool = True) -> tuple[list[Path], dict]:
    """Render `records` with `stage.prepare` into shards `prefix-NNNNN.arrow` in `folder` → (shards, counts).

    With several processes the list is emptied: its records are spilled to `folder` first (see the module)."""
    global _JOB
    n_rows = len(records)
    step = CHUNK_ROWS if stage.row_independent else max(n_rows, 1)
    tasks = [(n, i, min(i + step, n_rows)) for n, i in enumerate(range(0, n_rows, step))]
    rows, spilled = records, None
    if num_proc > 1 and len(tasks) > 1:
        spilled = folder / f"{prefix}-{SPILLED}"
        rows = SpilledRows(records, spilled)
        records.clear()
        gc.collect()
    _JOB = (stage, rows, tok, data_cfg, params, folder, prefix)
    names, stats, done = [], [], 0
    started = time.monotonic()
    try:  # the workers are forked before the progress bar starts its refresh thread
        with _results(tasks, num_proc) as results, progress_bar(
                n_rows, f"rendering {prefix}", show_progress and n_rows >= CHUNK_ROWS, fields={"rate": ""}) as advance:
            for name, part, n in results:
                names.append(name)
                stats.append(part)
                done += n
                advance(n, rate=f"{done / max(time.monotonic() - started, 1e-9):,.0f} rows/s")
    finally:
        _JOB = None
        if spilled is not None:
            spilled.unlink(missing_ok=True)
    return [folder / n for n in names if n], merge_stats(stats)


@contextmanager
def _results(tasks: list, num_proc: int):
    """Yields the chunks' results in order, rendered here or by `num_proc` forked workers.

    A worker that dies (killed for memory, say) is an error, not a wait forever. On success the workers are joined
    after they take their stop sentinels; on an error or Ctrl-C the chunks not started are cancelled."""
    if num_proc <= 1 or len(tasks) <= 1:
        yield map(_render_chunk, tasks)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # a forked Rust tokenizer must not start threads
    gc.freeze()
    pool = ProcessPoolExecutor(min(num_proc, len(tasks)), mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker)
    try:
        yield pool.map(_render_chunk, tasks)
    except BrokenProcessPool as e:
        pool.shutdown(wait=False, cancel_futures=True)
        raise DataError(f"a rendering worker died before finishing its rows ({e})",
                        hint="this is most often the system running out of memory: set data.num_proc to fewer "
                             "processes (1 renders in this process)") from None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        gc.unfreeze()


def _start_worker() -> None:
    """In a fresh worker: SIGTERM kills it whatever handler the parent had installed (a trainer's stop handler, a
    library's), and Ctrl-C is left to the parent, which cancels the work."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
