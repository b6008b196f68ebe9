"""Model-ready items on disk: Arrow shards written in chunks, read back memory-mapped as one dataset.

A rendered item is a dict of token-id lists (`input_ids`, `labels`, `position_ids` when packed, or the `<side>_ids`
of a pair). Held as Python lists a token costs about 72 bytes; in an Arrow shard it costs 4 (int32), and a
memory-mapped shard is paged in by the OS only where the data loader reads, so a million rows train in bounded
memory. A shard is an Arrow IPC stream, the file format of Hugging Face `datasets`, so `ArrowItems.dataset` is a
plain `datasets.Dataset` for code that wants one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence


def _table(items: Sequence[dict]):
    """Items → an Arrow table with every list of ints stored as int32 (token ids and -100 labels fit)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(list(items))
    fields = [pa.field(f.name, pa.list_(pa.int32())) if _is_int_list(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _is_int_list(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) and pa.types.is_integer(t.value_type)


def write_shard(path: Path, items: Sequence[dict]) -> int:
    """Write `items` to one Arrow stream file at `path`; returns the row count."""
    return write_table(path, _table(items))


def write_table(path: Path, table) -> int:
    """Write an Arrow table as a stream file (written beside and renamed: a reader never sees half a shard)."""
    import pyarrow as pa

    tmp = path.with_name(path.name + ".part")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=4096)
    tmp.replace(path)
    return table.num_rows


class ArrowItems:
    """Items of several shards as one sequence: `items[i]` is a dict of Python lists, `lengths()` the tokens of every
    item (counted from Arrow offsets, without reading a row), iteration in order. Memory-mapped: nothing is read
    until it is asked for."""

    def __init__(self, shards: Iterable[Path]):
        from datasets import Dataset, concatenate_datasets

        parts = [Dataset.from_file(str(p), in_memory=False) for p in shards]
        self.dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return self.dataset.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.dataset[j] for j in range(*i.indices(len(self)))]
        return self.dataset[int(i)]

    def __iter__(self):
        for batch in self.dataset.iter(batch_size=1024):
            keys = list(batch)
            for row in zip(*(batch[k] for k in keys)):
                yield dict(zip(keys, row))

    def lengths(self) -> list[int]:
        """Tokens of each item: the summed length of its id columns (not position ids), as `item_tokens` counts."""
        if self._lengths is None:
            import numpy as np
            import pyarrow.compute as pc

            table = self.dataset.data
            cols = [c for c in table.column_names if c.endswith("ids") and c != "position_ids"]
            total = np.zeros(len(self), dtype=np.int64)
            for c in cols:
                total += pc.list_value_length(table.column(c)).to_numpy(zero_copy_only=False)
            self._lengths = total.tolist()
        return self._lengths
