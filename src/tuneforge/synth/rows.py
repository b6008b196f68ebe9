"""Synthetic rows as the data readers load them, each with its origin, and the output file (never overwritten).

A row is alpaca (`instruction`, `input`, `output`, optional `system`) or OpenAI messages, plus one `source` column
that the readers keep in `Record.extra` (as `data from-feedback` rows carry theirs):

    "source": {"kind": "synthetic", "method": "self-instruct", "generator": "smollm2-135m-instruct",
               "seed_rows": ["seeds.jsonl:3", "seeds.jsonl:17"]}

Template rows name their template and slot values instead of seed rows. So a training run's data can always be
told apart: `rec.extra["source"]["kind"] == "synthetic"`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.utils.errors import DataError
from tuneforge.utils.io import atomic_write_text

FORMATS = ("alpaca", "openai")


def origin(method: str, generator: str, **more) -> dict:
    """The `source` column of a synthetic row."""
    return {"kind": "synthetic", "method": method, "generator": generator, **more}


def make_row(fmt: str, *, instruction: str, answer: str, source: dict, task_input: str = "",
             system: str | None = None) -> dict:
    """One row in `fmt`. `instruction` and `task_input` are alpaca's two prompt parts (joined by a newline in the
    user turn, as the alpaca reader joins them)."""
    if fmt == "alpaca":
        row = {"instruction": instruction, "input": task_input, "output": answer}
        return {**row, **({"system": system} if system else {}), "source": source}
    user = "\n".join(p for p in (instruction, task_input) if p)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "source": source}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DataError(f"unknown output format {fmt!r}", field="format", hint=f"choose one of {', '.join(FORMATS)}")


def report_folder(out: str | Path, given: str | Path | None = None) -> Path:
    """Where the report goes: `given`, else beside the output (`synth.jsonl` → `synth.report/`)."""
    out = Path(out).expanduser()
    return Path(given).expanduser() if given else out.with_name(out.stem + ".report")


def refuse_existing(*paths: Path) -> None:
    """Raise before any work when a target exists: synthetic data never replaces a file."""
    for path in paths:
        if path.exists():
            raise DataError("refusing to overwrite an existing file or folder", file=str(path),
                            hint="choose another --out / --report (or move the old one away)")


def write_rows(rows: list[dict], out: Path) -> Path:
    """JSONL, written atomically; refuses an existing file (checked again: generation may have taken hours)."""
    refuse_existing(out)
    return atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
