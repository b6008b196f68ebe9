"""Eval reports: `results.json` (machine-readable, reloadable by `tuneforge eval compare`), `report.md` and
`report.html` (same content) with PNG charts, all in one output folder.

A report is built as a list of blocks (heading, paragraph, table, image) rendered to Markdown and HTML.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from tuneforge.eval import charts
from tuneforge.utils.io import atomic_write_json, atomic_write_text

RESULTS_FILE = "results.json"
FORMAT_VERSION = 1


def headline(result: dict) -> dict[str, float]:
    """The few numbers that summarise a task result (used by the summary table and by compare)."""
    m = result.get("metrics", {})
    kind = result.get("kind")
    keys = {"multiple_choice": ("acc", "acc_norm"), "classification": ("accuracy", "macro_f1", "n_unparseable"),
            "generation": ("bleu", "rouge1", "rouge2", "rougeL", "exact_match"),
            "generative_exact_match": ("exact_match", "n_unparseable")}.get(kind, ())
    return {k: m[k] for k in keys if k in m}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1.5 else f"{v:.2f}"
    return str(v)


def _pct(v: float | None, se: float | None = None) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f} ± {100 * se:.1f}" if se is not None else f"{100 * v:.1f}"


def _summary_rows(tasks: dict) -> list[list[str]]:
    rows = []
    for name, r in tasks.items():
        m = r["metrics"]
        main = ", ".join(f"{k} {_fmt(v)}" for k, v in headline(r).items())
        rows.append([name, r["kind"], str(m.get("n", "")), main, _fmt(r.get("timing", {}).get("sec_per_100"))])
    return rows


def _mc_blocks(name: str, r: dict, out: Path) -> list:
    m = r["metrics"]
    blocks: list = [("p", f"accuracy {_pct(m['acc'], m['acc_stderr'])} %"
                     + (f", length-normalised {_pct(m['acc_norm'], m['acc_norm_stderr'])} %" if "acc_norm" in m else "")
                     + f" (chance {100 * m.get('chance', 0):.1f} %, {m['n']} items, {r['settings'].get('shots', 0)}-"
                       f"shot, style {r['settings'].get('style')})")]
    cols = [c for c in ("acc", "acc_norm") if c in m]
    if r.get("per_category"):
        blocks.append(("table", ["category", "n"] + cols,
                       [[c, str(v["n"])] + [_pct(v.get(k)) for k in cols] for c, v in r["per_category"].items()]))
    if len(r.get("per_subject", {})) > 1:
        png = charts.subject_bars(r["per_subject"], out / f"{_slug(name)}_subjects.png", f"{name}: per subject",
                                  m.get("chance"))
        if png:
            blocks.append(("img", png.name, f"{name} per subject"))
        blocks.append(("table", ["subject", "category", "n"] + cols,
                       [[s, v.get("category") or "", str(v["n"])] + [_pct(v.get(k)) for k in cols]
                        for s, v in r["per_subject"].items()]))
    return blocks


def _cls_blocks(name: str, r: dict, out: Path) -> list:
    m = r["metrics"]
    blocks: list = [("table", ["accuracy", "macro precision", "macro recall", "macro F1", "unparseable", "n"],
                     [[_pct(m["accuracy"], m["accuracy_stderr"]), _pct(m["macro_precision"]),
                       _pct(m["macro_recall"]), _pct(m["macro_f1"]), str(m["n_unparseable"]), str(m["n"])]])]
    blocks.append(("table", ["label", "precision", "recall", "F1", "support"],
                   [[lab, _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), str(v["support"])]
                    for lab, v in m["per_label"].items()]))
    conf = m["confusion"]
    blocks.append(("table", ["gold \\ predicted"] + conf["cols"],
                   [[g] + [str(x) for x in row] for g, row in zip(conf["rows"], conf["matrix"])]))
    png = charts.confusion_matrix(conf, out / f"{_slug(name)}_confusion.png", f"{name}: confusion matrix")
    if png:
        blocks.append(("img", png.name, f"{name} confusion matrix"))
    wrong = [e for e in r["examples"] if not e.get("correct")][:5]
    if wrong:
        blocks.append(("table", ["wrong example", "reference", "prediction"],
                       [[_tail(e["prompt"], 120), e["reference"], _short(str(e["prediction"]), 80)] for e in wrong]))
    return blocks


def _gen_blocks(name: str, r: dict, out: Path) -> list:
    m = r["metrics"]
    keys = [k for k in ("bleu", "rouge1", "rouge2", "rougeL", "exact_match", "exact_match_stderr", "n_unparseable",
                        "n") if k in m]
    blocks: list = [("table", keys, [[_fmt(m[k]) for k in keys]])]
    if r["kind"] == "generation":
        blocks.append(("p", "BLEU/ROUGE/exact match on a 0-100 scale; Chinese is scored per character, other text "
                            "per word (see docs/eval.md)."))
    return blocks


def _flag_blocks(name: str, flags: dict, out: Path) -> list:
    counts, n = flags["counts"], flags["n"]
    blocks: list = [("h", 3, f"{name}: error flags"),
                     ("table", ["flag", "answers", "share"],
                      [[f, str(c), f"{100 * c / n:.1f} %" if n else "–"] for f, c in counts.items()])]
    png = charts.flag_bars(counts, n, out / f"{_slug(name)}_flags.png", f"{name}: error flags")
    if png:
        blocks.append(("img", png.name, f"{name} flags"))
    for flag, exs in flags.get("worst", {}).items():
        blocks.append(("table", [f"worst '{flag}'", "prediction", "reference", "severity"],
                       [[_tail(e.get("prompt", e.get("id", "")), 80), _short(str(e.get("prediction", "")), 160),
                         _short(str(e.get("reference", "")), 80), _fmt(e["severity"])] for e in exs[:3]]))
    return blocks


def task_blocks(name: str, r: dict, out: Path) -> list:
    blocks: list = [("h", 2, name)]
    if r["kind"] == "multiple_choice":
        blocks += _mc_blocks(name, r, out)
    elif r["kind"] == "classification":
        blocks += _cls_blocks(name, r, out)
    else:
        blocks += _gen_blocks(name, r, out)
    if r.get("flags"):
        blocks += _flag_blocks(name, r["flags"], out)
    return blocks


def build_blocks(results: dict, out: Path) -> list:
    label = results["model"].get("label", "?")
    blocks: list = [("h", 1, f"tuneforge eval — {label}"),
                     ("p", f"created {results.get('created', '')}; settings {json.dumps(results.get('settings', {}))}"),
                     ("table", ["task", "kind", "n", "headline", "sec / 100 items"], _summary_rows(results["tasks"]))]
    for name, r in results["tasks"].items():
        blocks += task_blocks(name, r, out)
    return blocks


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _tail(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else "…" + text[-(n - 1):]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list) -> str:
    lines: list[str] = []
    for b in blocks:
        if b[0] == "h":
            lines += ["#" * b[1] + " " + b[2], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "img":
            lines += [f"![{b[2]}]({b[1]})", ""]
        elif b[0] == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in b[1]) + " |")
            lines.append("|" + "---|" * len(b[1]))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
            lines.append("")
    return "\n".join(lines)


def to_html(blocks: list, title: str) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:13px;text-align:left}th{background:#f3f3f3}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        if b[0] == "h":
            parts.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "img":
            parts.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_blocks(blocks: list, out: Path, stem: str, title: str) -> tuple[Path, Path]:
    md, page = out / f"{stem}.md", out / f"{stem}.html"
    atomic_write_text(md, to_markdown(blocks))
    atomic_write_text(page, to_html(blocks, title))
    return md, page


def write_report(results: dict, out: Path) -> dict[str, Path]:
    """Write results.json, report.md, report.html and charts into `out`; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    results = {"tuneforge_eval": FORMAT_VERSION, **results}
    js = out / RESULTS_FILE
    atomic_write_json(js, results, indent=1)
    md, page = write_blocks(build_blocks(results, out), out, "report", f"tuneforge eval — {results['model']['label']}")
    return {"json": js, "markdown": md, "html": page}


def load_results(path: str | Path) -> dict:
    """Read a results.json (or the folder holding one) written by `write_report`."""
    from tuneforge.utils.errors import DataError

    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("no eval results here", file=str(p)) from None
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg}", file=str(p), line=err.lineno) from None
    if not isinstance(data, dict) or "tasks" not in data or "tuneforge_eval" not in data:
        raise DataError("is not a tuneforge eval results file", file=str(p), field="tasks",
                        hint="pass the results.json written by `tuneforge eval bench/task`")
    return data
