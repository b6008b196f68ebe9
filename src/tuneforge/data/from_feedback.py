"""Training rows from served completions and their feedback (`tuneforge data from-feedback`): the loop from
`tuneforge serve --log-requests` and POST /v1/feedback back to a next fine-tuning job.

Per choice of a logged completion, the latest rating and the latest correction count (a client may change its
mind). An answer is *positive* when rated +1, *negative* when rated -1 or corrected without a +1. A correction equal
to its answer is an upvote. From that:
- sft: the request's messages + the correction, else the upvoted answer (OpenAI `messages` rows);
- dpo: chosen = a correction, rejected = the answer it corrects; and, between choices of one completion, chosen = a
  positive answer, rejected = a negative one (OpenAI preference rows: `input.messages`, `preferred_output`,
  `non_preferred_output`);
- kto: the messages + an answer with `label` true (positive, or a correction) / false (negative).
Every row carries `source` ({"kind": "feedback", "completion_id", "model", "choice_index", "signal"}), which the
readers keep in Record.extra. Each row is read back through `data.formats` before it is written, so every file
written loads with `load_dataset`; a row that would not (a request ending on an assistant turn, a non-text content
part) is left out and counted.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.formats import resolve_format, to_record
from tuneforge.registry.feedback import RatedCompletion, completions_with_feedback, count_completions
from tuneforge.registry.store import Store
from tuneforge.utils.errors import DataError
from tuneforge.utils.io import atomic_write_text

KINDS = ("sft", "dpo", "kto")
_ROLES = {"developer": "system", "function": "tool"}
_MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id")


@dataclass
class Judgement:
    """What the feedback says about one choice of a completion."""

    index: int
    answer: str
    rating: int | None = None
    correction: str | None = None

    @property
    def positive(self) -> bool:
        return self.rating == 1

    @property
    def negative(self) -> bool:
        return self.rating == -1 or (self.correction is not None and self.rating is None)


@dataclass
class FeedbackRows:
    """The rows of each kind, and how many logged completions gave none."""

    rows: dict[str, list[dict]] = field(default_factory=lambda: {k: [] for k in KINDS})
    logged: int = 0  # logged completions matching the filters
    used: int = 0  # of which gave at least one row
    dropped: list[str] = field(default_factory=list)  # rows left out, with why

    @property
    def unused(self) -> int:
        return self.logged - self.used


def judgements(done: RatedCompletion) -> list[Judgement]:
    """One Judgement per choice that has feedback, by choice index; the latest rating and correction win."""
    found: dict[int, Judgement] = {}
    for f in done.feedback:  # oldest first
        if not 0 <= f.choice_index < len(done.answers):
            continue
        j = found.setdefault(f.choice_index, Judgement(f.choice_index, done.answers[f.choice_index]))
        if f.rating is not None:
            j.rating = f.rating
        if f.correction is not None and f.correction.strip():
            j.correction = f.correction
    for j in found.values():
        if j.correction is not None and j.correction.strip() == j.answer.strip():
            j.correction, j.rating = None, j.rating or 1  # "corrected" to itself: an upvote
    return [found[i] for i in sorted(found)]


def prompt_messages(request: dict) -> list[dict]:
    """The request's messages as training rows carry them (`developer` → system, `function` → tool)."""
    out = []
    for m in request.get("messages") or []:
        if not isinstance(m, dict):
            continue
        msg = {k: m[k] for k in _MESSAGE_KEYS if m.get(k) is not None}
        msg["role"] = _ROLES.get(msg.get("role"), msg.get("role"))
        out.append(msg)
    return out


