"""What a data-size sweep trains on: the sizes, one fixed shuffled pool of rows, nested subsets, the eval set.

Nested subsets: the configured training data is loaded once (mixing, ratios and `data.max_samples` as training
would apply them), a held-out split is taken off first when `data.val_size` is set, and the rest is shuffled once
with `data.seed`. The subset of size n is the first n rows of that order, written to `<out>/data/train-n<n>.jsonl`,
so every smaller subset is a prefix (and a subset) of every larger one. (`data.max_samples` alone does not give
nested subsets: its seeded sample of 250 is not always inside its sample of 500.)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.records import Record
from tuneforge.utils.errors import ConfigError, DataError
from tuneforge.utils.io import atomic_write_text

# Record roles → sharegpt role tags (tuneforge's default tags). `tool` (OpenAI) is written as `observation`, which
# the renderer maps back to the template's `tool` role, so training sees the same tokens.
_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation",
                  "observation": "observation", "function_call": "function_call"}


def parse_sizes(text: str | list[int]) -> list[int]:
    """"250,500,1000" → [250, 500, 1000] (sorted, unique); every size must be a positive integer."""
    items = text if isinstance(text, list) else [s for s in str(text).replace(" ", "").split(",") if s]
    sizes = []
    for item in items:
        try:
            n = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"data size {item!r} is not an integer", hint="e.g. --data-sizes 250,500,1000") from None
        if n < 1:
            raise ConfigError(f"data size {n} must be at least 1", hint="e.g. --data-sizes 250,500,1000")
        sizes.append(n)
    if not sizes:
        raise ConfigError("no data sizes given", hint="e.g. --data-sizes 250,500,1000")
    return sorted(set(sizes))


@dataclass
class Pool:
    """The training rows of the sweep in their fixed shuffled order, plus rows held out for evaluation."""

    records: list[Record]
    name: str
    fingerprint: str
    held_out: list[Record] = field(default_factory=list)
    skipped: int = 0


def load_pool(cfg) -> Pool:
    """Load the configured training data once and fix its order (seeded by `data.seed`)."""
    from tuneforge.data.catalog import fingerprint, load_datasets, split_train_val
    from tuneforge.data.run_records import dataset_specs

    d = cfg.data
    res = load_datasets(dataset_specs(d.train), dataset_info=d.dataset_info, on_error=d.on_error, mix=d.mix,
                        seed=d.seed, max_samples=d.max_samples)
    records, held = list(res.records), []
    if d.val_size and not d.eval:
        records, held = split_train_val(records, d.val_size, d.seed)
    order = list(range(len(records)))
    random.Random(d.seed).shuffle(order)
    shuffled = [records[i] for i in order]
    return Pool(shuffled, res.name, fingerprint(shuffled), held, len(res.skipped))


def check_sizes(sizes: list[int], pool: Pool) -> None:
    """Every size must fit in the pool; raised before any training starts."""
    too_big = [n for n in sizes if n > len(pool.records)]
    if too_big:
        held = f" after holding out {len(pool.held_out)} validation rows" if pool.held_out else ""
        raise DataError(f"data size {', '.join(map(str, too_big))} is larger than the training data "
                        f"({pool.name}: {len(pool.records)} usable rows{held})",
                        hint=f"use sizes up to {len(pool.records)}, or add data")


def _sharegpt_row(rec: Record) -> dict:
    if not rec.messages:
        raise DataError("a stage-sft sweep needs chat rows, but this row has no messages", file=rec.source or None,
                        hint="use stage: pt for plain-text data")
    if rec.chosen is not None or rec.label is not None:
        raise DataError("sweeps train stage sft/pt; preference and KTO rows are not supported",
                        file=rec.source or None)
    row = {"conversations": [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in rec.messages]}
    if rec.tools:
        row["tools"] = rec.tools
    return row


def _text_row(rec: Record) -> dict:
    # the same text the pt renderer builds from a chat record
    return {"text": rec.text if rec.text is not None else "\n".join(m["content"] for m in rec.messages)}


def subset_format(stage: str) -> str:
    return "text" if stage == "pt" else "sharegpt"


def write_records(records: list[Record], path: Path, stage: str) -> Path:
    """Write records as jsonl that tuneforge reads back to the same records (sharegpt for sft, text for pt).

    Written to a temporary file and renamed, so a crash never leaves half a subset behind.
    """
    to_row = _text_row if stage == "pt" else _sharegpt_row
    return atomic_write_text(path, "".join(json.dumps(to_row(rec), ensure_ascii=False) + "\n" for rec in records))


def subset_path(out: Path, size: int) -> Path:
    return out / "data" / f"train-n{size}.jsonl"


def write_subset(pool: Pool, size: int, out: Path, stage: str) -> Path:
    """The first `size` rows of the pool as `<out>/data/train-n<size>.jsonl`."""
    return write_records(pool.records[:size], subset_path(out, size), stage)


def eval_rows_path(out: Path, fingerprint: str) -> Path:
    return out / "data" / f"eval-{fingerprint[:12]}.jsonl"


def write_eval_rows(eval_set: "EvalSet", out: Path, stage: str) -> Path:
    """The eval rows as `<out>/data/eval-<fingerprint>.jsonl`: every run is given them as data.eval, so the
    trainer measures the eval loss on exactly these rows."""
    return write_records(eval_set.records, eval_rows_path(out, eval_set.fingerprint), stage)


@dataclass
class EvalSet:
    """Rows every sweep run is evaluated on; `labels` set → classification, else eval loss only."""

    records: list[Record]
    name: str
    fingerprint: str
    labels: list[str] | None = None
    mode: str = "score"
    with_loss: bool = True  # eval loss too (always when there are no labels)

    def key(self) -> str:
        """Identifies the evaluation: a stored result with another key is recomputed."""
        what = (self.mode + ("+loss" if self.with_loss else "")) if self.labels else "loss"
        return f"{self.fingerprint[:16]}:{','.join(self.labels or [])}:{what}"

    def describe(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "n": len(self.records), "labels": self.labels,
                "mode": self.mode if self.labels else None, "eval_loss": self.with_loss or not self.labels}


def _default_eval_records(cfg, pool: Pool) -> tuple[list[Record], str] | None:
    from tuneforge.data.catalog import DatasetSpec, load_dataset, load_datasets
    from tuneforge.data.run_records import dataset_specs

    d = cfg.data
    if d.eval:
        res = load_datasets(dataset_specs(d.eval), dataset_info=d.dataset_info, on_error=d.on_error, seed=d.seed)
        return res.records, res.name
    if pool.held_out:
        return pool.held_out, f"{pool.name} (held out: data.val_size={d.val_size})"
    cls = cfg.eval.classification
    if cls is not None and cls.data:
        return load_dataset(DatasetSpec(path=cls.data), on_error=d.on_error).records, Path(cls.data).stem
    return None


def load_eval_set(cfg, pool: Pool, eval_file: str | None, labels: list[str] | None, mode: str | None,
                  max_rows: int | None, with_loss: bool = True) -> EvalSet:
    """The sweep's eval rows: `eval_file`, else data.eval, else the data.val_size hold-out, else
    eval.classification.data. Labels default to eval.classification.labels; checked before any training."""
    from tuneforge.data.catalog import DatasetSpec, fingerprint, load_dataset

    if eval_file:
        if not Path(eval_file).exists():
            raise DataError("eval file not found", file=eval_file, hint="pass an existing file to --eval")
        records = load_dataset(DatasetSpec(path=eval_file), on_error=cfg.data.on_error).records
        name = Path(eval_file).stem
    else:
        found = _default_eval_records(cfg, pool)
        if found is None:
            raise ConfigError("the sweep has nothing to evaluate on",
                              hint="pass --eval FILE, or set data.eval or data.val_size in the config")
        records, name = found
    if max_rows is not None:
        if max_rows < 1:
            raise ConfigError(f"--eval-samples must be at least 1, got {max_rows}")
        records = records[:max_rows]
    cls = cfg.eval.classification
    labels = labels or (list(cls.labels) if cls is not None else None)
    mode = mode or (cls.mode if cls is not None else "score")
    if labels:
        from tuneforge.eval.task_eval import check_labels

        check_labels(records, labels)
    return EvalSet(records, name, fingerprint(records), labels or None, mode, with_loss or not labels)
