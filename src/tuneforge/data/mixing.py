"""Deterministic sampling, mixing and train/validation splitting of record lists.

Every function takes an explicit seed and uses its own `random.Random`, so results never depend on global state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from tuneforge.data.records import Record
from tuneforge.utils.errors import DataError

MIX_MODES = ("concat", "interleave")


def sample_to(records: Sequence[Record], n: int, seed: int) -> list[Record]:
    """Exactly `n` records: a seeded subset when `n` is smaller (original order kept), whole copies plus a seeded
    subset when larger (every record appears at least once, like LLaMA-Factory's `num_samples`)."""
    if n < 0:
        raise DataError(f"cannot sample {n} records")
    if not records:
        return []
    rng = random.Random(seed)
    copies, rest = divmod(n, len(records))
    picked = sorted(rng.sample(range(len(records)), rest))
    return list(records) * copies + [records[i] for i in picked]


def apply_ratio(records: Sequence[Record], ratio: float, seed: int) -> list[Record]:
    """Scale a dataset by `ratio`: 0.5 keeps a seeded half, 2.0 repeats it twice; at least one record is kept."""
    if not ratio > 0:
        raise DataError(f"ratio must be > 0, got {ratio}", field="ratio",
                        hint="ratio scales a dataset's size: 0.5 keeps half of it, 2 repeats it twice")
    return sample_to(records, max(1, round(len(records) * ratio)), seed)


def mix(groups: Sequence[Sequence[Record]], mode: str = "concat") -> list[Record]:
    """Combine datasets: `concat` one after another, `interleave` round-robin (exhausted datasets drop out)."""
    if mode not in MIX_MODES:
        raise DataError(f"unknown mix mode '{mode}'", field="mix", hint=f"choose one of {', '.join(MIX_MODES)}")
    if mode == "concat":
        return [r for g in groups for r in g]
    out: list[Record] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _row_key(record: Record) -> str:
    """One source row: its `path:line` and content (an up-sampled copy shares both; distinct lines do not)."""
    return record.source + "\n" + json.dumps(record.normalized(), sort_keys=True, ensure_ascii=False)


def split_train_val(records: Sequence[Record], val_size: float | int, seed: int) -> tuple[list[Record], list[Record]]:
    """Split off a validation set: `val_size` < 1 is a fraction, >= 1 a row count; 0 gives none.

    The split is over source rows (`path:line` + content), so a row repeated by up-sampling (a dataset `ratio` > 1,
    a registry `num_samples` above the row count) lands wholly in train or wholly in validation, never in both, and
    validation holds it once. Without up-sampling every record is its own row, as before. The held-out rows are a seeded random
    choice; both parts keep the original order. The same records, size and seed always give the same split.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0:
        raise DataError(f"val_size must be a fraction in [0, 1) or a row count, got {val_size!r}", field="val_size")
    if val_size == 0:
        return list(records), []
    keys = [_row_key(r) for r in records]
    distinct = list(dict.fromkeys(keys))
    n = len(distinct)
    n_val = max(1, round(n * val_size)) if val_size < 1 else int(val_size)
    if n_val >= n:
        raise DataError(f"val_size {val_size} leaves no training rows ({n} rows in total, up-sampled copies counted once)", field="val_size",
                        hint="use a smaller fraction or count, or give a separate eval dataset")
    held = {distinct[i] for i in random.Random(seed).sample(range(n), n_val)}
    train = [r for r, k in zip(records, keys) if k not in held]
    val, seen = [], set()
    for r, k in zip(records, keys):
        if k in held and k not in seen:
            seen.add(k)
            val.append(r)
    return train, val