def rows_for(done: RatedCompletion) -> dict[str, list[dict]]:
    """The sft, dpo and kto rows one rated completion gives (not yet checked against the readers)."""
    prompt, marks = prompt_messages(done.request), judgements(done)
    extra = {"tools": done.request["tools"]} if done.request.get("tools") else {}

    def source(j: Judgement, signal: str, **more) -> dict:
        return {"source": {"kind": "feedback", "completion_id": done.id, "model": done.model,
                           "choice_index": j.index, "signal": signal, **more}}

    def said(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    def pair(chosen: str, rejected: str, src: dict) -> dict:
        return {"input": {"messages": prompt}, "preferred_output": said(chosen),
                "non_preferred_output": said(rejected), **extra, **src}

    rows: dict[str, list[dict]] = {k: [] for k in KINDS}
    for j in marks:
        if j.correction is not None:
            rows["sft"].append({"messages": prompt + said(j.correction), **extra, **source(j, "correction")})
            rows["dpo"].append(pair(j.correction, j.answer, source(j, "correction")))
            rows["kto"].append({"messages": prompt + said(j.correction), "label": True, **extra,
                                **source(j, "correction")})
        elif j.positive:
            rows["sft"].append({"messages": prompt + said(j.answer), **extra, **source(j, "upvote")})
        if j.positive or j.negative:
            rows["kto"].append({"messages": prompt + said(j.answer), "label": j.positive, **extra,
                                **source(j, "upvote" if j.positive else "downvote")})
    for good in (j for j in marks if j.positive):
        for bad in (j for j in marks if j.negative and j.answer != good.answer):
            rows["dpo"].append(pair(good.answer, bad.answer, source(good, "upvote>downvote",
                                                                    rejected_choice_index=bad.index)))
    return {k: _unique(v) for k, v in rows.items()}


def _unique(rows: list[dict]) -> list[dict]:
    """Rows with the same content once (greedy choices are all equal); the first one's source is kept."""
    seen, out = set(), []
    for row in rows:
        key = json.dumps({k: v for k, v in row.items() if k != "source"}, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def readable(row: dict) -> str | None:
    """None when our readers load `row` as it will be written (format detected from the row alone, as from a
    file's first row); else why not."""
    try:
        to_record(row, resolve_format("auto", row), file="feedback", line=None)
    except DataError as err:
        return err.message
    return None


def collect(store: Store, model: str, project: str | None = None, since: dt.datetime | None = None) -> FeedbackRows:
    """Every row the feedback on `model`'s logged completions gives (of `project`, logged since `since`)."""
    result = FeedbackRows(logged=count_completions(store, model, project, since))
    for done in completions_with_feedback(store, model, project, since):
        gave = False
        for kind, rows in rows_for(done).items():
            for row in rows:
                why = readable(row)
                if why is None:
                    result.rows[kind].append(row)
                    gave = True
                else:
                    result.dropped.append(f"{done.id} ({kind}): {why}")
        result.used += gave
    return result


def output_paths(out: str | Path, kind: str) -> dict[str, Path]:
    """Where each kind is written: `out` itself for one kind; for `all`, OUT's stem + .sft/.dpo/.kto.jsonl."""
    out = Path(out).expanduser()
    if kind != "all":
        if kind not in KINDS:
            raise DataError(f"unknown kind {kind!r}", field="kind", hint=f"choose one of {', '.join(KINDS)}, all")
        return {kind: out}
    base = out.with_suffix("") if out.suffix in (".jsonl", ".json") else out
    return {k: base.with_name(f"{base.name}.{k}.jsonl") for k in KINDS}


def refuse_existing(paths: dict[str, Path]) -> None:
    """Raise before anything is written when any target exists: feedback exports are never overwritten."""
    for path in paths.values():
        if path.exists():
            raise DataError("refusing to overwrite an existing file", file=str(path),
                            hint="choose another --out (or move the old file away)")


def write_rows(result: FeedbackRows, paths: dict[str, Path]) -> dict[str, Path]:
    """Write each kind that has rows as JSONL (atomically, never over an existing file); the files written."""
    refuse_existing(paths)
    written = {}
    for kind, path in paths.items():
        rows = result.rows[kind]
        if rows:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            written[kind] = atomic_write_text(path, text)
    return written
