"""`tuneforge data ...`: look at datasets before training on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tuneforge.utils.console import console
from tuneforge.utils.paths import tuneforge_home

app = typer.Typer(help="Inspect datasets: `preview` shows what the model trains on, `check` finds problems.",
                  no_args_is_help=True)
out = Console(highlight=False)
_STYLE = {"error": "red", "warning": "yellow", "info": "dim"}


@app.callback()
def _group() -> None:
    """Inspect datasets before training on them."""


@app.command("check")
def check_cmd(
    target: str = typer.Argument(..., help="A data file, a folder of them, or a registered dataset name."),
    against: Optional[str] = typer.Option(None, help="Test set to check train/test leakage against."),
    model: Optional[str] = typer.Option(None, help="Count tokens with this model's tokenizer and chat template."),
    template: str = typer.Option("auto", help="Chat template for token counts (auto = the model's own)."),
    cutoff: Optional[int] = typer.Option(None, help="Count rows longer than this many tokens (needs --model)."),
    fix: Optional[Path] = typer.Option(None, help="Write a cleaned copy here (.jsonl/.json/.csv; must not exist)."),
    fix_near: bool = typer.Option(False, "--fix-near-dups", help="With --fix: also drop near-duplicates."),
    fix_leaked: bool = typer.Option(False, "--fix-leaked", help="With --fix: also drop rows leaking into --against."),
    report: Optional[Path] = typer.Option(None, help="Report folder (default: $TUNEFORGE_HOME/reports/data/...)."),
    near_threshold: float = typer.Option(0.8, help="Jaccard similarity (character n-grams) for near-duplicates."),
    dataset_info: Optional[str] = typer.Option(None, help="dataset_info.json for registered names."),
    fmt: str = typer.Option("auto", "--format", help="Data format: auto, alpaca, sharegpt, openai, text, ..."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON summary to stdout."),
    strict: bool = typer.Option(False, help="Exit 1 when any error-level finding is present."),
) -> None:
    """Dataset doctor: find problems in a dataset before training on it.

    Schema errors, empty fields, exact and near duplicates, lengths and truncation, label balance, diversity, odd
    characters, script mix, and train/test leakage with --against. Writes report.md, report.html, summary.json and
    charts; --fix writes a cleaned copy and never touches the input.
    """
    from tuneforge.data.doctor.check import check_dataset
    from tuneforge.data.doctor.report import write_report
    from tuneforge.data.doctor.result import CheckOptions

    opts = CheckOptions(against=against, model=model, template=template, cutoff=cutoff,
                        near_threshold=near_threshold, dataset_info=dataset_info, format=fmt)
    with console.status(f"checking {target}"):
        res = check_dataset(target, opts)
    folder = report or tuneforge_home() / "reports" / "data" / f"{res.dataset['name']}-{res.dataset['fingerprint'][:8]}"
    paths = write_report(res, folder)
    fixed = None
    if fix is not None:
        from tuneforge.data.doctor.fix import write_fixed

        fixed = write_fixed(res, fix, near=fix_near, leaked=fix_leaked)
    if as_json:
        payload = res.summary() | {"report": {k: str(v) for k, v in paths.items()}}
        if fixed:
            payload["fix"] = {"out": str(fixed.out), "log": str(fixed.log), "kept": fixed.kept,
                              "dropped": fixed.dropped, "edited_rows": fixed.edited_rows}
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    else:
        _print(res, paths, fixed)
    if strict and any(f.severity == "error" and f.count for f in res.findings):
        raise typer.Exit(1)


def _print(res, paths, fixed) -> None:
    d = res.dataset
    console.print(f"[bold]{d['name']}[/] ({d['format'] or '?'}): {d['rows']} rows, {d['usable_rows']} usable, "
                  f"fingerprint {d['fingerprint'][:12]}")
    t = Table(show_header=True, header_style="bold")
    for col in ("", "check", "rows", "summary"):
        t.add_column(col, overflow="fold")
    for f in res.findings:
        t.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", f.check, str(f.count), f.summary)
    if res.findings:
        out.print(t)
    else:
        console.print("[green]no problems found[/]")
    console.print(f"report: {paths['markdown']}  (also {paths['html'].name}, {paths['json'].name}, charts)")
    if fixed:
        dropped = ", ".join(f"{k} {v}" for k, v in fixed.dropped.items()) or "none"
        console.print(f"cleaned copy: {fixed.out} ({fixed.kept} rows kept; dropped: {dropped}; "
                      f"{fixed.edited_rows} rows edited); change log: {fixed.log}")


@app.command("preview")
def preview_cmd(
    config: str = typer.Argument(..., help="The run's YAML config (the same file `tuneforge train` takes)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="dotted overrides, e.g. data.mask=last"),
    n: int = typer.Option(3, "-n", help="How many rendered samples to show."),
    as_json: bool = typer.Option(False, "--json", help="Print samples and statistics as JSON."),
) -> None:
    """Render samples exactly as training will (template, loss mask, truncation, EOS); trained tokens highlighted.

    Also prints token-length statistics and how many rows the cutoff truncates. Loads only the tokenizer.
    """
    from rich.text import Text

    from tuneforge.config.load import load_config
    from tuneforge.data.preview import marked_text, segments
    from tuneforge.stages.preview import preview

    cfg = load_config(config, list(overrides or []))
    samples, stats, tok = preview(cfg, n)
    if as_json:
        print(json.dumps({"samples": [{"source": r.source, "marked": marked_text(r, tok),
                                       "answer_cut": r.answer_cut} for r in samples],
                          "stats": stats}, ensure_ascii=False, indent=2))
        return
    for r in samples:
        text = Text()
        for seg in segments(r, tok):
            text.append(seg.text, style="bold green" if seg.trained else "dim")
        out.rule(f"{r.source}  ({len(r.input_ids)} tokens{_sample_notes(r)})")
        out.print(text)
    out.rule("token lengths")
    table = Table("", "n", "min", "mean", "p50", "p90", "p99", "max", f">= cutoff {cfg.data.cutoff_len}")
    for name in ("tokens", "trained_tokens"):
        s = stats[name]
        table.add_row(name, *[str(s.get(k, "")) for k in ("n", "min", "mean", "p50", "p90", "p99", "max")],
                      str(s.get("at_cutoff", "")) if name == "tokens" else "")
    out.print(table)
    out.print(_render_counts(stats["render"], stats["skipped_rows"]) + "  [green]green = trained tokens[/green]")


def _sample_notes(r) -> str:
    notes = ["truncated"] * r.truncated + ["answer cut"] * r.answer_cut
    return "".join(f", {note}" for note in notes)


def _render_counts(rs: dict, skipped_rows: int) -> str:
    """One line of `RenderStats.as_dict()` counts (rows dropped for a too-long answer only when there are some)."""
    parts = [f"rows {rs['rows']}", f"kept {rs['kept']}", f"truncated {rs['truncated']}",
             f"answer cut (answer alone over the cutoff) {rs['answer_cut']}"]
    if rs["dropped_long_answer"]:
        parts.append(f"dropped (answer too long) {rs['dropped_long_answer']}")
    parts += [f"dropped (no answer left) {rs['dropped_no_target']}", f"skipped bad rows {skipped_rows}"]
    return ", ".join(parts)


@app.command("from-feedback")
def from_feedback_cmd(
    model: str = typer.Option(..., "--model", help="The served model id whose logged completions to export."),
    out: Path = typer.Option(..., "--out", help="The JSONL file to write (must not exist)."),
    kind: str = typer.Option("sft", "--kind", help="sft, dpo, kto, or all (three files: OUT's stem + "
                                                   ".sft.jsonl / .dpo.jsonl / .kto.jsonl)."),
    project: Optional[str] = typer.Option(None, "--project", help="Only this project's completions (default: all)."),
    registry: Optional[str] = typer.Option(None, "--registry", help="Registry URL (default: $TUNEFORGE_REGISTRY_URL, "
                                                                    "else $TUNEFORGE_HOME/registry.db)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only completions logged from this ISO date/time on "
                                                              "(local time unless it names a zone)."),
) -> None:
    """Training data from `tuneforge serve --log-requests` and POST /v1/feedback: corrections and upvoted answers
    as SFT rows, corrections over their answers (and upvoted over downvoted choices) as DPO pairs, thumbs as KTO
    rows. Every row names the completion it came from in `source`; the files load as any dataset (path: OUT)."""
    import datetime as dt

    from tuneforge.data.from_feedback import collect, output_paths, refuse_existing, write_rows
    from tuneforge.registry.store import open_store
    from tuneforge.utils.errors import DataError

    paths = output_paths(out, kind)
    refuse_existing(paths)
    try:
        start = dt.datetime.fromisoformat(since).astimezone() if since else None
    except ValueError:
        raise DataError(f"--since {since!r} is not an ISO date or date/time", field="since",
                        hint="e.g. 2025-01-31 or 2025-01-31T14:00") from None
    store = open_store(registry)
    result = collect(store, model, project, start)
    written = write_rows(result, paths)
    for k, path in paths.items():
        rows = len(result.rows[k])
        console.print(f"{k}: {rows} row(s) → {path}" if k in written else f"{k}: no rows (nothing written)",
                      markup=False)
    console.print(f"{result.logged} logged completion(s) of {model}: {result.used} gave rows, {result.unused} had "
                  f"no usable feedback", markup=False)
    for why in result.dropped[:5]:
        console.print(f"left out {why}", markup=False, highlight=False)
    if len(result.dropped) > 5:
        console.print(f"... and {len(result.dropped) - 5} more rows left out")
    if not written:
        raise DataError(f"no {'' if kind == 'all' else kind + ' '}rows to write for model {model!r} in "
                        f"{store.display_url}",
                        hint="feedback comes from POST /v1/feedback on completions a server logged with "
                             "--log-requests; check --model (the id clients called) and --project")


# --- `tuneforge data synth`: synthetic rows (tuneforge.synth) -----------------------------------------------------

synth_app = typer.Typer(help="Synthetic rows when real data is short: `self-instruct` from seed examples and a "
                             "generator model, `templates` from prompt templates with slots. See docs/synth.md.",
                        no_args_is_help=True)
app.add_typer(synth_app, name="synth")
_GEN_MODEL = typer.Option(None, "--model", help="Local generator model (alias, folder, .gguf, hub id).")
_GEN_ENDPOINT = typer.Option(None, "--endpoint", help="OpenAI-compatible server instead, e.g. http://host:8000/v1.")
_GEN_NAME = typer.Option(None, "--model-name", help="With --endpoint: the model name the server expects.")
_GEN_KEY = typer.Option(None, "--api-key-env", help="With --endpoint: environment variable holding the API key.")
_GEN_TEMPLATE = typer.Option("auto", "--template", help="Chat template of a local generator (auto = its own).")
_GEN_DEVICE = typer.Option("auto", "--device", help="Device of a local generator: auto, cpu, cuda, mps.")
_SYNTH_REPORT = typer.Option(None, "--report", help="Report folder (default: OUT's name + .report; must not exist).")


def _synth_done(rep, as_json: bool) -> None:
    from tuneforge.synth.report import print_report
    from tuneforge.utils.errors import DataError

    if as_json:
        sys.stdout.write(json.dumps(rep.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        print_report(rep)
    if not rep.kept:
        top = max(rep.dropped, key=rep.dropped.get) if rep.dropped else "none generated"
        raise DataError(f"no synthetic rows were kept (most were dropped as {top}); nothing written",
                        hint=f"see {rep.files.get('markdown')} for examples of each reason")


@synth_app.command("self-instruct")
def synth_self_instruct_cmd(
    seed: str = typer.Option(..., "--seed", help="Seed examples: a file or folder in any data format."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (must not exist)."),
    n: int = typer.Option(100, "--n", min=1, help="Rows to keep."),
    model: Optional[str] = _GEN_MODEL, endpoint: Optional[str] = _GEN_ENDPOINT,
    model_name: Optional[str] = _GEN_NAME, api_key_env: Optional[str] = _GEN_KEY,
    template: str = _GEN_TEMPLATE, device: str = _GEN_DEVICE,
    test: Optional[str] = typer.Option(None, "--test", help="Test set: drop near-copies of its prompts; the doctor "
                                                            "checks leakage against it."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Sampling temperature of instructions."),
    answer_temperature: float = typer.Option(0.0, "--answer-temperature", min=0.0, help="Of answers (0: greedy)."),
    seed_int: int = typer.Option(0, "--seed-int", help="Random seed (examples shown, sampling)."),
    shots: int = typer.Option(6, "--shots", min=0, help="Seed examples shown per instruction request."),
    max_instruction_tokens: int = typer.Option(128, "--max-instruction-tokens", min=1),
    max_answer_tokens: int = typer.Option(256, "--max-answer-tokens", min=1,
                                          help="Longer answers are dropped as over-long."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels (default: detected)."),
    output_first: Optional[bool] = typer.Option(None, "--output-first/--input-first",
                                                help="Label first, then an input for it (default for labelled seeds "
                                                     "under one task), or input first, then the generator's answer."),
    max_tries: Optional[int] = typer.Option(None, "--max-tries", min=1, help="Candidates at most (default 5n+20)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Generation batch (local) or concurrency."),
    fmt: str = typer.Option("alpaca", "--format", help="Output rows: alpaca or openai (messages)."),
    seed_format: str = typer.Option("auto", "--seed-format", help="Format of the seed file (auto-detected)."),
    report: Optional[Path] = _SYNTH_REPORT,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON to stdout."),
) -> None:
    """Self-instruct: new instructions (or new inputs of the seeds' task), then answers, from a generator model.

    Drops near-copies (ROUGE-L >= 0.7 against seeds and kept rows), empty, cut-off, over-long and wrong-format
    answers, runs the dataset doctor on the result and reports what was kept and dropped, and why."""
    from tuneforge.synth.self_instruct import SelfInstructOptions, synthesize

    opts = SelfInstructOptions(n=n, shots=shots, temperature=temperature, answer_temperature=answer_temperature,
                               seed=seed_int, max_instruction_tokens=max_instruction_tokens,
                               max_answer_tokens=max_answer_tokens, round_size=max(16, batch_size),
                               max_tries=max_tries, output_first=output_first, format=fmt)
    gen = dict(model=model, endpoint=endpoint, model_name=model_name, api_key_env=api_key_env, template=template,
               device=device, batch_size=batch_size, concurrency=batch_size)
    label_list = tuple(x.strip() for x in labels.split(",") if x.strip()) if labels else None
    rep = synthesize(seed, out, gen, opts, seed_format=seed_format, labels=label_list, test=test, report_dir=report)
    _synth_done(rep, as_json)


@synth_app.command("templates")
def synth_templates_cmd(
    spec: Path = typer.Option(..., "--spec", help="YAML of templates with {slots} and slot values."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (must not exist)."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="Write N rows drawn at random (default: "
                                                                        "the whole cross product)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of --sample and of sampled answers."),
    model: Optional[str] = _GEN_MODEL, endpoint: Optional[str] = _GEN_ENDPOINT,
    model_name: Optional[str] = _GEN_NAME, api_key_env: Optional[str] = _GEN_KEY,
    template: str = _GEN_TEMPLATE, device: str = _GEN_DEVICE,
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="Of generated answers (0: greedy)."),
    max_answer_tokens: int = typer.Option(256, "--max-answer-tokens", min=1),
    test: Optional[str] = typer.Option(None, "--test", help="Test set the doctor checks leakage against."),
    fmt: str = typer.Option("alpaca", "--format", help="Output rows: alpaca or openai (messages)."),
    report: Optional[Path] = _SYNTH_REPORT,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON to stdout."),
) -> None:
    """Template expansion: every combination of slot values (or a seeded sample) as rows; answers from the
    template's `answer:` or, where it has none, from the generator model."""
    from tuneforge.synth.templates import synthesize

    gen = dict(model=model, endpoint=endpoint, model_name=model_name, api_key_env=api_key_env, template=template,
               device=device)
    rep = synthesize(str(spec), out, gen, sample=sample, seed=seed, fmt=fmt, max_answer_tokens=max_answer_tokens,
                     temperature=temperature, report_dir=report, test=test)
    _synth_done(rep, as_json)


def _register_cache_commands() -> None:
    from tuneforge.cli import data_cache_cmd

    data_cache_cmd.register(app)


_register_cache_commands()
