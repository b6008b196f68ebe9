"""Evaluation: benchmarks (log-likelihood multiple choice, GSM8K-style generation), task metrics on your data
(classification, BLEU/ROUGE), error analysis, and before/after comparison. See docs/eval.md.

Public entry points (imported lazily so `import tuneforge.eval` stays cheap):
`compute_classification_metrics`, `ClassificationEvalCallback`, `run`, `build_plan`, `compare_results`.
"""

from __future__ import annotations

_LAZY = {
    "compute_classification_metrics": "tuneforge.eval.task_eval",
    "classify": "tuneforge.eval.task_eval",
    "evaluate_generation": "tuneforge.eval.task_eval",
    "ClassificationEvalCallback": "tuneforge.eval.callback",
    "run": "tuneforge.eval.runner",
    "build_plan": "tuneforge.eval.runner",
    "compare_results": "tuneforge.eval.compare",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuneforge.eval' has no attribute {name!r}")
