"""`tuneforge eval ...`: benchmarks, task metrics with error analysis, and before/after comparison."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Evaluate models: `bench` (MMLU, ARC, ...), `task` (your data), `rm` (a reward model on pairs), "
                       "`compare` (before/after), `arena` (pairwise judging, Elo / Bradley–Terry).",
                  no_args_is_help=True)

_MODEL_HELP = "Model: alias, folder, .gguf or hub id; `MODEL::ADAPTER` evaluates a LoRA adapter on top."

# Options shared by the commands below (one definition each).
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=_MODEL_HELP)]
AdapterOpt = Annotated[Optional[str], typer.Option(help="PEFT adapter folder (e.g. runs/NAME/adapter).")]
LimitOpt = Annotated[Optional[int], typer.Option(help="Evaluate a fixed random sample of N items per task "
                                                      "(the same sample for every model with the same seed).")]
TemplateOpt = Annotated[str, typer.Option(help="Chat template: auto (the model's own) or a named one.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Items per forward pass.")]
MaxNewTokensOpt = Annotated[int, typer.Option(help="Generation length for generated answers (gsm8k, generation "
                                                   "tasks; classification uses at most 32).")]
DtypeOpt = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the --limit sample (keep it equal across compared models).")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Report folder (default: next to the run).")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar with ETA.")]


def _split(text: Optional[str]) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _common(shots, chat, template, batch_size, max_new_tokens, dtype, device, progress) -> dict:
    return dict(shots=shots, chat=chat, template=template, batch_size=batch_size, max_new_tokens=max_new_tokens,
                dtype=dtype, device=device, progress=progress)


@app.callback()
def _group() -> None:
    """Evaluate models on benchmarks and on your own task data."""


@app.command("bench")
def bench_cmd(
    model: ModelOpt,
    adapter: AdapterOpt = None,
    tasks: str = typer.Option("arc_easy", help="Comma list: mmlu,cmmlu,ceval,arc_easy,arc_challenge,hellaswag,"
                                               "truthfulqa_mc1,gsm8k or paths to benchmark files."),
    shots: int = typer.Option(0, help="Few-shot examples from the dev split (0 or 5 are usual)."),
    limit: LimitOpt = None,
    chat: bool = typer.Option(False, help="Score multiple choice through the chat template (default: plain text)."),
    template: TemplateOpt = "auto",
    source: str = typer.Option("normalized", help="Read built-in benchmarks from 'normalized' jsonl or 'original'."),
    style: Optional[str] = typer.Option(None, help="Override the prompt style: letters, cloze, continuation."),
    batch_size: BatchSizeOpt = 8,
    max_new_tokens: MaxNewTokensOpt = 256,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    output: OutputOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Benchmarks: multiple choice by log-likelihood (acc, acc_norm, per subject/category), GSM8K by generation."""
    from tuneforge.eval.runner import build_plan, parse_model_spec, run

    plan = build_plan(_split(tasks), [], limit=limit, source=source, style=style, seed=seed,
                      **_common(shots, chat, template, batch_size, max_new_tokens, dtype, device, progress))
    run(parse_model_spec(model, adapter), plan, output)


