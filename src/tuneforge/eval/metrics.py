"""Classification metrics and the small statistics used in reports (standard errors, paired sign test).

Classification: accuracy over all examples (an unparseable generation counts as wrong); per-label precision,
recall and F1, and their unweighted (macro) means over the label set; a confusion matrix with gold labels as rows and
predicted labels as columns, plus an ``(unparsed)`` column.
"""

from __future__ import annotations

import math

UNPARSED = "(unparsed)"


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_metrics(golds: list[str], preds: list[str | None], labels: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-label scores, confusion matrix and unparseable count."""
    cols = list(labels) + [UNPARSED]
    matrix = [[0] * len(cols) for _ in labels]
    index = {lab: i for i, lab in enumerate(labels)}
    for g, p in zip(golds, preds):
        if g not in index:
            raise ValueError(f"gold label {g!r} is not in the label set {labels}")
        matrix[index[g]][index[p] if p in index else len(labels)] += 1
    n = len(golds)
    correct = sum(matrix[i][i] for i in range(len(labels)))
    per_label = {}
    for i, lab in enumerate(labels):
        tp = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        p, r = _safe_div(tp, predicted), _safe_div(tp, support)
        per_label[lab] = {"precision": p, "recall": r, "f1": _safe_div(2 * p * r, p + r), "support": support,
                          "predicted": predicted}
    k = max(len(labels), 1)
    return {
        "accuracy": _safe_div(correct, n),
        "accuracy_stderr": binom_stderr(_safe_div(correct, n), n),
        "macro_precision": sum(v["precision"] for v in per_label.values()) / k,
        "macro_recall": sum(v["recall"] for v in per_label.values()) / k,
        "macro_f1": sum(v["f1"] for v in per_label.values()) / k,
        "n": n,
        "n_unparseable": sum(row[-1] for row in matrix),
        "per_label": per_label,
        "confusion": {"rows": list(labels), "cols": cols, "matrix": matrix},
    }


def binom_stderr(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n items (sqrt(p(1-p)/n))."""
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign (McNemar) test p-value for paired wins vs losses; ties are ignored."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def scalar_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The top-level numbers of a metrics dict (for loggers and registries), keys prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
