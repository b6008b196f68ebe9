"""Error analysis of generated answers: one set of flags per answer, counts per flag, the worst examples per flag.

Lengths are counted in `content_tokens` (words; one token per Chinese character). Flags and thresholds:

=============== ==========================================================================================
empty           the answer is empty or whitespace only.
did_not_stop    generation hit max_new_tokens (finish_reason == "length").
repetition      the answer loops: its last 1-20 tokens repeat >= 3 times back to back at the end covering >= 6
                tokens (``ha ha ha ha ha ha``), or >= 30% of its 4-grams are repeats of earlier 4-grams (needs at
                least 8 4-grams). Severity: the repeated share.
too_long        longer than max(2 x reference, reference + 10) tokens.
too_short       reference >= 5 tokens and the answer has < 0.5 x as many (and is not empty).
wrong_format    the answer could not be parsed: not one of the labels (classification, generate mode) or no
                number in it (GSM8K). Not used for free-form generation tasks.
misspelling     a word (ASCII letters, >= 4 long) that is not in the vocabulary built from the task's references
                and prompts, but is one edit (insert, delete, substitute, swap) away from a vocabulary word, and
                is not that word plus/minus a common suffix (s, es, ed, d, ing, ly, er). It catches typos of words
                the task uses (``recieve`` when ``receive`` occurs), nothing else: misspelled rare words,
                non-English text and grammatical errors pass unflagged, and a correct word one letter away from
                a known word that never occurs in the data can be flagged. Treat it as "look here", not a verdict.
=============== ==========================================================================================
"""

from __future__ import annotations

import re
from collections import Counter

from tuneforge.utils.textmetrics import content_tokens, ngrams

