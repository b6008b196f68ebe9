"""Task data for task metrics: records with a prompt and a reference answer, validated before any model loads.

A record's prompt is its conversation up to the last assistant turn; the reference is that last assistant turn
(alpaca ``output``). Files are read through the data catalog, so every format training accepts works here too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tuneforge.utils.errors import DataError


def tail(text: str, n: int = 300) -> str:
    """The end of a prompt: where the example-specific input usually is (the instruction comes first)."""
    return text if len(text) <= n else "…" + text[-n:]


def split_record(record) -> tuple[list[dict], str]:
    """(prompt messages, reference answer) of a chat record; DataError when it does not end with an answer."""
    msgs = list(record.messages or [])
    if not msgs or msgs[-1].get("role") != "assistant" or len(msgs) < 2:
        file, line = record.location()
        raise DataError("needs a prompt and a reference answer (the last assistant turn) to evaluate", file=file,
                        line=line, field="output", hint="classification and generation tasks use chat/alpaca rows")
    return msgs[:-1], str(msgs[-1].get("content") or "")


def check_labels(records, labels: list[str]) -> None:
    """Every reference must be one of the labels (raised before any model is loaded)."""
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise DataError(f"need at least 2 distinct labels, got {labels}", field="labels",
                        hint="e.g. --labels 0,1")
    for rec in records:
        _, ref = split_record(rec)
        if ref.strip() not in labels:
            file, line = rec.location()
            raise DataError(f"reference answer {ref.strip()[:40]!r} is not one of the labels {labels}", file=file,
                            line=line, field="output", hint="fix the row, or pass the full label set with --labels")


@dataclass
class TaskData:
    """A user dataset evaluated with task metrics: classification when `labels` is set, else generation."""

    name: str
    records: list
    labels: list[str] | None = None
    mode: str = "score"
    path: str = ""
    fingerprint: str = ""


def load_task_data(path: str, labels: list[str] | None, mode: str, limit: int | None, seed: int = 0) -> TaskData:
    """Read and validate a classification / generation dataset (alpaca, sharegpt, openai ...) via the catalog."""
    from tuneforge.data.catalog import DatasetSpec, fingerprint, load_dataset

    records = load_dataset(DatasetSpec(path=path), on_error="raise").records
    for rec in records:
        split_record(rec)
    if labels is not None:
        check_labels(records, labels)
    if limit and limit < len(records):
        keep = set(random.Random(seed).sample(range(len(records)), limit))
        records = [r for i, r in enumerate(records) if i in keep]
    p = Path(path)
    name = f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem
    return TaskData(name, records, labels, mode, str(path), fingerprint(records))
