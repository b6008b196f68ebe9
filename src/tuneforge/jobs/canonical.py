"""Datasets read with a column mapping (or from a `dataset_info.json` registry) → a new file of canonical JSONL rows
that any later step reads without the mapping: `{"messages": [...]}` (plus `tools`, `chosen` / `rejected`, `label`)
or `{"text": ...}`. The web UI fixes a file's column mapping, and imports a registered dataset, this way; the
original file is never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.records import Record
from tuneforge.utils.errors import DataError

MAX_SHOWN_ERRORS = 5


_OPENAI_ROLES = {"system", "user", "assistant"}
_SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system", "function_call": "function_call",
                  "observation": "observation", "tool": "observation"}


def _sharegpt(messages: list[dict]) -> list[dict]:
    return [{"from": _SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in messages]


def needs_sharegpt(rec: Record) -> bool:
    """Whether the record has turns OpenAI's layout cannot hold (function_call / observation)."""
    turns = rec.messages + (rec.chosen or []) + (rec.rejected or [])
    return any(m["role"] not in _OPENAI_ROLES for m in turns)


def record_row(rec: Record, sharegpt: bool = False) -> dict:
    """The canonical row of one record: tuneforge's readers turn it back into an equal record. OpenAI messages,
    or sharegpt turns (`sharegpt`: for a file where some conversation calls tools, as the first row decides the
    layout every row is read with)."""
    if rec.text is not None and not rec.messages:
        return {"text": rec.text}
    if sharegpt:
        return _sharegpt_row(rec)
    row: dict = {"messages": rec.messages}
    if rec.tools:
        row["tools"] = rec.tools
    if rec.chosen is not None:
        row["chosen"], row["rejected"] = rec.chosen, rec.rejected
    if rec.label is not None:
        row["label"] = rec.label
    return row


def _sharegpt_row(rec: Record) -> dict:
    row: dict = {"conversations": _sharegpt(rec.messages)}
    if rec.tools:
        row["tools"] = json.dumps(rec.tools, ensure_ascii=False)
    if rec.chosen is not None:
        row["chosen"], row["rejected"] = _sharegpt(rec.chosen)[0], _sharegpt(rec.rejected)[0]
    if rec.label is not None:
        row["label"] = rec.label
    return row


def canonical_lines(records: list[Record]):
    """The records' canonical rows as JSONL lines (bytes), for `jobs.files.save_stream` to store. One layout for the
    whole file, since tuneforge's readers take it from the first row."""
    sharegpt = any(needs_sharegpt(r) for r in records)
    for rec in records:
        yield (json.dumps(record_row(rec, sharegpt), ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class Mapping:
    """How a file is read: the detected (or given) format and which of its columns fill which role."""

    format: str | None  # e.g. "alpaca", "sharegpt+pairwise"; None when it cannot be detected
    columns: dict  # role → the file's column, only roles whose column the first row has
    available: list[str]  # the first row's columns
    problem: str | None = None  # why the format cannot be detected

    def as_dict(self) -> dict:
        return {"format": self.format, "columns": self.columns, "available": self.available,
                "problem": self.problem}


def first_row(path: Path) -> dict:
    from tuneforge.data.sources import read_rows

    for raw in read_rows(path):
        return raw.data
    raise DataError(f"{path.name}: the file holds no rows", field="file")


def detect_mapping(path: Path) -> Mapping:
    """The format tuneforge's readers detect from the first row of `path`, with the column of each role."""
    from tuneforge.data.formats import resolve_format

    row = first_row(path)
    available = list(row) if isinstance(row, dict) else []
    try:
        spec = resolve_format("auto", row)
    except DataError as err:
        return Mapping(None, {}, available, err.one_line)
    used = {role: col for role, col in spec.columns.items() if col in row}
    return Mapping(spec.name, used, available)


def read_mapped(path: Path, fmt: str, columns: dict, shown_name: str) -> list[Record]:
    """Every row of `path` read as `fmt` with `columns` (role → column). A mapping that leaves rows unreadable is
    a DataError naming the first bad lines, so nothing half-converted is stored."""
    from tuneforge.data.catalog import load_dataset

    try:
        result = load_dataset({"path": str(path), "format": fmt, "columns": columns or None}, on_error="skip")
    except DataError as err:
        hint = (err.hint or "").replace(str(path), shown_name) or None
        raise DataError(f"{shown_name}: {_shown(err, path, shown_name)}", field=err.field, hint=hint) from None
    if result.skipped:
        shown = "; ".join(_shown(e, path, shown_name) for e in result.skipped[:MAX_SHOWN_ERRORS])
        raise DataError(f"{shown_name}: with this mapping {len(result.skipped)} row(s) cannot be read: {shown}",
                        field="columns", hint="map the columns that hold the prompt and the answer, or pick the "
                                              "format the file is in")
    return result.records


def _shown(err: DataError, path: Path, shown_name: str) -> str:
    text = err.message.replace(str(path), shown_name)
    where = f"line {err.line}: " if err.line is not None and f":{err.line}" not in text else ""
    field = f" (field '{err.field}')" if err.field and err.field not in text else ""
    return f"{where}{text}{field}"
