"""PNG charts for eval reports (matplotlib, headless): per-subject accuracy, confusion matrix, error-flag counts.

Each function returns the written path, or None when there is nothing to draw. Figures come from
`tuneforge.utils.plots.figure` (headless, saved atomically, always closed).
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.utils.plots import figure


def subject_bars(per_subject: dict[str, dict], path: Path, title: str, chance: float | None = None) -> Path | None:
    """Horizontal bars of accuracy per subject (sorted), with the chance level as a dashed line."""
    if len(per_subject) < 2:
        return None
    key = "acc_norm" if all("acc_norm" in r for r in per_subject.values()) else "acc"
    rows = sorted(per_subject.items(), key=lambda kv: kv[1].get(key, 0.0))
    with figure(path, figsize=(7, max(2.5, 0.22 * len(rows) + 1)), grid=False) as (_fig, ax):
        _subject_axes(ax, rows, key, title, chance)
    return path


def _subject_axes(ax, rows: list, key: str, title: str, chance: float | None) -> None:
    ax.barh([k for k, _ in rows], [r.get(key, 0.0) for _, r in rows], color="#4c72b0")
    if chance:
        ax.axvline(chance, color="#c44e52", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(key)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)


def confusion_matrix(confusion: dict, path: Path, title: str) -> Path | None:
    """Heatmap of gold (rows) x predicted (columns) counts, numbers written in each cell."""
    matrix = confusion.get("matrix") or []
    if not matrix:
        return None
    rows, cols = confusion["rows"], confusion["cols"]
    with figure(path, figsize=(1.2 * len(cols) + 2, 1.0 * len(rows) + 1.6), grid=False) as (_fig, ax):
        _confusion_axes(ax, matrix, rows, cols, title)
    return path


def _confusion_axes(ax, matrix: list, rows: list, cols: list, title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    top = max(max(r) for r in matrix) or 1
    for i, r in enumerate(matrix):
        for j, v in enumerate(r):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=10)


def flag_bars(counts: dict[str, int], n: int, path: Path, title: str) -> Path | None:
    """Bars of how many answers raised each error flag."""
    if not counts:
        return None
    names = list(counts)
    with figure(path, figsize=(7, 3), grid=False) as (_fig, ax):
        ax.bar(names, [counts[k] for k in names], color="#dd8452")
        ax.set_ylabel(f"answers (of {n})")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=20)
    return path


def compare_bars(names: list[str], a: list[float], b: list[float], labels: tuple[str, str], path: Path,
                 title: str) -> Path | None:
    """Grouped bars of one headline metric per task for two evaluated models."""
    if not names:
        return None
    with figure(path, figsize=(max(4, 1.4 * len(names) + 2), 3.2), grid=False) as (_fig, ax):
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], a, width=0.4, label=labels[0], color="#8c8c8c")
        ax.bar([x + 0.2 for x in xs], b, width=0.4, label=labels[1], color="#4c72b0")
        ax.set_xticks(list(xs), names, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return path
