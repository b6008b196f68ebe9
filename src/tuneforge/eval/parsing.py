"""Turning generated text into an answer: a label from a fixed set, or the final number of a math solution.

Label parsing (`parse_label`), first rule that applies wins:

1. the stripped text equals a label;
2. the text equals a label after case folding and stripping surrounding quotes, punctuation, markdown (``**1**``);
3. the first token of the text is a label (``"1 - positive"``, ``"positive, because ..."``);
4. exactly one label occurs as a whole word anywhere in the text (``"The sentiment is 1."``); a label occurring only
   inside a longer label's match (``positive`` in ``very positive``) does not count;
5. otherwise the generation is *unparseable* (None): it counts as wrong and is flagged `wrong_format`.

Final-number extraction (`extract_number`), GSM8K style: the number after ``####``, else the number after the last
"answer is", else the last number in the text. ``$`` and thousands separators are removed; ``12.0`` equals ``12``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from tuneforge.utils.textmetrics import metric_tokens, normalize_answer

_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?"
_HASH_RE = re.compile(rf"####\s*({_NUM})")
_ANSWER_IS_RE = re.compile(rf"answer\s+is\s*[:=]?\s*\**\s*({_NUM})", re.IGNORECASE)
_ANY_NUM_RE = re.compile(_NUM)


def _label_map(labels: list[str]) -> dict[str, str]:
    return {normalize_answer(lab): lab for lab in labels}


def _whole_word_spans(text: str, needle: str) -> list[tuple[int, int]]:
    pattern = re.compile(rf"(?<![^\W_]){re.escape(needle)}(?![^\W_])")
    return [m.span() for m in pattern.finditer(text)]


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label a generation names, or None when it names none or several (rules in the module docstring)."""
    stripped = text.strip()
    if stripped in labels:
        return stripped
    by_norm = _label_map(labels)
    norm = normalize_answer(stripped)
    if norm in by_norm:
        return by_norm[norm]
    toks = metric_tokens(stripped)
    if toks and toks[0].casefold() in by_norm:
        return by_norm[toks[0].casefold()]
    folded = " ".join(stripped.casefold().split())
    spans = {lab: _whole_word_spans(folded, key) for key, lab in by_norm.items() if key}
    spans = {lab: s for lab, s in spans.items() if s}

    def covered(lab):
        return all(any(o0 <= a and b <= o1 and (o1 - o0) > (b - a) for other, os in spans.items() if other != lab
                       for o0, o1 in os) for a, b in spans[lab])

    found = [lab for lab in spans if not covered(lab)]
    return found[0] if len(found) == 1 else None


def _clean_number(raw: str) -> str:
    return raw.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")


def extract_number(text: str) -> str | None:
    """The final numeric answer in a generated solution, as a plain string, or None when there is no number."""
    for regex in (_HASH_RE, _ANSWER_IS_RE):
        hits = regex.findall(text)
        if hits:
            return _clean_number(hits[-1])
    hits = _ANY_NUM_RE.findall(text)
    return _clean_number(hits[-1]) if hits else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Numeric equality of two extracted answers (``12.0 == 12``); falls back to string equality."""
    if a is None or b is None:
        return False
    try:
        return Decimal(_clean_number(a)) == Decimal(_clean_number(b))
    except InvalidOperation:
        return _clean_number(a) == _clean_number(b)
