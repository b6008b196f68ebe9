"""What a synthesis did: rows generated, kept and dropped (by reason, with examples), and the dataset doctor's view
of the result (near-duplicates, leakage into a test file, label balance).

Every generated candidate is counted once, under the first check it failed, so generated = kept + sum(dropped).
`write_report` writes `synth.json` and `synth.md` into the report folder and the doctor's own report into its
`doctor/` subfolder; `print_report` shows the counts on the console.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.utils.io import atomic_write_json, atomic_write_text

EXAMPLES_PER_REASON = 3
# Why a candidate was dropped, in the order the checks run (the report lists reasons in this order).
REASONS = {
    "request_failed": "the generator request failed after its retries",
    "empty_instruction": "the generated instruction (or input) was empty",
    "instruction_cut": "the instruction was cut off by the token limit",
    "instruction_too_short": "fewer than 3 words",
    "instruction_too_long": "more than 150 words",
    "needs_media": "asks for an image, file, chart, audio... (the paper's keyword list)",
    "near_copy": "ROUGE-L >= 0.7 against a seed or a kept row",
    "near_test_row": "ROUGE-L >= 0.7 against a row of the test file",
    "empty_answer": "the answer was empty",
    "answer_too_long": "the answer was cut off by the answer token limit",
    "wrong_format": "the answer is not in the seeds' format (e.g. not one of the labels)",
    "not_needed": "the target (or, output-first, the label's share of it) was already reached",
}


@dataclass
class Tally:
    """Running counts of one synthesis."""

    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, text: str, detail: str | None = None) -> None:
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            snippet = " ".join(text.split())[:160]
            shown.append(f"{snippet}  ({detail})" if detail else snippet)


@dataclass
class SynthReport:
    method: str  # "self-instruct" | "templates"
    out: str
    generator: str
    requested: int
    generated: int
    kept: int
    dropped: dict[str, int]
    examples: dict[str, list[str]]
    stopped: str  # why generation stopped: "target reached", "max tries", "interrupted", "expanded"
    seconds: float
    settings: dict = field(default_factory=dict)
    doctor: dict | None = None
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_tally(cls, tally: Tally, **fields) -> SynthReport:
        order = {r: i for i, r in enumerate(REASONS)}
        dropped = dict(sorted(tally.dropped.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
        return cls(generated=tally.generated, kept=tally.kept, dropped=dropped, examples=tally.examples, **fields)

    def as_dict(self) -> dict:
        return asdict(self)


def doctor_summary(out: Path, test: str | None, folder: Path) -> dict:
    """Run the dataset doctor on the written file (leakage against `test`), write its report into `folder`, and
    return its findings and label counts."""
    from tuneforge.data.doctor.check import check_dataset
    from tuneforge.data.doctor.report import write_report
    from tuneforge.data.doctor.result import CheckOptions

    res = check_dataset(str(out), CheckOptions(against=test))
    paths = write_report(res, folder)
    return {"rows": res.dataset["usable_rows"], "fingerprint": res.dataset["fingerprint"],
            "findings": [{"check": f.check, "severity": f.severity, "count": f.count, "summary": f.summary}
                         for f in res.findings],
            "labels": res.stats.get("labels", {}).get("answers"), "report": str(paths["markdown"])}


def _markdown(rep: SynthReport) -> str:
    lines = [f"# Synthetic data: {rep.method}", "", f"- output: `{rep.out}`", f"- generator: {rep.generator}",
             f"- requested {rep.requested}, generated {rep.generated}, kept {rep.kept}, dropped "
             f"{sum(rep.dropped.values())} ({rep.stopped}; {rep.seconds:.0f} s)", "", "| dropped because | rows |",
             "|---|---|"]
    lines += [f"| {r} ({REASONS.get(r, '')}) | {n} |" for r, n in rep.dropped.items()]
    for reason, texts in rep.examples.items():
        lines += ["", f"## {reason}: examples", *[f"- {t}" for t in texts]]
    if rep.doctor:
        lines += ["", "## Dataset doctor", ""]
        found = [f"- {f['severity']} {f['check']}: {f['summary']}" for f in rep.doctor["findings"]]
        lines += found or ["- no problems"]
        if rep.doctor.get("labels"):
            lines.append("- labels: " + ", ".join(f"{k!r}: {v}" for k, v in rep.doctor["labels"].items()))
    lines += ["", "## Settings", "", *[f"- {k}: {v}" for k, v in rep.settings.items()]]
    return "\n".join(lines) + "\n"


def write_report(rep: SynthReport, folder: Path) -> dict[str, str]:
    """`synth.json` and `synth.md` in `folder` (the doctor's report is already in `folder/doctor`)."""
    files = {"json": str(folder / "synth.json"), "markdown": str(folder / "synth.md")}
    rep.files = {**files, **({"doctor": rep.doctor["report"]} if rep.doctor else {})}
    atomic_write_json(folder / "synth.json", rep.as_dict())
    atomic_write_text(folder / "synth.md", _markdown(rep))
    return rep.files


def write_result(rows: list[dict], tally: Tally, *, out: Path, folder: Path, test: str | None = None,
                 **fields) -> SynthReport:
    """Write the rows (when there are any), run the doctor on them and write the report; the report."""
    from tuneforge.synth.rows import write_rows

    rep = SynthReport.from_tally(tally, out=str(out), **fields)
    folder.mkdir(parents=True, exist_ok=False)
    if rows:
        write_rows(rows, out)
        rep.doctor = doctor_summary(out, test, folder / "doctor")
    write_report(rep, folder)
    return rep


def print_report(rep: SynthReport) -> None:
    from rich.table import Table

    from tuneforge.utils.console import console

    console.print(f"[bold]{rep.method}[/]: generated {rep.generated}, kept {rep.kept} of {rep.requested} requested, "
                  f"dropped {sum(rep.dropped.values())} ({rep.stopped}, {rep.seconds:.0f} s) → {rep.out}")
    if rep.dropped:
        table = Table("dropped because", "rows", "example", show_header=True, header_style="bold")
        for reason, n in rep.dropped.items():
            table.add_row(reason, str(n), (rep.examples.get(reason) or [""])[0][:90])
        console.print(table)
    if rep.doctor:
        for f in rep.doctor["findings"]:
            console.print(f"doctor {f['severity']}: {f['check']} — {f['summary']}", markup=False)
        if rep.doctor.get("labels"):
            console.print("labels: " + ", ".join(f"{k!r}: {v}" for k, v in rep.doctor["labels"].items()),
                          markup=False)
    if rep.files:
        console.print(f"report: {rep.files.get('markdown')}  (doctor: {rep.files.get('doctor', '-')})", markup=False)
