"""Run benchmark tasks: multiple choice by log-likelihood, GSM8K-style generation by final-number exact match.

Multiple choice reports ``acc`` (highest summed log-probability) and, except for letter-answer tasks where every
continuation is one token, ``acc_norm`` (log-probability divided by the continuation's length in characters, as in
lm-evaluation-harness; it removes the bias toward short choices, which matters on HellaSwag). Both come with a
binomial standard error, per subject and per category (from the benchmark's mapping file).
"""

from __future__ import annotations

import time
from collections import defaultdict

from tuneforge.eval.analysis import flag_answer, summarize_flags
from tuneforge.eval.loglik import LoglikScorer
from tuneforge.eval.metrics import binom_stderr
from tuneforge.eval.parsing import extract_number, numbers_equal
from tuneforge.utils.progress import progress_bar
from tuneforge.eval.prompts import gen_messages, mc_request
from tuneforge.eval.tasks import Task, fewshot_examples


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _group_acc(examples: list[dict], key, fields: tuple[str, ...]) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for ex in examples:
        k = key(ex)
        if k:
            groups[k].append(ex)
    out = {}
    for name in sorted(groups):
        exs = groups[name]
        row = {"n": len(exs)}
        for f in fields:
            row[f.replace("correct", "acc")] = sum(bool(e[f]) for e in exs) / len(exs)
        out[name] = row
    return out


def _summary(examples: list[dict], task: Task, fields: tuple[str, ...]) -> tuple[dict, dict, dict]:
    n = len(examples)
    metrics: dict = {"n": n}
    for f in fields:
        acc = sum(bool(e[f]) for e in examples) / n if n else 0.0
        name = f.replace("correct", "acc")
        metrics[name], metrics[f"{name}_stderr"] = acc, binom_stderr(acc, n)
    per_subject = _group_acc(examples, lambda e: e["subject"], fields)
    for subj, row in per_subject.items():
        row["name"] = task.subject_name(subj)
        row["category"] = task.category(subj)
    per_category = _group_acc(examples, lambda e: task.category(e["subject"]), fields)
    return metrics, per_subject, per_category


def evaluate_mc(task: Task, model, tokenizer, *, shots: int = 0, chat: bool = False, batch_size: int = 8,
                share_context: bool = True, progress: bool = True) -> dict:
    """Score every item of a multiple-choice task; returns the task result (metrics, breakdowns, examples)."""
    scorer = LoglikScorer(model, tokenizer, batch_size=batch_size, share_context=share_context)
    requests = [mc_request(task, it, fewshot_examples(task, it, shots), tokenizer, chat) for it in task.items]
    start = time.perf_counter()
    with progress_bar(len(requests), f"{task.name}", progress) as advance:
        scores = scorer.score(requests, progress=advance)
    seconds = time.perf_counter() - start
    use_norm = task.style != "letters"
    examples = []
    for it, lps in zip(task.items, scores):
        pred = _argmax(lps)
        ex = {"id": it.id, "subject": it.subject, "question": it.question[:300], "gold": it.answer, "pred": pred,
              "correct": pred == it.answer, "logprobs": [round(x, 4) for x in lps],
              "gold_text": it.gold[:200], "pred_text": (it.choices or [])[pred][:200]}
        if use_norm:
            # lm-evaluation-harness divides by the choice's own characters: not the space before it, nor (with
            # --chat) the template's text around it
            normed = [lp / max(len(c), 1) for lp, c in zip(lps, it.choices or [])]
            ex["pred_norm"] = _argmax(normed)
            ex["correct_norm"] = ex["pred_norm"] == it.answer
        examples.append(ex)
    fields = ("correct", "correct_norm") if use_norm else ("correct",)
    metrics, per_subject, per_category = _summary(examples, task, fields)
    metrics["chance"] = sum(1 / len(it.choices or [1]) for it in task.items) / max(len(task.items), 1)
    return {"task": task.name, "kind": "multiple_choice", "metrics": metrics, "per_subject": per_subject,
            "per_category": per_category, "examples": examples, "timing": _timing(seconds, len(examples)),
            "settings": {"shots": shots, "style": task.style, "chat": chat, "n_total": task.n_total,
                         "path": task.path, "share_context": scorer.share_context}}


def _timing(seconds: float, n: int) -> dict:
    return {"seconds": round(seconds, 3), "items": n, "sec_per_100": round(100 * seconds / n, 2) if n else None}


def evaluate_generative(task: Task, engine, *, shots: int = 0, max_new_tokens: int = 256, batch_size: int = 8,
                        progress: bool = True) -> dict:
    """Generate an answer per item, extract the final number and compare it with the reference (exact match)."""
    convs = [gen_messages(task, it, fewshot_examples(task, it, shots)) for it in task.items]
    start = time.perf_counter()
    gens = engine.generate(convs, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    examples = []
    for it, conv, g in zip(task.items, convs, gens):
        got = extract_number(g.text)
        ex = {"id": it.id, "subject": it.subject, "prompt": conv[-1]["content"][:300], "prediction": g.text,
              "reference": str(it.answer), "extracted": got, "correct": numbers_equal(got, str(it.answer)),
              "finish_reason": g.finish_reason, "completion_tokens": g.completion_tokens}
        ref_solution = str(it.extra.get("solution") or "") or None
        ex["flags"] = flag_answer(g.text, ref_solution, finish_reason=g.finish_reason, parsed=got is not None)
        examples.append(ex)
    metrics, per_subject, _ = _summary(examples, task, ("correct",))
    metrics["exact_match"] = metrics.pop("acc")
    metrics["exact_match_stderr"] = metrics.pop("acc_stderr")
    metrics["n_unparseable"] = sum(1 for e in examples if e["extracted"] is None)
    return {"task": task.name, "kind": "generative_exact_match", "metrics": metrics, "per_subject": {},
            "per_category": {}, "examples": examples, "flags": summarize_flags(examples),
            "timing": _timing(seconds, len(examples)),
            "settings": {"shots": shots, "max_new_tokens": max_new_tokens, "n_total": task.n_total,
                         "path": task.path}}