@app.command("task")
def task_cmd(
    model: ModelOpt,
    data: str = typer.Option(..., help="Your evaluation file (alpaca / sharegpt / openai rows with answers)."),
    adapter: AdapterOpt = None,
    labels: Optional[str] = typer.Option(None, help="Comma list of labels (e.g. 0,1): classification. Without it: "
                                                    "generation metrics (BLEU, ROUGE, exact match)."),
    mode: str = typer.Option("score", help="Classification: 'score' (constrained to the labels) or 'generate'."),
    limit: LimitOpt = None,
    template: TemplateOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    max_new_tokens: MaxNewTokensOpt = 256,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    output: OutputOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Task metrics on your data: accuracy / macro P-R-F1 / confusion matrix, or BLEU / ROUGE; error flags."""
    from tuneforge.eval.runner import build_plan, parse_model_spec, run

    plan = build_plan([], [data], labels=_split(labels) or None, mode=mode, limit=limit, seed=seed,
                      **_common(0, False, template, batch_size, max_new_tokens, dtype, device, progress))
    run(parse_model_spec(model, adapter), plan, output)


@app.command("rm")
def rm_cmd(
    model: str = typer.Option(..., "--model", "-m", help="A reward model: an `rm` run folder (LoRA or full) or a "
                                                        "sequence-classification model folder."),
    data: str = typer.Option(..., help="Pairs to score: rows with a prompt and chosen/rejected answers."),
    limit: Optional[int] = typer.Option(None, help="Score only the first N pairs."),
    cutoff: int = typer.Option(1024, help="Longest rendered side in tokens (the prompt is cut first)."),
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
    output: OutputOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Pairwise accuracy of a reward model: the share of pairs where the chosen answer scores higher, and the mean
    margin r(chosen) − r(rejected). Writes DATA_rm.json into --output (default: MODEL/eval_rm/)."""
    from tuneforge.eval.rm import evaluate_reward_model, summary
    from tuneforge.utils.console import console

    result, path = evaluate_reward_model(model, data, limit=limit, cutoff=cutoff, batch_size=batch_size,
                                         device=device, output=output, progress=progress)
    console.print(f"{summary(result)}\nresults: {path}")


@app.command("compare")
def compare_cmd(
    a: str = typer.Argument(..., help="Before: results.json (or its folder), MODEL, or MODEL::ADAPTER."),
    b: str = typer.Argument(..., help="After: results.json (or its folder), MODEL, or MODEL::ADAPTER."),
    tasks: Optional[str] = typer.Option(None, help="Benchmarks to run for model arguments (comma list)."),
    data: Optional[str] = typer.Option(None, help="Task file to run for model arguments."),
    labels: Optional[str] = typer.Option(None, help="Labels for --data (classification)."),
    mode: str = typer.Option("score", help="Classification mode for --data: score or generate."),
    shots: int = typer.Option(0),
    limit: LimitOpt = None,
    chat: bool = typer.Option(False, help="Score benchmarks through the chat template."),
    template: TemplateOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    max_new_tokens: MaxNewTokensOpt = 256,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Folder for compare.md/html/json."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison JSON to stdout."),
    progress: ProgressOpt = True,
) -> None:
    """Side-by-side metrics, per-example wins/losses/ties (sign test) and the examples that got worse."""
    from pathlib import Path

    from tuneforge.eval.compare import (compare_results, default_compare_output, is_results_path, load_side,
                                        print_compare, write_compare)
    from tuneforge.eval.runner import build_plan, parse_model_spec, run

    plan = None
    if not (is_results_path(a) and is_results_path(b)):  # validate everything before loading either model
        plan = build_plan(_split(tasks), [data] if data else [], labels=_split(labels) or None, mode=mode,
                          limit=limit, **_common(shots, chat, template, batch_size, max_new_tokens, dtype,
                                                 device, progress))
    out = Path(output) if output else default_compare_output()
    sides = []
    for tag, arg in (("a", a), ("b", b)):
        if is_results_path(arg):
            sides.append(load_side(arg))
        else:
            sides.append(run(parse_model_spec(arg), plan, out / tag)[0])
    cmp = compare_results(sides[0], sides[1])
    paths = write_compare(cmp, out)
    print_compare(cmp)
    from tuneforge.utils.console import console

    console.print(f"comparison: [bold]{paths['markdown']}[/bold] (also {paths['html'].name}, {paths['json'].name})")
    if as_json:
        typer.echo(json.dumps(cmp, indent=1, ensure_ascii=False))


@app.command("arena")
def arena_cmd(
    model: list[str] = typer.Option(..., "--model", "-m", help="A model, twice or more: NAME=SPEC or SPEC; SPEC is a "
                                    "base (alias/folder/hub id), MODEL::ADAPTER, an adapter or run folder, or "
                                    "endpoint:URL#MODEL."),
    prompts: str = typer.Option(..., help="Prompts: JSONL with `prompt` or `messages` (also alpaca/sharegpt rows)."),
    judge: Optional[str] = typer.Option(None, help="rule:longer | rule:shorter | rule:contains:TEXT | human | a "
                                                   "local judge model."),
    judge_endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible judge server (URL before "
                                                            "/chat/completions)."),
    judge_model: Optional[str] = typer.Option(None, help="Model name for --judge-endpoint."),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable with the API key for endpoints."),
    rubric: Optional[str] = typer.Option(None, help="Rubric file with {prompt}, {answer_1}, {answer_2} "
                                                    "[, {reference}] (model/endpoint judges)."),
    judge_template: str = typer.Option("auto", help="Chat template of a local judge model."),
    judge_max_new_tokens: int = typer.Option(16, help="Reply length of a model/endpoint judge."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Arena folder: answers cache, verdicts, report "
                                                                "(default: $TUNEFORGE_HOME/arena/PROMPTS-HASH)."),
    template: list[str] = typer.Option([], help="Chat template for the local models without one of their own; "
                                                "NAME=TEMPLATE sets (replaces) one model's."),
    max_new_tokens: int = typer.Option(256, help="Answer length, the same for every model."),
    temperature: float = typer.Option(0.0, help="0 = greedy answers."),
    bootstrap: int = typer.Option(1000, help="Bootstrap rounds over prompts for the intervals (0: none)."),
    elo_k: float = typer.Option(16.0, help="Elo K factor."),
    seed: int = typer.Option(0, help="Seed of Elo orders, bootstrap draws, the human judge's order and sampled "
                                     "answers."),
    batch_size: BatchSizeOpt = 8,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    """Pairwise arena: every pair of models on every prompt, judged in both orders; Elo and Bradley–Terry ratings
    with bootstrap intervals, win rates, the judge's self-agreement; arena.md/html/json and a chart in --out."""
    from tuneforge.eval.arena import ArenaSettings, GenerationSettings, JudgeSpec, run_arena

    spec = JudgeSpec(judge=judge, endpoint=judge_endpoint, api_model=judge_model, api_key_env=api_key_env,
                     rubric=rubric, template=judge_template, max_new_tokens=judge_max_new_tokens,
                     batch_size=batch_size, device=device, dtype=dtype)
    gen = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, batch_size=batch_size,
                             dtype=dtype, device=device, api_key_env=api_key_env)
    run_arena(ArenaSettings(models=model, prompts=prompts, judge=spec, out=out, templates=template, generation=gen,
                            bootstrap=bootstrap, elo_k=elo_k, seed=seed, progress=progress))