FLAGS = ("empty", "did_not_stop", "repetition", "too_long", "too_short", "wrong_format", "misspelling")
THRESHOLDS = {
    "repetition_ngram": 4, "repetition_share": 0.30, "repetition_min_ngrams": 8,
    "loop_max_unit": 20, "loop_min_repeats": 3, "loop_min_tokens": 6,
    "too_long_ratio": 2.0, "too_long_slack": 10, "too_short_ratio": 0.5, "too_short_min_ref": 5,
    "misspelling_min_len": 4,
}
_SUFFIXES = ("s", "es", "ed", "d", "ing", "ly", "er")
_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def tail_loop(tokens: list[str]) -> int:
    """Number of tokens covered by the longest back-to-back repetition at the end (0 when none)."""
    best = 0
    n = len(tokens)
    for unit in range(1, min(THRESHOLDS["loop_max_unit"], n // THRESHOLDS["loop_min_repeats"]) + 1):
        tail = tokens[n - unit:]
        reps = 1
        while (reps + 1) * unit <= n and tokens[n - (reps + 1) * unit: n - reps * unit] == tail:
            reps += 1
        covered = reps * unit
        if reps >= THRESHOLDS["loop_min_repeats"] and covered >= THRESHOLDS["loop_min_tokens"]:
            best = max(best, covered)
    return best


def repetition_score(tokens: list[str]) -> float:
    """Share of the answer that is repetition (0..1); flagged when >= the threshold or a tail loop exists."""
    n = THRESHOLDS["repetition_ngram"]
    grams = ngrams(tokens, n)
    total = sum(grams.values())
    dup_share = (total - len(grams)) / total if total >= THRESHOLDS["repetition_min_ngrams"] else 0.0
    loop_share = tail_loop(tokens) / len(tokens) if tokens else 0.0
    return max(dup_share, loop_share if loop_share > 0 else 0.0)


def _inflection(a: str, b: str) -> bool:
    """One word is the other plus a common suffix (``movie``/``movies``, ``make``/``makes``)."""
    short, long_ = sorted((a, b), key=len)
    return any(long_ == short + s or (short.endswith("e") and long_ == short[:-1] + s) for s in _SUFFIXES)


class Vocabulary:
    """Lower-cased words seen in references and prompts, with a single-deletion index for edit-distance-1 lookups."""

    def __init__(self, texts: list[str]):
        self.words = {w.lower() for t in texts for w in _WORD_RE.findall(t)}
        self._deletes: dict[str, set[str]] = {}
        for w in self.words:
            for i in range(len(w)):
                self._deletes.setdefault(w[:i] + w[i + 1:], set()).add(w)

    def _candidates(self, w: str):
        yield from self._deletes.get(w, ())  # a letter is missing
        for i in range(len(w)):
            d = w[:i] + w[i + 1:]
            if d in self.words:  # an extra letter
                yield d
            yield from (c for c in self._deletes.get(d, ()) if len(c) == len(w))  # a substitution or a swap

    def near_miss(self, word: str) -> str | None:
        """A vocabulary word one edit away from an unknown `word`, or None."""
        w = word.lower()
        if w in self.words or len(w) < THRESHOLDS["misspelling_min_len"]:
            return None
        if any(_inflection(w, v) for s in _SUFFIXES for v in (w + s, w[: -len(s)], w[: -len(s)] + "e")
               if v in self.words):
            return None
        return min((c for c in self._candidates(w) if c != w and not _inflection(w, c)), default=None)

    def misspellings(self, text: str) -> list[tuple[str, str]]:
        """(word, probable intended word) for each suspicious word of `text`."""
        out = []
        for w in _WORD_RE.findall(text):
            fix = self.near_miss(w)
            if fix:
                out.append((w, fix))
        return out


def flag_answer(prediction: str, reference: str | None = None, *, finish_reason: str | None = None,
                parsed: bool | None = None, vocab: Vocabulary | None = None) -> dict[str, float]:
    """Flags raised by one answer, each with a severity (higher = worse; used to rank the worst examples).

    `parsed` is None when the task has no expected format; `reference` None skips the length checks.
    """
    flags: dict[str, float] = {}
    toks = content_tokens(prediction)
    if not prediction.strip():
        flags["empty"] = 1.0
    if finish_reason == "length":
        flags["did_not_stop"] = float(len(toks))
    rep = repetition_score(toks)
    if rep >= THRESHOLDS["repetition_share"] or tail_loop(toks):
        flags["repetition"] = rep
    if reference is not None and prediction.strip():
        n_ref, n_pred = len(content_tokens(reference)), len(toks)
        limit = max(THRESHOLDS["too_long_ratio"] * n_ref, n_ref + THRESHOLDS["too_long_slack"])
        if n_pred > limit:
            flags["too_long"] = n_pred / max(n_ref, 1)
        if n_ref >= THRESHOLDS["too_short_min_ref"] and n_pred < THRESHOLDS["too_short_ratio"] * n_ref:
            flags["too_short"] = n_ref / max(n_pred, 1)
    if parsed is False:
        flags["wrong_format"] = 1.0
    if vocab is not None:
        typos = vocab.misspellings(prediction)
        if typos:
            flags["misspelling"] = float(len(typos))
    return flags


def summarize_flags(examples: list[dict], worst: int = 5) -> dict:
    """Counts per flag and the `worst` examples per flag (by severity). Each example carries a `flags` dict."""
    counts = Counter()
    ranked: dict[str, list[tuple[float, int]]] = {f: [] for f in FLAGS}
    for i, ex in enumerate(examples):
        for f, sev in (ex.get("flags") or {}).items():
            counts[f] += 1
            ranked.setdefault(f, []).append((sev, i))
    worst_examples = {}
    for f, lst in ranked.items():
        if lst:
            lst.sort(key=lambda x: -x[0])
            worst_examples[f] = [_brief(examples[i], f) for _, i in lst[:worst]]
    n = len(examples)
    return {"n": n, "counts": {f: counts.get(f, 0) for f in FLAGS},
            "rates": {f: (counts.get(f, 0) / n if n else 0.0) for f in FLAGS},
            "worst": worst_examples, "thresholds": dict(THRESHOLDS)}


def _brief(ex: dict, flag: str) -> dict:
    keep = ("id", "prompt", "prediction", "reference", "flags", "typos")
    out = {k: ex[k] for k in keep if k in ex}
    if isinstance(out.get("prompt"), str) and len(out["prompt"]) > 300:
        out["prompt"] = "…" + out["prompt"][-300:]
    if isinstance(out.get("prediction"), str) and len(out["prediction"]) > 600:
        out["prediction"] = out["prediction"][:600] + "…"
    out["severity"] = ex["flags"][flag]
    return out
