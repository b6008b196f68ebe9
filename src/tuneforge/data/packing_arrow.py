"""Packing of rendered items held in Arrow shards, vectorized: a million rows pack in seconds, in bounded memory.

The bins come from `data.packing` (the same rule and order as `pack_examples`, so both give identical sequences).
The members of each group of bins are taken from the memory-mapped items in one Arrow `take`, which lays each bin's
members side by side: a packed sequence is then one slice of the taken values, the first label of every member is
masked, and the position ids restart at every member, all with numpy over whole groups instead of Python loops.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

from tuneforge.data.arrow_items import ArrowItems, write_table
from tuneforge.data.render import IGNORE

BINS_PER_SHARD = 16384


def _flat(column):
    """A list column → (flat numpy values, numpy offsets from 0)."""
    arr = column.combine_chunks()
    offsets = arr.offsets.to_numpy().astype("int64")
    return arr.flatten().to_numpy(zero_copy_only=False), offsets - offsets[0]


def _packed_table(items: ArrowItems, members: list[list[int]]):
    import numpy as np
    import pyarrow as pa

    idx = np.fromiter(chain.from_iterable(members), dtype=np.int64)
    counts = np.fromiter((len(m) for m in members), dtype=np.int64, count=len(members))
    taken = items.dataset.data.table.select(["input_ids", "labels"]).take(pa.array(idx))
    ids, off = _flat(taken.column("input_ids"))
    labels, _ = _flat(taken.column("labels"))
    labels = labels.copy()
    labels[off[:-1]] = IGNORE  # nothing predicts a sample's first token once it follows another sample
    lengths = np.diff(off)
    positions = np.arange(len(ids), dtype=np.int64) - np.repeat(off[:-1], lengths)
    bin_off = pa.array(off[np.concatenate([[0], np.cumsum(counts)])].astype(np.int32))
    lists = {name: pa.ListArray.from_arrays(bin_off, pa.array(values.astype(np.int32)))
             for name, values in (("input_ids", ids), ("labels", labels), ("position_ids", positions))}
    return pa.table(lists)


def pack_to_shards(items: ArrowItems, bins: list[list[int]], folder: Path, prefix: str, progress=None) -> list[Path]:
    """Write the packed sequences of `bins` (lists of item indices) as shards `prefix-NNNNN.arrow` in `folder`."""
    shards = []
    for n, start in enumerate(range(0, len(bins), BINS_PER_SHARD)):
        group = [sorted(b) for b in bins[start:start + BINS_PER_SHARD]]
        table = _packed_table(items, group)
        path = folder / f"{prefix}-{n:05d}.arrow"
        write_table(path, table)
        shards.append(path)
        if progress:
            progress(len(group))
    return shards
