"""Reference-based text metrics: BLEU (through sacrebleu), ROUGE-1/2/L and exact match.

* BLEU is sacrebleu's: corpus BLEU with its default exponential smoothing, case-sensitive, up to 4-grams, one
  reference per example; the per-example sentence BLEU used for comparisons adds 1 to the counts of n > 1
  precisions (sacrebleu `add-k`, k = 1). Tokenizer (`bleu_tokenizer`): sacrebleu's `zh` when the references contain
  CJK characters (each Chinese character is a token, the rest is tokenized like `13a`), else the standard `13a`.
* ROUGE-N / ROUGE-L are computed here so that Chinese is scored by character: `metric_tokens` gives one token per
  CJK character (`tuneforge.utils.text`), a word for any other run of letters and digits, and one token per
  punctuation mark. ROUGE is the F1 per example (ROUGE-L from the longest common subsequence), averaged over
  examples; case-folded, punctuation dropped, no stemming. On English text this equals the `rouge-score` package
  without stemming (a test checks it); that package drops Chinese characters altogether.
* Exact match: after Unicode NFKC, case folding, whitespace collapsing and stripping surrounding punctuation/quotes.

All scores are reported on a 0-100 scale.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache

from tuneforge.utils.text import CJK_RE, word_tokens

_PUNCT_EDGES = " \t\r\n\"'`“”‘’「」『』《》()[]{}<>.,;:!?。，；：！？、*#-_~"


def metric_tokens(text: str) -> list[str]:
    """Words, single CJK characters and single punctuation marks, in order."""
    return word_tokens(unicodedata.normalize("NFKC", text))


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


def bleu_tokenizer(references: list[str]) -> str:
    """sacrebleu tokenizer for these references: `zh` when any contains a CJK character, else `13a`."""
    return "zh" if any(CJK_RE.search(r) for r in references) else "13a"


@lru_cache(maxsize=8)
def _bleu(tokenize: str, *, sentence: bool = False, max_n: int = 4):
    from sacrebleu.metrics import BLEU

    if sentence:
        return BLEU(tokenize=tokenize, max_ngram_order=max_n, smooth_method="add-k", smooth_value=1,
                    effective_order=True)
    return BLEU(tokenize=tokenize, max_ngram_order=max_n)


def corpus_bleu(hyps: list[str], refs: list[str], max_n: int = 4) -> dict:
    """Corpus BLEU of predictions against one reference each: bleu, precisions, bp, hyp_len, ref_len, tokenizer."""
    tokenize = bleu_tokenizer(refs)
    res = _bleu(tokenize, max_n=max_n).corpus_score(list(hyps), [list(refs)])
    return {"bleu": res.score, "precisions": list(res.precisions), "bp": res.bp, "hyp_len": res.sys_len,
            "ref_len": res.ref_len, "tokenizer": tokenize}


def sentence_bleu(hyp: str, ref: str, max_n: int = 4, tokenize: str | None = None) -> float:
    """Smoothed sentence BLEU (add-one for n > 1), 0-100; 0 when either side is empty."""
    if not hyp.strip() or not ref.strip():
        return 0.0
    return _bleu(tokenize or bleu_tokenizer([ref]), sentence=True, max_n=max_n).sentence_score(hyp, [ref]).score


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
    per_example, tokenize = [], bleu_tokenizer(refs)
    for p, r in zip(preds, refs):
        s = rouge_scores(p, r)
        s["bleu"] = sentence_bleu(p, r, tokenize=tokenize)
        s["exact_match"] = 100.0 if exact_match(p, r) else 0.0
        per_example.append(s)
    n = max(len(per_example), 1)
    metrics = {k: sum(e[k] for e in per_example) / n for k in ("rouge1", "rouge2", "rougeL", "exact_match")}
    corpus = corpus_bleu(preds, refs)
    metrics["bleu"] = corpus["bleu"]
    metrics["bleu_bp"] = corpus["bp"]
    metrics["n"] = len(per_example)
    return metrics, per_example
