"""The arena's prompts, read with the data readers: `{"prompt": "..."}`, `{"messages": [...]}` (OpenAI),
sharegpt `conversations`, or alpaca `instruction` / `input` rows, in .jsonl / .json / .csv / .parquet.

A row that ends with an answer (an assistant turn, alpaca `output`) keeps it as the *reference*, which a rubric
may show the judge as {reference}; the models answer the turns before it. An `id` column names the row in reports
(default: its line). A bad row is a file:line error before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.utils.errors import DataError


@dataclass(frozen=True)
class ArenaPrompt:
    """One prompt: `messages` ending with a user turn, an optional reference answer, and where it came from."""

    id: str
    messages: tuple[dict, ...]
    reference: str | None
    source: str


def read_prompts(path: str) -> tuple[list[ArenaPrompt], str]:
    """(prompts, fingerprint of their content) from a prompt file or folder; each row's layout is detected on
    its own."""
    from tuneforge.data.catalog import fingerprint
    from tuneforge.data.formats import resolve_format, to_record
    from tuneforge.data.sources import read_rows
    from tuneforge.stages.prompts import prompt_and_label

    records = []
    for row in read_rows(path):
        if row.error is not None:
            raise row.error
        spec = resolve_format("auto", row.data, prompts=True)  # per row: a prompt file may mix the layouts
        records.append(to_record(row.data, spec, file=row.file, line=row.line))
    if not records:
        raise DataError("the prompt file holds no rows", file=str(path),
                        hint='one JSON object per line: {"prompt": "..."} or {"messages": [...]}')
    prompts = []
    for rec in records:
        messages, reference = prompt_and_label(rec)
        if not messages or messages[-1]["role"] != "user":
            file, line = rec.location()
            raise DataError("the prompt must end with a user turn for the models to answer", file=file, line=line,
                            field="messages")
        rid = rec.extra.get("id")
        prompts.append(ArenaPrompt(str(rid) if rid is not None else rec.source.rsplit("/", 1)[-1],
                                   tuple(dict(m) for m in messages), reference, rec.source))
    return prompts, fingerprint(records)
