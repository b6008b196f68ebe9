"""Distribution checks for the dataset doctor: label balance, diversity, script mix.

Each function takes the loaded records and returns (findings, stats) for `check.check_dataset` to collect.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tuneforge.data.doctor import text as tx
from tuneforge.data.doctor.result import Finding
from tuneforge.data.records import Record

MAX_LABELS = 20
TOP_TEMPLATES = 10


def labels(recs: list[Record]) -> tuple[list[Finding], dict]:
    """Balance of classification-style answers (few distinct short answers), KTO labels, low-cardinality columns."""
    st: dict[str, Any] = {}
    findings = []
    answers = Counter(tx.answer_text(r).strip() for r in recs)
    if recs and 2 <= len(answers) <= MAX_LABELS and len(answers) <= len(recs) / 5:
        st["answers"] = dict(answers.most_common())
        hi, lo = max(answers.values()), min(answers.values())
        if hi / lo > 3:
            findings.append(Finding("label_imbalance", "warning", lo,
                                    f"answers are imbalanced: most common {hi} rows, rarest {lo} rows "
                                    f"({', '.join(f'{a!r}: {n}' for a, n in answers.most_common(5))})"))
    kto = Counter(r.label for r in recs if r.label is not None)
    if kto:
        st["kto_label"] = {str(k).lower(): v for k, v in kto.items()}
    columns: dict[str, Counter] = {}
    for r in recs:
        for key, v in r.extra.items():
            if isinstance(v, (str, int, bool)) or v is None:
                columns.setdefault(key, Counter())[str(v)] += 1
    for key, c in columns.items():
        if 2 <= len(c) <= 50 and len(c) <= len(recs) / 5:
            st.setdefault("columns", {})[key] = dict(c.most_common())
    return findings, st


def diversity(recs: list[Record], k: int) -> tuple[list[Finding], dict]:
    """distinct-n, openings and template share of instructions (fixed instruction lines left out) and answers."""
    instr = [tx.instruction_text(r) for r in recs]
    boiler = tx.boilerplate_lines(instr)
    var = [tx.variable_part(t, boiler) for t in instr]
    answers = [tx.answer_text(r) for r in recs]
    templates = Counter(tx.template_key(t) for t in var)
    top = templates.most_common(TOP_TEMPLATES)
    share = round(sum(n for _, n in top) / max(1, len(recs)), 4)
    st = {
        "fixed_instruction_lines": [{"line": tx.snippet(line, 120),
                                     "rows": sum(line in {x.strip() for x in t.splitlines()} for t in instr)}
                                    for line in sorted(boiler)][:5],
        "distinct": {"instructions": {f"distinct_{n}": tx.distinct_n(var, n) for n in (1, 2, 3)},
                     "answers": {f"distinct_{n}": tx.distinct_n(answers, n) for n in (1, 2, 3)}},
        "leading_words": tx.leading(var, 1, 15),
        "leading_phrases": tx.leading(var, 3, 15),
        "top_templates": {"k": TOP_TEMPLATES, "share": share, "templates": top[:k * 2]},
    }
    findings = []
    if len(recs) >= 50 and share >= 0.5:
        findings.append(Finding("low_diversity", "warning", sum(n for _, n in top),
                                f"{share:.0%} of rows start like one of only {TOP_TEMPLATES} templates "
                                "(typical of generated data)", [{"template": t, "rows": n} for t, n in top[:k]]))
    return findings, st


def languages(recs: list[Record]) -> tuple[list[Finding], dict]:
    """Rows per dominant script of prompt + answer, fixed instruction lines left out. Script, not language: see
    `text.script_of`."""
    boiler = tx.boilerplate_lines([tx.prompt_text(r) for r in recs])
    c = Counter(tx.script_of(tx.variable_part(tx.prompt_text(r), boiler) + "\n" + tx.answer_text(r)) for r in recs)
    st = {"scripts": dict(c.most_common()),
          "note": "dominant writing system per row (CJK / Latin / Cyrillic / Arabic / other), not a language id"}
    major = [s for s, n in c.items() if n / max(1, len(recs)) >= 0.05 and s not in ("none",)]
    findings = []
    if len(major) > 1:
        findings.append(Finding("language_mix", "info", len(recs),
                                "rows are written in several scripts: " + ", ".join(
                                    f"{s} {n}" for s, n in c.most_common())))
    return findings, st
