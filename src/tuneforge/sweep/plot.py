"""The sweep's chart (metric vs. data size and vs. training time) and its table."""

from __future__ import annotations

from pathlib import Path

from tuneforge.utils.plots import figure

_LABELS = {"accuracy": "accuracy", "macro_f1": "macro F1", "eval_loss": "eval loss"}


def primary_metric(eval_set) -> str:
    """The metric the sweep is judged by: accuracy for classification, else eval loss."""
    return "accuracy" if eval_set.labels else "eval_loss"


def _series(runs: list[dict], key: str) -> list[tuple[float, float, int]]:
    """(train seconds, value, size) of the runs that have `key`."""
    out = []
    for r in runs:
        v = (r.get("metrics") or {}).get(key)
        if isinstance(v, (int, float)):
            out.append((float(r.get("train_seconds") or 0.0), float(v), r["size"]))
    return out


def _panel(ax, runs: list[dict], keys: list[str], loss_key: str | None, by_time: bool) -> None:
    colors = ["#1f77b4", "#2ca02c"]
    for key, color in zip(keys, colors):
        pts = _series(runs, key)
        xs = [p[0] if by_time else p[2] for p in pts]
        ax.plot(xs, [p[1] for p in pts], "o-", color=color, label=_LABELS.get(key, key))
        if by_time and key == keys[0]:
            for x, (_, y, n) in zip(xs, pts):
                ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_ylabel(" / ".join(_LABELS.get(k, k) for k in keys))
    handles, names = ax.get_legend_handles_labels()
    if loss_key:
        twin = ax.twinx()
        pts = _series(runs, loss_key)
        twin.plot([p[0] if by_time else p[2] for p in pts], [p[1] for p in pts], "s--", color="#d62728",
                  label=_LABELS[loss_key])
        twin.set_ylabel(_LABELS[loss_key], color="#d62728")
        h2, n2 = twin.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, loc="best", fontsize=8)
    if by_time:
        ax.set_xlabel("training time (s)")
    else:
        sizes = [r["size"] for r in runs]
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel("training rows (log scale)")


def plot_sweep(runs: list[dict], state: dict, out_png: Path) -> Path:
    """Two panels: the metric(s) against data size (log scale) and against training time; eval loss on a second
    axis when the main metric is classification accuracy."""
    runs = sorted(runs, key=lambda r: r["size"])
    classification = state.get("metric") == "accuracy"
    keys = ["accuracy", "macro_f1"] if classification else ["eval_loss"]
    has_loss = any("eval_loss" in (r.get("metrics") or {}) for r in runs)
    loss_key = "eval_loss" if classification and has_loss else None
    ev = state.get("eval") or {}
    model = Path(str(state.get("base_model"))).name
    with figure(out_png, figsize=(11, 4.2), ncols=2) as (fig, axes):
        _panel(axes[0], runs, keys, loss_key, by_time=False)
        _panel(axes[1], runs, keys, loss_key, by_time=True)
        fig.suptitle(f"data-size sweep: {model} {state.get('method')} on {state['pool']['name']} — "
                     f"eval {ev.get('name')} ({ev.get('n')} rows)", fontsize=10)
    return out_png


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table_rows(state: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sweep table (one row per size, in size order; unfinished sizes say their status)."""
    classification = state.get("metric") == "accuracy"
    header = ["size", "epochs", "steps", "train s", "train loss", "eval loss"]
    header += ["acc", "F1"] if classification else []
    header += ["run"]
    rows = []
    for r in sorted(state.get("runs", []), key=lambda e: e["size"]):
        m = r.get("metrics") or {}
        status = r.get("status", "pending")
        size = str(r["size"]) + ("" if status == "succeeded" else f" ({status})")
        row = [size, _fmt(r.get("epochs"), 2), _fmt(r.get("steps")), _fmt(r.get("train_seconds"), 1),
               _fmt(r.get("train_loss"), 3), _fmt(m.get("eval_loss"), 3)]
        if classification:
            row += [_fmt(m.get("accuracy"), 3), _fmt(m.get("macro_f1"), 3)]
        row.append((r.get("run_id") or "-")[:8])
        rows.append(row)
    return header, rows


def print_table(state: dict) -> None:
    from rich import box
    from rich.table import Table

    from tuneforge.utils.console import console

    header, rows = table_rows(state)
    ev = state.get("eval") or {}
    title = f"sweep {state.get('group_id')}: {state.get('metric')} on {ev.get('name')} ({ev.get('n')} rows)"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for i, h in enumerate(header):
        width = max([len(h)] + [len(row[i]) for row in rows])
        table.add_column(h, justify="left" if i in (0, len(header) - 1) else "right", min_width=width)
    for row in rows:
        table.add_row(*row)
    console.print(table)
