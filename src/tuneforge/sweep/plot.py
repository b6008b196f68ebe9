"""The sweep's chart and its table.

A pure data-size sweep charts its metric against data size and against training time (`plot_sweep`). A sweep with
a grid (a method shoot-out) draws one bar chart per measure over its cells (`plot_grid`): the task metric, the eval
loss, the final train loss, the trainable share of the parameters (log scale), the peak RSS of each cell's training
process and the seconds per optimizer step. The table (`table_rows`) has one row per cell with all of them.
"""

from __future__ import annotations

import math
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


# (measure, panel title, log scale): the grid chart's panels after the task metric(s)
_GRID_MEASURES = (("final_loss", "final train loss", False),
                  ("trainable_percent", "trainable parameters (%, log scale)", True),
                  ("peak_rss_mb", "peak RSS of training (MB)", False), ("seconds_per_step", "seconds per step", False))


def _measure(run: dict, key: str):
    value = (run.get("metrics") or {}).get(key) if key in ("accuracy", "macro_f1", "eval_loss") else run.get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def cell_label(run: dict, keys: list[str], several_sizes: bool) -> str:
    """The cell's grid values, one per line (plus its size when the sweep has several)."""
    overrides = run.get("overrides") or {}
    parts = [overrides.get(k, "base") for k in keys] + ([f"n={run['size']}"] if several_sizes else [])
    return "\n".join(parts)


def _bars(ax, labels: list[str], series: list[tuple[str, list[float]]], log: bool) -> None:
    width = 0.8 / len(series)
    crowded = len(labels) * len(series) > 10  # upright value labels and slanted names, or they overlap
    for i, (name, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name if len(series) > 1 else None)
        ax.bar_label(bars, labels=["" if math.isnan(v) else _fmt_sig(v) for v in values], fontsize=6 if crowded else 7,
                     rotation=90 if crowded else 0, padding=2)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7, rotation=40 if crowded else 0, ha="right" if crowded else "center",
                       rotation_mode="anchor")
    ax.margins(y=0.15)
    if log:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    if len(series) > 1:
        ax.legend(fontsize=7, loc="best", framealpha=0.9)


def _grid_panels(runs: list[dict], classification: bool) -> list[tuple[str, list[str], bool]]:
    """(title, measures drawn side by side, log scale) of every panel that has a value in some cell."""
    if classification:
        panels = [("task metric: accuracy / macro F1", ["accuracy", "macro_f1"], False),
                  ("eval loss", ["eval_loss"], False)]
    else:
        panels = [("task metric: eval loss", ["eval_loss"], False)]
    panels += [(title, [key], log) for key, title, log in _GRID_MEASURES]
    return [p for p in panels if any(not math.isnan(_measure(r, m)) for r in runs for m in p[1])]


def plot_grid(runs: list[dict], state: dict, out_png: Path) -> Path:
    """One bar chart per measure (see module docstring) over the finished cells."""
    keys = grid_keys(runs)
    several_sizes = len({r["size"] for r in runs}) > 1
    labels = [cell_label(r, keys, several_sizes) for r in runs]
    panels = _grid_panels(runs, state.get("metric") == "accuracy")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    width = max(11.0, min(24.0, ncols * (1.5 + 0.55 * len(runs))))
    with figure(out_png, figsize=(width, 3.4 * nrows + 0.6), ncols=ncols, nrows=nrows, squeeze=False) as (fig, axes):
        for ax, (title, measures, log) in zip(axes.flat, panels):
            _bars(ax, labels, [(_LABELS.get(m, m), [_measure(r, m) for r in runs]) for m in measures], log)
            ax.set_title(title, fontsize=9)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        ev = state.get("eval") or {}
        fig.suptitle(f"sweep over {', '.join(keys)}: {Path(str(state.get('base_model'))).name} on "
                     f"{state['pool']['name']} — eval {ev.get('name')} ({ev.get('n')} rows); x: "
                     f"{' / '.join(keys)}", fontsize=10)
    return out_png


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _fmt_sig(v, digits: int = 3) -> str:
    """Significant digits, for values spanning magnitudes (0.0123 % trainable, 0.004 s/step); whole numbers from
    10**digits up (4055 MB, not 4.05e+03)."""
    if v is None:
        return "-"
    return f"{float(v):.0f}" if abs(float(v)) >= 10 ** digits else f"{float(v):.{digits}g}"


def grid_keys(runs: list[dict]) -> list[str]:
    """The grid keys of the runs, in the order they were first given."""
    return list(dict.fromkeys(k for r in runs for k in (r.get("overrides") or {})))


def short_keys(keys: list[str]) -> list[str]:
    """Column titles of grid keys: the last part (`learning_rate`; `method` for method.type), the full key when two
    keys would read alike."""
    short = [k.split(".")[-2] if k.endswith(".type") and "." in k else k.split(".")[-1] for k in keys]
    return [s if short.count(s) == 1 else k for s, k in zip(short, keys)]


def _cell_columns(r: dict, keys: list[str]) -> list[str]:
    status = r.get("status", "pending")
    size = str(r["size"]) + ("" if status == "succeeded" else f" ({status})")
    overrides = r.get("overrides") or {}
    return [overrides.get(k, "-") for k in keys] + [size]


def table_rows(state: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sweep table: one row per cell (in size order, grid order within a size; unfinished
    cells say their status): its grid values and size, the task metric(s) first (accuracy and F1 with labels, eval
    loss), then the final train loss, the trainable share of the parameters, the peak RSS of its training process,
    seconds per optimizer step, steps, epochs, training seconds and the run id."""
    classification = state.get("metric") == "accuracy"
    runs = sorted(state.get("runs", []), key=lambda e: e["size"])
    keys = grid_keys(runs)
    header = short_keys(keys) + ["size"] + (["acc", "F1"] if classification else [])
    header += ["eval loss", "final loss", "trainable %", "peak RSS MB", "s/step", "steps", "epochs", "train s", "run"]
    rows = []
    for r in runs:
        m = r.get("metrics") or {}
        row = _cell_columns(r, keys)
        if classification:
            row += [_fmt(m.get("accuracy"), 3), _fmt(m.get("macro_f1"), 3)]
        row += [_fmt(m.get("eval_loss"), 3), _fmt(r.get("final_loss", r.get("train_loss")), 3),
                _fmt_sig(r.get("trainable_percent")), _fmt(r.get("peak_rss_mb"), 0),
                _fmt_sig(r.get("seconds_per_step")), _fmt(r.get("steps")), _fmt(r.get("epochs"), 2),
                _fmt(r.get("train_seconds"), 1), (r.get("run_id") or "-")[:8]]
        rows.append(row)
    return header, rows


def print_table(state: dict) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from tuneforge.utils.console import console

    header, rows = table_rows(state)
    n_keys = len(grid_keys(state.get("runs", [])))
    ev = state.get("eval") or {}
    title = f"sweep {state.get('group_id')}: {state.get('metric')} on {ev.get('name')} ({ev.get('n')} rows)"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for i, h in enumerate(header):
        width = max([len(row[i]) for row in rows] + [len(max(h.split(), key=len))])  # headers may wrap, not values
        left = i <= n_keys or i == len(header) - 1  # grid values, size and run id
        table.add_column(h, justify="left" if left else "right", min_width=width)
    for row in rows:
        table.add_row(*(escape(v) for v in row))  # grid values may hold brackets: [q_proj,v_proj]
    console.print(table)
