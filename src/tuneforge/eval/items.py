"""Benchmark items and the normalized benchmark jsonl format, validated row by row.

Normalized format, one JSON object per line:

* multiple choice: ``{"id", "question", "choices": [str, ...], "answer": <0-based index>, "subject"}``
* generative (GSM8K style): ``{"id", "question", "answer": "<final answer string>", "subject", "solution"?}``

``id`` and ``subject`` are optional (line number / file stem are used instead). Every problem is a DataError naming
file, line and field, raised before any model is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.utils.errors import DataError


@dataclass
class Item:
    """One benchmark question. `choices` is None for generative items, whose `answer` is a string."""

    id: str
    question: str
    answer: int | str
    choices: list[str] | None = None
    subject: str = ""
    source: str = ""  # "file:line" for error messages and reports
    extra: dict = field(default_factory=dict)

    @property
    def is_mc(self) -> bool:
        return self.choices is not None

    @property
    def gold(self) -> str:
        """The correct answer as text."""
        return self.choices[self.answer] if self.choices is not None else str(self.answer)


def _need_str(row: dict, key: str, file: str, line: int, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise DataError("missing required field", file=file, line=line, field=key,
                            hint='normalized rows look like {"id", "question", "choices", "answer", "subject"}')
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("id", "answer"):
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", file=file, line=line, field=key)
    if required and not value.strip():
        raise DataError("is empty", file=file, line=line, field=key)
    return value


def _choices(row: dict, file: str, line: int) -> list[str]:
    choices = row["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise DataError("must be a list of at least 2 strings", file=file, line=line, field="choices")
    for i, c in enumerate(choices):
        if not isinstance(c, str) or not c.strip():
            raise DataError(f"choice {i} is not a non-empty string: {c!r}", file=file, line=line, field="choices")
    return choices


def _mc_answer(row: dict, n: int, file: str, line: int) -> int:
    ans = row.get("answer")
    if ans is None:
        raise DataError("missing required field", file=file, line=line, field="answer")
    if isinstance(ans, str) and len(ans) == 1 and ans.upper() in "ABCDEFGHIJ":
        ans = "ABCDEFGHIJ".index(ans.upper())  # tolerate a letter, common in hand-made files
    if isinstance(ans, bool) or not isinstance(ans, int):
        raise DataError(f"must be the 0-based index of the correct choice, got {ans!r}", file=file, line=line,
                        field="answer")
    if not 0 <= ans < n:
        raise DataError(f"index {ans} is out of range for {n} choices", file=file, line=line, field="answer")
    return ans


def item_from_row(row, file: str, line: int, default_subject: str = "") -> Item:
    """Validate one normalized row and build an Item (raises DataError naming file:line and field)."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}", file=file, line=line)
    question = _need_str(row, "question", file, line)
    item_id = _need_str(row, "id", file, line, required=False) or f"line-{line}"
    subject = _need_str(row, "subject", file, line, required=False) or default_subject
    if "choices" in row:
        choices = _choices(row, file, line)
        answer: int | str = _mc_answer(row, len(choices), file, line)
    else:
        choices = None
        answer = _need_str(row, "answer", file, line)
    known = {"id", "question", "choices", "answer", "subject"}
    extra = {k: v for k, v in row.items() if k not in known}
    return Item(item_id, question, answer, choices, subject, f"{file}:{line}", extra)


def read_jsonl_rows(path: str | Path):
    """Yield (line_number, parsed object) for each non-blank line; bad JSON is a DataError with the line."""
    file = str(path)
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataError(f"invalid JSON: {err.msg} (column {err.colno})", file=file, line=n) from None


def read_normalized(path: str | Path) -> list[Item]:
    """Read a normalized benchmark jsonl file. All rows must be of one kind (all multiple choice or all generative)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    items: list[Item] = []
    for n, row in read_jsonl_rows(path):
        item = item_from_row(row, str(path), n, default_subject=path.parent.name or path.stem)
        if items and item.is_mc != items[0].is_mc:
            field_name = "answer" if "choices" in row else "choices"
            raise DataError("mixes multiple-choice and generative rows (the first row "
                            f"{'has' if items[0].is_mc else 'has no'} 'choices')",
                            file=str(path), line=n, field=field_name)
        items.append(item)
    if not items:
        raise DataError("holds no rows", file=str(path))
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise DataError(f"duplicate id {it.id!r}", file=str(path), line=int(it.source.rsplit(":", 1)[1]),
                            field="id", hint="ids identify examples in comparisons; make them unique")
        seen.add(it.id)
    return items
