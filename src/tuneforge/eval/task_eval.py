"""Task metrics on the user's own data: classification over a label set, and free-form generation.

A record's prompt is its conversation up to the last assistant turn; the reference is that last assistant turn
(alpaca ``output``). Prompts are rendered with the chat template exactly as training renders them.

Classification modes:

* ``score`` (default): constrained scoring. Each label is scored as the full assistant answer (label text plus the
  template's end-of-turn marker, i.e. exactly the tokens training teaches) and the most likely label wins. Never
  unparseable; also gives each label's probability (softmax over the label set).
* ``generate``: greedy generation, then `parsing.parse_label`; unparseable answers count as wrong and are reported.
"""

from __future__ import annotations

import math
import time

from tuneforge.eval.analysis import Vocabulary, flag_answer, summarize_flags
from tuneforge.eval.loglik import LoglikScorer
from tuneforge.eval.metrics import classification_metrics
from tuneforge.eval.parsing import parse_label
from tuneforge.utils.progress import progress_bar
from tuneforge.eval.prompts import chat_request
from tuneforge.utils.textmetrics import generation_metrics
from tuneforge.eval.taskdata import check_labels, split_record, tail
from tuneforge.utils.errors import DataError


def _unwrap(engine_or_model, tokenizer):
    """(model, tokenizer, engine or None) from an Engine or a bare model."""
    if hasattr(engine_or_model, "generate") and hasattr(engine_or_model, "tokenizer") and \
            hasattr(engine_or_model, "model"):
        return engine_or_model.model, tokenizer or engine_or_model.tokenizer, engine_or_model
    return engine_or_model, tokenizer, None


def _engine(model, tokenizer, engine):
    if engine is not None:
        return engine
    from tuneforge.infer.engine import Engine

    return Engine(model, tokenizer)


def _score_labels(model, tok, prompts, labels, batch_size, progress,
                  tools=None) -> tuple[list[str], list[list[float]]]:
    scorer = LoglikScorer(model, tok, batch_size=batch_size)
    reqs = [chat_request(tok, p, labels, t) for p, t in zip(prompts, tools or [None] * len(prompts))]
    with progress_bar(len(reqs), "scoring labels", progress) as advance:
        scores = scorer.score(reqs, progress=advance)
    preds, probs = [], []
    for lps in scores:
        top = max(lps)
        exp = [math.exp(x - top) for x in lps]
        probs.append([e / sum(exp) for e in exp])
        preds.append(labels[lps.index(top)])
    return preds, probs


def classify(engine_or_model, tokenizer, records, labels: list[str], mode: str = "score", *, batch_size: int = 8,
             max_new_tokens: int = 16, progress: bool = False) -> dict:
    """Full classification result: metrics, per-example predictions, error flags (generate mode), timing."""
    if mode not in ("score", "generate"):
        raise DataError(f"unknown classification mode '{mode}'", field="mode", hint="use score or generate")
    check_labels(records, labels)
    model, tok, engine = _unwrap(engine_or_model, tokenizer)
    pairs = [split_record(r) for r in records]
    prompts, golds = [p for p, _ in pairs], [ref.strip() for _, ref in pairs]
    start = time.perf_counter()
    examples = []
    if mode == "score":
        preds, probs = _score_labels(model, tok, prompts, labels, batch_size, progress, [r.tools for r in records])
        for rec, p, g, pred, pr in zip(records, prompts, golds, preds, probs):
            examples.append({"id": rec.source, "prompt": tail(p[-1]["content"]), "reference": g, "prediction": pred,
                             "correct": pred == g, "probs": {lab: round(x, 4) for lab, x in zip(labels, pr)}})
    else:
        gens = _engine(model, tok, engine).generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                     progress=progress, tools=[r.tools for r in records])
        preds = []
        for rec, p, g, gen in zip(records, prompts, golds, gens):
            pred = parse_label(gen.text, labels)
            preds.append(pred)
            ex = {"id": rec.source, "prompt": tail(p[-1]["content"]), "reference": g, "prediction": gen.text,
                  "parsed": pred, "correct": pred == g, "finish_reason": gen.finish_reason}
            ex["flags"] = flag_answer(gen.text, None, finish_reason=gen.finish_reason, parsed=pred is not None)
            examples.append(ex)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(golds, preds, labels)
    result = {"kind": "classification", "metrics": metrics, "examples": examples,
              "timing": {"seconds": round(seconds, 3), "items": len(examples),
                         "sec_per_100": round(100 * seconds / max(len(examples), 1), 2)},
              "settings": {"labels": labels, "mode": mode, "max_new_tokens": max_new_tokens}}
    if mode == "generate":
        result["flags"] = summarize_flags(examples)
    return result


def compute_classification_metrics(engine_or_model, tokenizer, records, labels: list[str], mode: str = "score",
                                   **kw) -> dict:
    """Accuracy, macro precision/recall/F1, confusion matrix and unparseable count (see `classify`)."""
    return classify(engine_or_model, tokenizer, records, labels, mode, **kw)["metrics"]


def evaluate_generation(engine, records, *, max_new_tokens: int = 256, batch_size: int = 8,
                        progress: bool = False) -> dict:
    """Generate for each record and score against its reference: BLEU, ROUGE-1/2/L, exact match, error flags."""
    pairs = [split_record(r) for r in records]
    prompts, refs = [p for p, _ in pairs], [ref for _, ref in pairs]
    vocab = Vocabulary(refs + [m.get("content") or "" for p in prompts for m in p])
    start = time.perf_counter()
    gens = engine.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
                           tools=[r.tools for r in records])
    seconds = time.perf_counter() - start
    metrics, per_example = generation_metrics([g.text for g in gens], refs)
    examples = []
    for rec, p, ref, g, scores in zip(records, prompts, refs, gens, per_example):
        ex = {"id": rec.source, "prompt": tail(p[-1]["content"]), "reference": ref, "prediction": g.text,
              "finish_reason": g.finish_reason, "scores": {k: round(v, 2) for k, v in scores.items()}}
        ex["flags"] = flag_answer(g.text, ref, finish_reason=g.finish_reason, vocab=vocab)
        if "misspelling" in ex["flags"]:
            ex["typos"] = vocab.misspellings(g.text)[:10]
        examples.append(ex)
    return {"kind": "generation", "metrics": metrics, "examples": examples, "flags": summarize_flags(examples),
            "timing": {"seconds": round(seconds, 3), "items": len(examples),
                       "sec_per_100": round(100 * seconds / max(len(examples), 1), 2)},
            "settings": {"max_new_tokens": max_new_tokens}}
