"""Compare runs: config differences, final metrics side by side, loss curves overlaid in one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.registry import queries
from tuneforge.registry.queries import RunView
from tuneforge.registry.store import Store
from tuneforge.utils.plots import figure

ABSENT = "<absent>"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (lists are kept as values)."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(runs: list[RunView]) -> list[tuple[str, list[Any]]]:
    """(dotted key, value per run) for every key whose value is not the same in all runs."""
    flat = [flatten(r.config or {}) for r in runs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for k in keys:
        vals = [f.get(k, ABSENT) for f in flat]
        if any(v != vals[0] for v in vals[1:]):
            rows.append((k, vals))
    for attr in ("base_model", "base_model_identity", "stage", "method"):
        vals = [getattr(r, attr) for r in runs]
        if any(v != vals[0] for v in vals[1:]):
            rows.insert(0, (attr, vals))
    return rows


def metric_table(store: Store, runs: list[RunView]) -> list[tuple[str, list[float | None]]]:
    """Final value of every logged metric, then every eval metric (`eval/<name>/<key>`), per run."""
    per_run: list[dict[str, Any]] = []
    for r in runs:
        vals: dict[str, Any] = dict(queries.final_metrics(store, r.id))
        for e in queries.evals(store, r.id):
            for k, v in (e["metrics"] or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    vals[f"eval/{e['name']}/{k}"] = v
        per_run.append(vals)
    keys = sorted(set().union(*per_run), key=lambda k: (k.startswith("eval/"), k)) if per_run else []
    return [(k, [p.get(k) for p in per_run]) for k in keys]


def default_plot_path(store_home: Path, run_ids: list[str]) -> Path:
    name = "compare-" + "-".join(i[:8] for i in run_ids[:6]) + ".png"
    return store_home / "reports" / name


def plot_curves(store: Store, runs: list[RunView], keys: list[str], out: Path) -> Path | None:
    """Overlay `keys` (one panel each) of all runs against step; None when no run logged any of them."""
    series = {r.id: queries.metric_series(store, r.id, keys) for r in runs}
    keys = [k for k in keys if any(k in s for s in series.values())]
    if not keys:
        return None
    with figure(out, figsize=(6 * len(keys), 4), ncols=len(keys), squeeze=False) as (_fig, axes):
        for ax, key in zip(axes[0], keys):
            _plot_key(ax, key, runs, series)
    return out


def _plot_key(ax, key: str, runs: list[RunView], series: dict) -> None:
    for r in runs:
        pts = [(step, v) for step, _ep, v, _t in series[r.id].get(key, []) if v is not None]
        if pts:
            label = f"{r.id[:8]} {r.stage or r.kind}/{r.method or '-'}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, linewidth=1.4)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
