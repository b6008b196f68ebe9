"""Write a dataset doctor result: `summary.json`, `report.md`, `report.html` and PNG charts in one folder."""

from __future__ import annotations

import html
import json
from pathlib import Path

from tuneforge.data.doctor.result import CheckResult
from tuneforge.utils.io import atomic_write_json, atomic_write_text
from tuneforge.utils.plots import figure

_ICON = {"error": "✖", "warning": "⚠", "info": "ℹ"}


def _length_charts(res: CheckResult, out: Path) -> dict[str, str]:
    unit, p, a = res.lengths.get("unit", ""), res.lengths.get("prompt", []), res.lengths.get("answer", [])
    if not p:
        return {}
    with figure(out / "lengths.png", figsize=(11, 3.6), ncols=2) as (_fig, axes):
        for ax, vals, title in ((axes[0], p, "prompt"), (axes[1], a, "answer")):
            ax.hist(vals, bins=50, color="#4472c4")
            ax.set_title(f"{title} length")
            ax.set_xlabel(unit)
            ax.set_ylabel("rows")
        cut = res.stats.get("lengths", {}).get("truncation", {}).get("cutoff")
        if cut:
            axes[0].axvline(cut, color="red", linestyle="--", label=f"cutoff {cut}")
            axes[0].legend()
    with figure(out / "scatter.png", figsize=(5.5, 4.5)) as (_fig, ax):
        ax.scatter(p, a, s=6, alpha=0.4, color="#c55a11")
        ax.set_xlabel(f"prompt length ({unit})")
        ax.set_ylabel(f"answer length ({unit})")
        ax.set_title("answer vs. prompt length")
    return {"lengths": "lengths.png", "scatter": "scatter.png"}


def _label_chart(res: CheckResult, out: Path) -> dict[str, str]:
    answers = res.stats.get("labels", {}).get("answers")
    if not answers:
        return {}
    with figure(out / "labels.png", figsize=(max(4, 0.6 * len(answers) + 2), 3.5)) as (_fig, ax):
        ax.bar([str(k)[:20] or "(empty)" for k in answers], list(answers.values()), color="#70ad47")
        ax.set_title("answer (label) balance")
        ax.set_ylabel("rows")
    return {"labels": "labels.png"}


def _charts(res: CheckResult, out: Path) -> dict[str, str]:
    return _length_charts(res, out) | _label_chart(res, out)


def _example_lines(ex: dict) -> str:
    return "; ".join(f"{k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                     for k, v in ex.items())


def _markdown(res: CheckResult, charts: dict[str, str]) -> str:
    d = res.dataset
    lines = [f"# Dataset check: {d['name']}", "",
             f"- target: `{d['target']}`", f"- format: {d['format'] or '?'}",
             f"- rows: {d['rows']} ({d['usable_rows']} usable)", f"- fingerprint: `{d['fingerprint']}`", "",
             "## Findings", ""]
    if not res.findings:
        lines.append("No problems found.")
    lines += ["| | check | rows | summary |", "|---|---|---|---|"] if res.findings else []
    for f in res.findings:
        lines.append(f"| {_ICON[f.severity]} {f.severity} | {f.check} | {f.count} | {f.summary.replace('|', '/')} |")
    for f in res.findings:
        if f.examples:
            lines += ["", f"### {f.check}: examples", ""]
            lines += [f"- {_example_lines(ex)}" for ex in f.examples]
    lines += ["", "## Charts", ""] + [f"![{name}]({path})" for name, path in charts.items()]
    lines += ["", "## Statistics", "", "```json", json.dumps(res.stats, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(lines)


def _html(res: CheckResult, charts: dict[str, str]) -> str:
    e = html.escape
    d = res.dataset
    rows = "".join(f"<tr class='{f.severity}'><td>{_ICON[f.severity]} {f.severity}</td><td>{e(f.check)}</td>"
                   f"<td>{f.count}</td><td>{e(f.summary)}</td></tr>" for f in res.findings)
    examples = "".join(
        f"<h3>{e(f.check)}: examples</h3><ul>" + "".join(f"<li>{e(_example_lines(x))}</li>" for x in f.examples)
        + "</ul>" for f in res.findings if f.examples)
    imgs = "".join(f"<figure><img src='{e(p)}' alt='{e(n)}'><figcaption>{e(n)}</figcaption></figure>"
                   for n, p in charts.items())
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
             "tr.error td:first-child{color:#c00}tr.warning td:first-child{color:#b60}"
             "pre{background:#f6f6f6;padding:1em;overflow:auto}img{max-width:100%}li{margin:.3em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Dataset check: {e(d['name'])}</title>"
            f"<style>{style}</style></head><body><h1>Dataset check: {e(d['name'])}</h1>"
            f"<p><code>{e(d['target'])}</code> · format {e(d['format'] or '?')} · {d['rows']} rows "
            f"({d['usable_rows']} usable) · fingerprint <code>{e(d['fingerprint'][:16])}…</code></p>"
            f"<h2>Findings</h2>" + (f"<table><tr><th></th><th>check</th><th>rows</th><th>summary</th></tr>{rows}"
                                    "</table>" if rows else "<p>No problems found.</p>")
            + examples + f"<h2>Charts</h2>{imgs}<h2>Statistics</h2><pre>"
            + e(json.dumps(res.stats, indent=2, ensure_ascii=False)) + "</pre></body></html>")


def write_report(res: CheckResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the report files into `out_dir` (created); returns name -> path."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    charts = _charts(res, out)
    summary = res.summary() | {"charts": charts}
    paths = {"json": out / "summary.json", "markdown": out / "report.md", "html": out / "report.html"}
    atomic_write_json(paths["json"], summary)
    atomic_write_text(paths["markdown"], _markdown(res, charts))
    atomic_write_text(paths["html"], _html(res, charts))
    return paths | {name: out / p for name, p in charts.items()}
