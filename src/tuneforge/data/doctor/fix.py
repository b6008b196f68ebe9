"""`data check --fix OUT`: a cleaned copy of a dataset plus a log of every change. The input is never modified.

Rows are copied as they were read (same columns), minus: rows the loader rejected, exact duplicates (the first
occurrence stays), and optionally near-duplicates and rows leaking into the test set. U+FEFF characters are removed
from every string, and the copy is written without a leading BOM. OUT must not exist yet.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.doctor.result import CheckResult
from tuneforge.utils.errors import DataError
from tuneforge.utils.io import atomic_write_text

SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass
class FixSummary:
    out: Path
    log: Path
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    edited_rows: int = 0


def _strip_bom(obj, path: str, edits: list[str]):
    if isinstance(obj, str):
        if "\ufeff" in obj:
            edits.append(path)
            return obj.replace("\ufeff", "")
        return obj
    if isinstance(obj, dict):
        return {k: _strip_bom(v, f"{path}.{k}" if path else str(k), edits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_bom(v, f"{path}[{i}]", edits) for i, v in enumerate(obj)]
    return obj


def _check_out(out: Path, inputs: list[Path]) -> Path:
    if out.suffix.lower() not in SUFFIXES:
        raise DataError(f"--fix writes {', '.join(SUFFIXES)} files, not '{out.suffix}'", file=str(out),
                        hint="name the output e.g. clean.jsonl")
    log = out.with_suffix(".changes.jsonl")
    for p in (out, log):
        if p.exists():
            raise DataError("refusing to overwrite an existing file", file=str(p), hint="choose a new --fix path")
    if any(out.resolve() == f.resolve() for f in inputs):
        raise DataError("--fix must not point at the input", file=str(out))
    return log


def _drop_reasons(res: CheckResult, near: bool, leaked: bool) -> dict[str, tuple[str, str]]:
    reasons: dict[str, tuple[str, str]] = {}
    for kind in ["leaked"] * leaked + ["near_duplicates"] * near + ["exact_duplicates"]:
        for src, why in res.drops.get(kind, {}).items():
            reasons[src] = (kind, why)
    for e in res.loaded.result.skipped:
        reasons[f"{e.file}:{e.line}" if e.line is not None else str(e.file)] = ("invalid", e.message)
    return reasons


def _rows_text(suffix: str, rows: list[dict]) -> str:
    """The cleaned rows as the text of a .jsonl, .json or .csv file."""
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if suffix == ".json":
        return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    w.writeheader()
    for r in rows:
        w.writerow({k: v if isinstance(v, str) or v is None else json.dumps(v, ensure_ascii=False)
                    for k, v in r.items()})
    return buf.getvalue()


def write_fixed(res: CheckResult, out: str | Path, *, near: bool = False, leaked: bool = False) -> FixSummary:
    """Write the cleaned copy to `out` and the change log beside it (`<out stem>.changes.jsonl`)."""
    ld = res.loaded
    if ld.raw is None:
        raise DataError(f"--fix needs local files; {ld.target} is a hub dataset",
                        hint="download it first and check the local file")
    out = Path(out).expanduser()
    log_path = _check_out(out, ld.files)
    reasons = _drop_reasons(res, near, leaked)
    kept, changes = [], []
    summary = FixSummary(out, log_path, 0)
    for f in ld.bom_files:
        changes.append({"source": f, "action": "edited", "reason": "removed the UTF-8 BOM at the start of the file"})
    for row in ld.raw:
        why = ("invalid", row.error.message) if row.error is not None else reasons.get(row.source)
        if why is not None:
            summary.dropped[why[0]] = summary.dropped.get(why[0], 0) + 1
            changes.append({"source": row.source, "action": "dropped", "kind": why[0], "reason": why[1]})
            continue
        edits: list[str] = []
        kept.append(_strip_bom(row.data, "", edits))
        if edits:
            summary.edited_rows += 1
            changes.append({"source": row.source, "action": "edited", "reason": "removed U+FEFF", "fields": edits})
    atomic_write_text(out, _rows_text(out.suffix.lower(), kept))
    atomic_write_text(log_path, "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in changes))
    summary.kept = len(kept)
    return summary
