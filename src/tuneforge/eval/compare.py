"""Before / after: compare two eval results (or evaluate two models on the same plan first) side by side.

Per task: every headline metric for A and B with the difference; per-example wins / losses / ties, paired by
example id (an example is a *win* when B is right and A wrong; for free-form generation, when B's ROUGE-L is higher);
a two-sided sign test p-value on wins vs losses; and the examples that got worse.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tuneforge.eval import charts
from tuneforge.eval.metrics import sign_test_p
from tuneforge.eval.report import RESULTS_FILE, headline, load_results, write_blocks
from tuneforge.utils.io import atomic_write_json

WORSE_SHOWN = 10
LOWER_IS_BETTER = {"n_unparseable"}


def is_results_path(arg: str) -> bool:
    p = Path(arg)
    return (p.is_file() and p.suffix == ".json") or (p.is_dir() and (p / RESULTS_FILE).is_file())


def _score(kind: str, ex: dict) -> float:
    if kind == "generation":
        return float(ex.get("scores", {}).get("rougeL", 0.0))
    return 1.0 if ex.get("correct") else 0.0


def _describe(ex: dict) -> str:
    return str(ex.get("question") or ex.get("prompt") or ex.get("id"))


def _answer(ex: dict) -> str:
    return str(ex.get("pred_text") or ex.get("prediction") or "")


def compare_task(name: str, ra: dict, rb: dict) -> dict:
    """Metric deltas, paired wins/losses/ties and the examples that got worse for one task."""
    ha, hb = headline(ra), headline(rb)
    metrics = {k: {"a": ha[k], "b": hb[k], "delta": hb[k] - ha[k]} for k in ha if k in hb}
    kind = rb.get("kind")
    by_id = {e["id"]: e for e in ra.get("examples", [])}
    wins = losses = ties = 0
    worse, better = [], []
    for eb in rb.get("examples", []):
        ea = by_id.get(eb["id"])
        if ea is None:
            continue
        sa, sb = _score(kind, ea), _score(kind, eb)
        if sb > sa + 1e-9:
            wins += 1
            better.append(_changed(eb, ea, sb - sa, "gain"))
        elif sa > sb + 1e-9:
            losses += 1
            worse.append(_changed(eb, ea, sa - sb, "drop"))
        else:
            ties += 1
    worse.sort(key=lambda w: -w["drop"])
    better.sort(key=lambda w: -w["gain"])
    return {"kind": kind, "metrics": metrics, "wins": wins, "losses": losses, "ties": ties,
            "paired": wins + losses + ties, "sign_test_p": sign_test_p(wins, losses), "worse": worse[:50],
            "better": better[:50]}


def _changed(eb: dict, ea: dict, amount: float, key: str) -> dict:
    """One example whose score changed between A and B (`key`: "drop" for worse, "gain" for better)."""
    return {"id": eb["id"], key: amount, "input": _describe(eb)[:300],
            "reference": str(eb.get("gold_text") or eb.get("reference") or ""),
            "a": _answer(ea)[:300], "b": _answer(eb)[:300]}


def compare_results(a: dict, b: dict) -> dict:
    """Compare every task present in both results."""
    common = [t for t in b["tasks"] if t in a["tasks"]]
    return {"a": a["model"]["label"], "b": b["model"]["label"],
            "tasks": {t: compare_task(t, a["tasks"][t], b["tasks"][t]) for t in common},
            "only_a": [t for t in a["tasks"] if t not in b["tasks"]],
            "only_b": [t for t in b["tasks"] if t not in a["tasks"]]}


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1.5 else f"{v:.2f}"


def compare_blocks(cmp: dict, out: Path) -> list:
    blocks: list = [("h", 1, "tuneforge eval compare"), ("p", f"A = {cmp['a']}"), ("p", f"B = {cmp['b']}")]
    rows = []
    for t, c in cmp["tasks"].items():
        for k, v in c["metrics"].items():
            rows.append([t, k, _fmt(v["a"]), _fmt(v["b"]), f"{v['delta']:+.4f}"])
    blocks.append(("table", ["task", "metric", "A", "B", "B − A"], rows))
    blocks.append(("table", ["task", "wins (B better)", "losses (B worse)", "ties", "sign test p"],
                   [[t, str(c["wins"]), str(c["losses"]), str(c["ties"]), f"{c['sign_test_p']:.3g}"]
                    for t, c in cmp["tasks"].items()]))
    firsts = {t: next(iter(c["metrics"].items()), None) for t, c in cmp["tasks"].items()}
    firsts = {t: kv for t, kv in firsts.items() if kv is not None}
    png = charts.compare_bars([f"{t}\n{kv[0]}" for t, kv in firsts.items()], [kv[1]["a"] for kv in firsts.values()],
                              [kv[1]["b"] for kv in firsts.values()], ("A", "B"), out / "compare.png",
                              "headline metric per task")
    if png:
        blocks.append(("img", png.name, "A vs B"))
    for t, c in cmp["tasks"].items():
        if c["worse"]:
            blocks.append(("h", 3, f"{t}: examples that got worse ({c['losses']})"))
            blocks.append(("table", ["input", "reference", "A", "B"],
                           [[w["input"][-150:], w["reference"][:80], w["a"][:120], w["b"][:120]]
                            for w in c["worse"][:WORSE_SHOWN]]))
    if cmp["only_a"] or cmp["only_b"]:
        blocks.append(("p", f"not compared (only in one side): A {cmp['only_a']}, B {cmp['only_b']}"))
    return blocks


def write_compare(cmp: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js = atomic_write_json(out / "compare.json", cmp, indent=1)
    md, page = write_blocks(compare_blocks(cmp, out), out, "compare", "tuneforge eval compare")
    return {"json": js, "markdown": md, "html": page}


def print_compare(cmp: dict) -> None:
    """Side-by-side table on the console (stdout stays free for piping)."""
    from rich.table import Table

    from tuneforge.utils.console import console

    table = Table(title=f"A = {cmp['a']}   vs   B = {cmp['b']}")
    for col in ("task", "metric", "A", "B", "B − A", "W/L/T", "p"):
        table.add_column(col, justify="right" if col not in ("task", "metric") else "left")
    for t, c in cmp["tasks"].items():
        for i, (k, v) in enumerate(c["metrics"].items()):
            wlt = f"{c['wins']}/{c['losses']}/{c['ties']}" if i == 0 else ""
            p = f"{c['sign_test_p']:.3g}" if i == 0 else ""
            better = -v["delta"] if k in LOWER_IS_BETTER else v["delta"]
            color = "green" if better > 0 else "red" if better < 0 else ""
            delta = f"[{color}]{v['delta']:+.4f}[/{color}]" if color else f"{v['delta']:+.4f}"
            table.add_row(t if i == 0 else "", k, _fmt(v["a"]), _fmt(v["b"]), delta, wlt, p)
    console.print(table)


def default_compare_output() -> Path:
    from tuneforge.utils.paths import tuneforge_home

    return tuneforge_home() / "eval" / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def load_side(arg: str) -> dict:
    """A saved results.json (or its folder)."""
    return load_results(arg)
