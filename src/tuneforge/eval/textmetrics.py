"""Reference-based text metrics: BLEU, ROUGE-1/2/L and exact match, implemented here (no extra dependency).

Tokenization (`metric_tokens`): Chinese/Japanese characters (Han, kana) are one token each; any other run of letters
and digits is a word; every other non-space character (punctuation) is its own token. So English is scored by
words and Chinese by characters, which is the usual convention for Chinese BLEU/ROUGE (sacrebleu's `zh` tokenizer,
CLUE). Whitespace-splitting tools (e.g. the `rouge_score` package) score Chinese as 0 or as whole sentences; this
does not.

* BLEU (Papineni et al. 2002): corpus-level, up to 4-grams, clipped counts, brevity penalty, case-sensitive,
  punctuation included; no smoothing at corpus level (a corpus with no matching 4-gram scores 0). The per-example
  sentence BLEU used for comparisons adds 1 to numerator and denominator of n > 1 precisions (Lin & Och 2004).
* ROUGE-N / ROUGE-L: F1 per example (ROUGE-L from the longest common subsequence), averaged over examples;
  case-folded and punctuation tokens dropped.
* Exact match: after Unicode NFKC, case folding, whitespace collapsing and stripping surrounding punctuation/quotes.

All scores are reported on a 0-100 scale.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+|[^\w\s]|_")
_PUNCT_EDGES = " \t\r\n\"'`“”‘’「」『』《》()[]{}<>.,;:!?。，；：！？、*#-_~"


def metric_tokens(text: str) -> list[str]:
    """Words, single CJK characters and single punctuation marks, in order."""
    return _TOKEN_RE.findall(unicodedata.normalize("NFKC", text))


def content_tokens(text: str) -> list[str]:
    """Case-folded tokens without punctuation (used by ROUGE and the length/repetition checks)."""
    return [t.casefold() for t in metric_tokens(text) if any(ch.isalnum() for ch in t)]


def normalize_answer(text: str) -> str:
    """Normalization used by exact match (see module docstring)."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = " ".join(t.split())
    return t.strip(_PUNCT_EDGES)


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1))


def _bleu_stats(hyp: list[str], ref: list[str], max_n: int) -> tuple[list[int], list[int]]:
    matches, totals = [], []
    for n in range(1, max_n + 1):
        h, r = ngrams(hyp, n), ngrams(ref, n)
        matches.append(sum(min(c, r[g]) for g, c in h.items()))
        totals.append(max(len(hyp) - n + 1, 0))
    return matches, totals


def _brevity_penalty(hyp_len: int, ref_len: int) -> float:
    if hyp_len == 0:
        return 0.0
    return 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)


def corpus_bleu(hyps: list[str], refs: list[str], max_n: int = 4) -> dict:
    """Corpus BLEU of predictions against one reference each. Returns bleu, precisions, bp, hyp_len, ref_len."""
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs):
        ht, rt = metric_tokens(h), metric_tokens(r)
        hyp_len, ref_len = hyp_len + len(ht), ref_len + len(rt)
        m, t = _bleu_stats(ht, rt, max_n)
        matches = [a + b for a, b in zip(matches, m)]
        totals = [a + b for a, b in zip(totals, t)]
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals)]
    bp = _brevity_penalty(hyp_len, ref_len)
    bleu = 0.0 if min(precisions) == 0 else bp * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return {"bleu": 100 * bleu, "precisions": [100 * p for p in precisions], "bp": bp,
            "hyp_len": hyp_len, "ref_len": ref_len}


def sentence_bleu(hyp: str, ref: str, max_n: int = 4) -> float:
    """Smoothed sentence BLEU (add-one for n > 1), 0-100."""
    ht, rt = metric_tokens(hyp), metric_tokens(ref)
    if not ht or not rt:
        return 0.0
    m, t = _bleu_stats(ht, rt, max_n)
    logs = []
    for n in range(max_n):
        num, den = (m[n], t[n]) if n == 0 else (m[n] + 1, t[n] + 1)
        if num == 0 or den == 0:
            return 0.0
        logs.append(math.log(num / den))
    return 100 * _brevity_penalty(len(ht), len(rt)) * math.exp(sum(logs) / max_n)


def _f1(overlap: int, n_hyp: int, n_ref: int) -> float:
    if overlap == 0 or n_hyp == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_hyp, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge_n(hyp_tokens: list[str], ref_tokens: list[str], n: int) -> float:
    h, r = ngrams(hyp_tokens, n), ngrams(ref_tokens, n)
    overlap = sum(min(c, r[g]) for g, c in h.items())
    return _f1(overlap, sum(h.values()), sum(r.values()))


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hyp_tokens: list[str], ref_tokens: list[str]) -> float:
    return _f1(lcs_length(hyp_tokens, ref_tokens), len(hyp_tokens), len(ref_tokens))


def rouge_scores(hyp: str, ref: str, max_tokens: int = 2000) -> dict[str, float]:
    """ROUGE-1/2/L F1 of one prediction, 0-100 (inputs capped at `max_tokens` tokens to bound LCS cost)."""
    ht, rt = content_tokens(hyp)[:max_tokens], content_tokens(ref)[:max_tokens]
    return {"rouge1": 100 * rouge_n(ht, rt, 1), "rouge2": 100 * rouge_n(ht, rt, 2), "rougeL": 100 * rouge_l(ht, rt)}


def generation_metrics(preds: list[str], refs: list[str]) -> tuple[dict, list[dict]]:
    """Corpus metrics and per-example scores (sentence BLEU, ROUGE-1/2/L, exact match) for paired texts."""
    per_example = []
    for p, r in zip(preds, refs):
        s = rouge_scores(p, r)
        s["bleu"] = sentence_bleu(p, r)
        s["exact_match"] = 100.0 if exact_match(p, r) else 0.0
        per_example.append(s)
    n = max(len(per_example), 1)
    metrics = {k: sum(e[k] for e in per_example) / n for k in ("rouge1", "rouge2", "rougeL", "exact_match")}
    corpus = corpus_bleu(preds, refs)
    metrics["bleu"] = corpus["bleu"]
    metrics["bleu_bp"] = corpus["bp"]
    metrics["n"] = len(per_example)
    return metrics, per_example
