"""Readers for the benchmarks' original formats, and detection of which format a file or folder is in.

Supported besides the normalized jsonl (see items.py):

* ARC jsonl: ``{"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}``
* MMLU folder of headerless CSVs ``question,A,B,C,D,answer`` named ``<subject>_<split>.csv``
* CMMLU folder of CSVs with header ``,Question,A,B,C,D,Answer`` named ``<subject>.csv``
* C-Eval folder of CSVs with header ``id,question,A,B,C,D,answer[,explanation]`` named ``<subject>_<split>.csv``
* HellaSwag text export: 6 lines per item (``activity: context``, gold index, 4 endings)
* TruthfulQA ``mc_task.json`` (MC1: ``mc1_targets`` maps each choice to 1/0; the source lists the correct one first,
  so choices are shuffled with a fixed per-item seed)
* GSM8K jsonl ``{"question", "answer": "... #### 42"}``
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from tuneforge.eval.items import Item, read_jsonl_rows, read_normalized
from tuneforge.utils.errors import DataError

LETTERS = "ABCDEFGHIJ"


def _letter_index(value: str, n: int, file: str, line: int, field: str) -> int:
    v = str(value).strip().upper()
    if v.isdigit() and 1 <= int(v) <= n:  # ARC sometimes labels choices 1-4
        return int(v) - 1
    if len(v) == 1 and v in LETTERS[:n]:
        return LETTERS.index(v)
    raise DataError(f"answer {value!r} is not one of {list(LETTERS[:n])}", file=file, line=line, field=field)


def read_arc(path: Path) -> list[Item]:
    items = []
    for n, row in read_jsonl_rows(path):
        q = row.get("question")
        if not isinstance(q, dict) or not isinstance(q.get("stem"), str):
            raise DataError("expected an object with 'stem' and 'choices'", file=str(path), line=n, field="question")
        choices = q.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise DataError("expected a list of {text, label}", file=str(path), line=n, field="question.choices")
        labels = [str(c.get("label", "")) for c in choices]
        texts = [c.get("text") for c in choices]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise DataError("every choice needs a non-empty 'text'", file=str(path), line=n, field="question.choices")
        key = str(row.get("answerKey", ""))
        if key not in labels:
            raise DataError(f"answerKey {key!r} is not among the choice labels {labels}", file=str(path), line=n,
                            field="answerKey")
        subject = "ARC-Challenge" if "challenge" in path.name.lower() else "ARC-Easy"
        items.append(Item(str(row.get("id", f"line-{n}")), q["stem"], labels.index(key), texts, subject,
                          f"{path}:{n}"))
    return items


def _csv_rows(path: Path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        yield from enumerate(csv.reader(f), start=1)


def _csv_kind(first_row: list[str]) -> str:
    head = [h.strip().lower() for h in first_row]
    if head[:2] == ["", "question"]:
        return "cmmlu"
    if head[:2] == ["id", "question"]:
        return "ceval"
    return "mmlu"


def read_csv_dir(folder: Path) -> list[Item]:
    """A folder of per-subject CSVs in MMLU, CMMLU or C-Eval layout (detected from the header of each file)."""
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise DataError("holds no .csv files", file=str(folder))
    items: list[Item] = []
    for f in files:
        items += read_csv_file(f)
    return items


def read_csv_file(path: Path) -> list[Item]:
    rows = list(_csv_rows(path))
    if not rows:
        raise DataError("is empty", file=str(path))
    kind = _csv_kind(rows[0][1])
    stem = path.stem
    split = ""
    for suffix in ("_test", "_dev", "_val", "_train"):
        if stem.endswith(suffix):
            stem, split = stem[: -len(suffix)], suffix[1:]
    split = split or path.parent.name
    body = rows if kind == "mmlu" else rows[1:]
    items = []
    for n, row in body:
        if not any(c.strip() for c in row):
            continue
        offset = 0 if kind == "mmlu" else 1
        if len(row) < offset + 6:
            raise DataError(f"expected question, 4 choices and the answer, got {len(row)} columns",
                            file=str(path), line=n, field="answer")
        question, choices, ans = row[offset], row[offset + 1: offset + 5], row[offset + 5]
        row_id = row[0] if kind != "mmlu" else str(n - 1)
        items.append(Item(f"{stem}/{split}/{row_id}", question, _letter_index(ans, 4, str(path), n, "answer"),
                          choices, stem, f"{path}:{n}"))
    return items


def read_hellaswag_txt(path: Path) -> list[Item]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise DataError(f"expected 6 lines per item, got {len(lines)} lines", file=str(path), line=len(lines))
    items = []
    for k in range(0, len(lines), 6):
        head, gold, endings = lines[k], lines[k + 1], lines[k + 2: k + 6]
        activity, sep, ctx = head.partition(": ")
        if not sep:
            raise DataError("expected 'activity: context'", file=str(path), line=k + 1, field="context")
        if gold.strip() not in "0123" or not gold.strip():
            raise DataError(f"gold label {gold!r} is not 0-3", file=str(path), line=k + 2, field="label")
        items.append(Item(f"item-{k // 6}", ctx, int(gold), endings, activity, f"{path}:{k + 1}"))
    return items


def read_truthfulqa_json(path: Path) -> list[Item]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg}", file=str(path), line=err.lineno) from None
    items = []
    for k, row in enumerate(data):
        targets = row.get("mc1_targets") if isinstance(row, dict) else None
        if not isinstance(targets, dict) or sum(1 for v in targets.values() if v == 1) != 1:
            raise DataError(f"item {k}: needs exactly one choice marked 1", file=str(path), field="mc1_targets")
        choices = list(targets)
        random.Random(f"truthfulqa:{k}").shuffle(choices)  # the source always lists the right answer first
        answer = next(i for i, c in enumerate(choices) if targets[c] == 1)
        items.append(Item(f"mc-{k}", row.get("question", ""), answer, choices, row.get("category", "TruthfulQA"),
                          f"{path}:item {k}"))
    return items


def read_gsm8k_original(path: Path) -> list[Item]:
    items = []
    for n, row in read_jsonl_rows(path):
        sol = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(sol, str) or "####" not in sol:
            raise DataError("expected the solution ending in '#### <number>'", file=str(path), line=n,
                            field="answer")
        final = sol.rsplit("####", 1)[1].strip().replace(",", "")
        items.append(Item(f"line-{n}", row.get("question", ""), final, None, "gsm8k", f"{path}:{n}",
                          {"solution": sol}))
    return items


def _peek_json(path: Path):
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
        f.seek(0)
        if head == "[":
            return "json-list", None
        for line in f:
            if line.strip():
                try:
                    return "jsonl", json.loads(line)
                except json.JSONDecodeError:
                    return "jsonl", None
    return "jsonl", None


def read_items(path: str | Path) -> list[Item]:
    """Read benchmark items from a normalized jsonl, an original-format file, or an original CSV folder."""
    p = Path(path)
    if p.is_dir():
        return read_csv_dir(p)
    if not p.is_file():
        raise DataError("file not found", file=str(p))
    if p.suffix == ".csv":
        return read_csv_file(p)
    if p.suffix == ".txt":
        return read_hellaswag_txt(p)
    kind, first = _peek_json(p)
    if kind == "json-list":
        return read_truthfulqa_json(p)
    if isinstance(first, dict) and isinstance(first.get("question"), dict):
        return read_arc(p)
    if (isinstance(first, dict) and "choices" not in first and isinstance(first.get("answer"), str)
            and "####" in first["answer"]):
        return read_gsm8k_original(p)
    return read_normalized(p)
