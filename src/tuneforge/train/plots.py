"""Loss-curve PNG written at the end of a run (people would rather look than read)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_per_step(rows: list[dict], key: str) -> list[dict]:
    """Rows holding `key`, one per step (the last one: a step redone after a resume replaces the first try)."""
    by_step = {r["step"]: r for r in rows if key in r and "step" in r}
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(metrics_file: Path, out_png: Path, title: str = "training loss") -> Path | None:
    all_rows = read_metrics(metrics_file)
    rows = last_per_step(all_rows, "loss")
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], label="train loss", color="#1f77b4")
    evals = last_per_step(all_rows, "eval_loss")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss", color="#d62728")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
