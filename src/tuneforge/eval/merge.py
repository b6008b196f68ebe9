"""Results evaluated in parts, put back together: the web server evaluates a few rows at a time (so a chat request
never waits for a whole evaluation, and progress can be shown), then merges the parts into the result one call on
all rows gives. Metrics are recomputed from the merged per-example records with the same functions, so the numbers
equal an evaluation in one piece (per-example error flags keep the vocabulary of their part)."""

from __future__ import annotations

from tuneforge.eval.analysis import summarize_flags
from tuneforge.eval.bench import _summary
from tuneforge.eval.metrics import classification_metrics
from tuneforge.utils.textmetrics import generation_metrics


def _timing(parts: list[dict], n: int) -> dict:
    seconds = sum(p.get("timing", {}).get("seconds", 0.0) for p in parts)
    return {"seconds": round(seconds, 3), "items": n, "sec_per_100": round(100 * seconds / n, 2) if n else None}


def merge_task(parts: list[dict]) -> dict:
    """Parts of `task_eval.classify` (same labels and mode) or of `task_eval.evaluate_generation` → one result."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    examples = [e for p in parts for e in p["examples"]]
    merged = {**first, "examples": examples, "timing": _timing(parts, len(examples))}
    if first["kind"] == "classification":
        labels, mode = first["settings"]["labels"], first["settings"]["mode"]
        preds = [e["prediction"] if mode == "score" else e.get("parsed") for e in examples]
        merged["metrics"] = classification_metrics([e["reference"] for e in examples], preds, labels)
    elif first["kind"] == "generation":
        merged["metrics"], _ = generation_metrics([e["prediction"] for e in examples],
                                                  [e["reference"] for e in examples])
    else:
        raise ValueError(f"cannot merge results of kind {first['kind']!r}")
    if "flags" in first:
        merged["flags"] = summarize_flags(examples)
    return merged


def merge_mc(task, parts: list[dict]) -> dict:
    """Parts of `bench.evaluate_mc` on slices of `task.items` → the result on all of them."""
    if not parts:
        raise ValueError("nothing to merge")
    examples = [e for p in parts for e in p["examples"]]
    fields = ("correct", "correct_norm") if "correct_norm" in examples[0] else ("correct",)
    metrics, per_subject, per_category = _summary(examples, task, fields)
    metrics["chance"] = sum(1 / len(it.choices or [1]) for it in task.items) / max(len(task.items), 1)
    return {**parts[0], "metrics": metrics, "per_subject": per_subject, "per_category": per_category,
            "examples": examples, "timing": _timing(parts, len(examples))}
