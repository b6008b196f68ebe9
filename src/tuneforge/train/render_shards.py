"""A stage's rows rendered into Arrow shards, in chunks, by several processes when there are many rows.

Workers are forked, so they inherit the records, the tokenizer and the stage without pickling any of them; each
renders a range of rows with `stage.prepare` and writes its items as one shard. Results come back in row order, so
the shards (and every item) are the same for any number of processes. `gc.freeze()` before the fork keeps the
children's garbage collector from touching, and so copying, the parent's records.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from pathlib import Path

from tuneforge.data.arrow_items import write_shard
from tuneforge.utils.progress import progress_bar

CHUNK_ROWS = 4096
AUTO_PARALLEL_ROWS = 10_000  # num_proc auto: below this many rows one process renders (forking costs more)

_JOB: tuple | None = None  # (stage, records, tok, data_cfg, params, folder, prefix), set before the fork


def resolve_num_proc(setting, rows: int) -> int:
    """`data.num_proc` → a process count: auto is one per usable core from AUTO_PARALLEL_ROWS rows on, else 1."""
    if setting != "auto":
        return max(1, int(setting))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if rows >= AUTO_PARALLEL_ROWS else 1


def _render_chunk(task: tuple[int, int, int]) -> tuple[str | None, dict, int]:
    n, start, stop = task
    stage, records, tok, data_cfg, params, folder, prefix = _JOB
    prepared = stage.prepare(records[start:stop], tok, data_cfg, params)
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
    """Render `records` with `stage.prepare` into shards `prefix-NNNNN.arrow` in `folder` → (shards, counts)."""
    global _JOB
    step = CHUNK_ROWS if stage.row_independent else max(len(records), 1)
    tasks = [(n, i, min(i + step, len(records))) for n, i in enumerate(range(0, len(records), step))]
    _JOB = (stage, records, tok, data_cfg, params, folder, prefix)
    names, stats, done = [], [], 0
    started = time.monotonic()
    try:
        with progress_bar(len(records), f"rendering {prefix}", show_progress and len(records) >= CHUNK_ROWS,
                          fields={"rate": ""}) as advance:
            for name, part, rows in _run(tasks, num_proc):
                names.append(name)
                stats.append(part)
                done += rows
                advance(rows, rate=f"{done / max(time.monotonic() - started, 1e-9):,.0f} rows/s")
    finally:
        _JOB = None
    return [folder / n for n in names if n], merge_stats(stats)


def _run(tasks: list, num_proc: int):
    if num_proc <= 1 or len(tasks) <= 1:
        yield from map(_render_chunk, tasks)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # a forked Rust tokenizer must not start threads
    gc.freeze()
    try:
        with multiprocessing.get_context("fork").Pool(min(num_proc, len(tasks))) as pool:
            yield from pool.imap(_render_chunk, tasks)
    finally:
        gc.unfreeze()
