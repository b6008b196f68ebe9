"""Row-level checks of the dataset doctor: rows the loader rejected, empty fields, BOMs and suspicious characters."""

from __future__ import annotations

from collections import Counter

from tuneforge.data.doctor import text as tx
from tuneforge.data.doctor.result import Finding, Loaded


def check_schema(ld: Loaded, k: int) -> list[Finding]:
    errs = ld.result.skipped
    if not errs:
        return []
    reasons = Counter((e.message.split(": ", 1)[-1] if (e.file or e.field) else e.message) for e in errs)
    top = "; ".join(f"{n}× {r}" for r, n in reasons.most_common(3))
    ex = [{"source": f"{e.file}:{e.line}" if e.line is not None else str(e.file), "field": e.field,
           "error": e.message} for e in errs[: k * 4]]
    return [Finding("schema_errors", "error", len(errs), f"{len(errs)} rows cannot be used: {top}", ex)]


def check_empty_fields(ld: Loaded, k: int) -> list[Finding]:
    """Whitespace-only values in the raw rows, and empty turns in the loaded conversations."""
    hits: list[dict] = []
    for row in ld.raw or []:
        for path, s in tx.all_strings(row.data or {}):
            if s and not s.strip():
                hits.append({"source": row.source, "field": path, "value": repr(s)})
    for r in ld.records:
        for i, m in enumerate(r.messages):
            if not m["content"].strip() and m["role"] in ("user", "assistant", "system"):
                hits.append({"source": r.source, "field": f"messages[{i}] ({m['role']})", "value": repr(m["content"])})
    if not hits:
        return []
    rows = len({h["source"] for h in hits})
    return [Finding("empty_fields", "warning", rows, f"{rows} rows have empty or whitespace-only fields", hits[:k * 2])]


def _suspicious_by_kind(ld: Loaded) -> dict[str, list[dict]]:
    """Kind -> one example per row holding it (the raw row's strings when known, else prompt and answer)."""
    by_kind: dict[str, list[dict]] = {}
    sources = ({row.source: row.data for row in ld.raw if row.data is not None} if ld.raw is not None else {})
    for r in ld.records:
        strings = list(tx.all_strings(sources[r.source])) if r.source in sources else \
            [("prompt", tx.prompt_text(r)), ("answer", tx.answer_text(r))]
        seen: set[str] = set()
        for path, s in strings:
            for kind, pos in tx.find_suspicious(s).items():
                if kind not in seen:
                    seen.add(kind)
                    by_kind.setdefault(kind, []).append({"source": r.source, "field": path,
                                                         "text": tx.context(s, pos)})
    return by_kind


def check_boms_and_suspicious(ld: Loaded, k: int) -> list[Finding]:
    out = []
    if ld.bom_files:
        out.append(Finding("file_bom", "warning", len(ld.bom_files), "file starts with a UTF-8 byte-order mark",
                           [{"source": f} for f in ld.bom_files]))
    for kind, hits in _suspicious_by_kind(ld).items():
        check = "bom_in_text" if kind == "bom" else kind
        desc = tx.SUSPICIOUS[kind][0]
        out.append(Finding(check, "warning", len(hits), f"{len(hits)} rows: {desc}", hits[:k]))
    return out
