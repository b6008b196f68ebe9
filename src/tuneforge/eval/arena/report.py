"""The arena's report: OUT/arena.json (everything), OUT/arena.md and OUT/arena.html (the same content; the HTML
carries its chart inline, so the one file can be mailed), OUT/arena.png (ratings with their intervals), and the
leaderboard printed as a table.

Built as blocks (heading, paragraph, table, image) rendered by `tuneforge.eval.report`, like every eval report.
"""

from __future__ import annotations

import base64
from pathlib import Path

from tuneforge.eval.report import to_html, to_markdown
from tuneforge.utils.io import atomic_write_json, atomic_write_text
from tuneforge.utils.plots import figure

EXAMPLES_SHOWN = 8
CELL = 300  # characters of an answer shown in a table cell


def _short(text: str | None, n: int = CELL) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _ci(ci) -> str:
    return f"{ci[0]:.0f}–{ci[1]:.0f}" if ci else "–"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def ratings_chart(board: list[dict], path: Path) -> Path | None:
    """Bradley–Terry and Elo per model with their bootstrap intervals, best on top."""
    if not board:
        return None
    rows = list(reversed(board))
    with figure(path, figsize=(7, max(2.4, 0.55 * len(rows) + 1.2))) as (_fig, ax):
        ys = range(len(rows))
        for offset, key, color, label in ((0.14, "bt", "#4c72b0", "Bradley–Terry"), (-0.14, "elo", "#dd8452", "Elo")):
            at = [y + offset for y in ys]
            if all(r[f"{key}_ci"] for r in rows):  # drawn as lines: a percentile interval may not hold its point
                low, high = [r[f"{key}_ci"][0] for r in rows], [r[f"{key}_ci"][1] for r in rows]
                ax.hlines(at, low, high, color=color, linewidth=1.5)
                ax.plot(low + high, at + at, "|", color=color, markersize=8)
            ax.plot([r[key] for r in rows], at, "o", color=color, label=label)
        ax.axvline(1000, color="#8c8c8c", linestyle="--", linewidth=1)
        ax.set_yticks(list(ys), [r["name"] for r in rows], fontsize=9)
        ax.set_xlabel("rating (mean 1000; bars: 95 % bootstrap interval over prompts)")
        ax.set_title("arena ratings", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    return path


def _leaderboard_rows(board: list[dict]) -> list[list[str]]:
    return [[str(r["rank"]), r["name"], f"{r['bt']:.0f}", _ci(r["bt_ci"]), f"{r['elo']:.0f}", _ci(r["elo_ci"]),
             _pct(r["win_rate"]), f"{r['wins']} / {r['losses']} / {r['ties']}"] for r in board]


def _matrix_rows(report: dict) -> list[list[str]]:
    names = [m["name"] for m in report["models"]]
    matrix = report["ratings"]["win_rate_matrix"]
    return [[names[i]] + ["–" if v is None else f"{100 * v:.0f} %" for v in row] for i, row in enumerate(matrix)]


def _judge_paragraphs(report: dict) -> list:
    j, agree = report["judge"], report["agreement"]
    text = (f"judge: {j['describe']}; {j['verdicts']} verdicts used of {j['comparisons']} comparisons "
            f"({j['identical']} identical answer pairs counted as ties without asking; unparsed {j['unparsed']}, "
            f"failed {j['failed']}, skipped {j['skipped']}).")
    if agree["pairs_both_orders"]:
        text += (f" Self-agreement across the two orders: {_pct(agree['agreement'])} of "
                 f"{agree['pairs_both_orders']} pairs ({agree['flipped']} flipped to the other model, "
                 f"{agree['half_flipped']} changed between a win and a tie); the answer shown first won "
                 f"{_pct(agree['first_position_share'])} of decisive verdicts.")
    return [("p", text)]


def _example_blocks(report: dict) -> list:
    blocks: list = []
    flips, upsets = report["examples"]["flips"], report["examples"]["upsets"]
    if flips:
        blocks += [("h", 2, f"The judge changed its mind when the order changed ({len(flips)})"),
                   ("table", ["prompt", "model A", "answer A", "model B", "answer B", "A first", "B first"],
                    [[_short(e["prompt"], 160), e["a"], _short(e["answer_a"]), e["b"], _short(e["answer_b"]),
                      e["verdict_a_first"], e["verdict_b_first"]] for e in flips[:EXAMPLES_SHOWN]])]
    if upsets:
        blocks += [("h", 2, f"Upsets: a lower-rated model won ({len(upsets)})"),
                   ("table", ["prompt", "winner", "its answer", "loser", "its answer", "rating gap"],
                    [[_short(e["prompt"], 160), e["winner"], _short(e["answer_winner"]), e["loser"],
                      _short(e["answer_loser"]), f"{e['gap']:.0f}"] for e in upsets[:EXAMPLES_SHOWN]])]
    return blocks


def build_blocks(report: dict, image: str | None) -> list:
    names = [m["name"] for m in report["models"]]
    s = report["settings"]
    blocks: list = [("h", 1, "tuneforge eval arena"),
                    ("p", f"{report['n_prompts']} prompts from {report['prompts']}; {len(names)} models; each pair "
                          f"judged on every prompt{' in both orders' if report['both_orders'] else ''}; "
                          f"max_new_tokens {s['max_new_tokens']}, temperature {s['temperature']}; "
                          f"{report['ratings']['bootstrap_rounds']} bootstrap rounds over prompts, Elo K "
                          f"{report['ratings']['elo_k']}, seed {s['seed']}."),
                    ("h", 2, "Leaderboard"),
                    ("table", ["rank", "model", "Bradley–Terry", "95 % interval", "Elo", "95 % interval",
                               "win rate", "wins / losses / ties"], _leaderboard_rows(report["leaderboard"]))]
    if image:
        blocks.append(("img", image, "ratings with 95 % intervals"))
    blocks += _judge_paragraphs(report)
    blocks += [("h", 2, "Win rates (row against column; ties count half)"),
               ("table", ["model"] + names, _matrix_rows(report)),
               ("h", 2, "Models"),
               ("table", ["model", "spec", "answers generated now", "cached", "mean answer length (chars)"],
                [[m["name"], m["spec"], str(m["generated"]), str(m["cached"]), f"{m['mean_length']:.0f}"]
                 for m in report["models"]])]
    return blocks + _example_blocks(report)


def write_report(report: dict, out: Path) -> dict[str, Path]:
    """Write arena.json, arena.png, arena.md and arena.html into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": atomic_write_json(out / "arena.json", report, indent=1)}
    png = ratings_chart(report["leaderboard"], out / "arena.png")
    md = atomic_write_text(out / "arena.md", to_markdown(build_blocks(report, png.name if png else None)))
    inline = f"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode('ascii')}" if png else None
    page = atomic_write_text(out / "arena.html", to_html(build_blocks(report, inline), "tuneforge eval arena"))
    paths.update(markdown=md, html=page)
    if png:
        paths["chart"] = png
    return paths


def print_leaderboard(report: dict) -> None:
    """The leaderboard as a rich table on the console (stderr)."""
    from rich.markup import escape
    from rich.table import Table

    from tuneforge.utils.console import console

    agree = report["agreement"]["agreement"]
    table = Table(title=f"arena: {report['n_prompts']} prompts, judge {escape(report['judge']['describe'])}"
                        + (f", self-agreement {_pct(agree)}" if agree is not None else ""))
    for col in ("rank", "model", "BT", "95 % CI", "Elo", "95 % CI", "win rate", "W / L / T"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in _leaderboard_rows(report["leaderboard"]):
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
