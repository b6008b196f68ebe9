"""What a run is about to do, printed before the model loads: data counts, chosen values, device defaults."""

from __future__ import annotations

from rich.table import Table

from tuneforge.train.cpu_runtime import runtime_line
from tuneforge.utils.console import console


def _schedule_rows(cfg, data, schedule) -> list[tuple[str, str]]:
    def every(steps: int) -> str:
        return f"every {steps} steps" if steps else "at each epoch end"

    rows = [("checkpoints", every(schedule.save_steps))]
    if schedule.evaluate:
        what = "eval loss" + (" + eval.classification" if cfg.eval.classification else "")
        rows.append(("validation", f"{data.stats['val']['kept']} examples; {what} {every(schedule.eval_steps)}"))
    if schedule.load_best:
        better = "higher" if schedule.greater_is_better else "lower"
        by = f" by more than {schedule.threshold:g}" if schedule.threshold else ""
        stop = f"; stop after {schedule.patience} evaluations without improving{by}" if schedule.patience else ""
        rows.append(("keep best", f"{schedule.load_best} ({better} is better) → the final adapter/model{stop}"))
    rows += [("derived", note) for note in schedule.notes]
    return rows


def print_plan(cfg, data, resolved, device: str, out, resume_ckpt, schedule=None) -> None:
    t = data.stats["train"]
    table = Table(title=f"tuneforge {cfg.stage.type} · {cfg.method.type} · {cfg.model.name}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("data", f"{t['rows']} rows → {t['kept']} examples, {t['tokens']:,} tokens "
                          f"({t['trained_tokens']:,} trained)")
    if data.stats.get("skipped_rows"):
        table.add_row("skipped rows", f"[yellow]{data.stats['skipped_rows']}[/yellow] (data.on_error=skip); first: "
                                      f"{data.stats['skipped_examples'][:1]}")
    if t["truncated"] or t["dropped_no_target"]:
        table.add_row("truncated", f"[yellow]{t['truncated']}[/yellow] rows cut to {cfg.data.cutoff_len} tokens; "
                                   f"{t['dropped_no_target']} dropped (no answer left)")
    if t.get("answer_cut"):
        done = "dropped" if cfg.data.on_long_answer == "drop" else "cut at the end"
        table.add_row("answer cut", f"[yellow]{t['answer_cut']}[/yellow] answers longer than {cfg.data.cutoff_len} "
                                    f"tokens, {done} (data.on_long_answer={cfg.data.on_long_answer})")
    if schedule is not None:
        for key, text in _schedule_rows(cfg, data, schedule):
            table.add_row(key, text)
    elif data.stats.get("val"):
        table.add_row("validation", f"{data.stats['val']['kept']} examples")
    if cfg.data.packing:
        table.add_row("packing", f"{data.stats['packed_sequences']} sequences of ≤{cfg.data.cutoff_len} tokens "
                                 f"({data.stats['samples_per_sequence']} samples each)")
    for key, why in resolved.chosen.items():
        table.add_row(f"{key} (auto)", why)
    table.add_row("device", f"{device}, precision {resolved.precision}, gradient checkpointing "
                            f"{resolved.gradient_checkpointing}")
    table.add_row("runtime", runtime_line(cfg))
    table.add_row("output", f"{out}" + (f" (resuming from {resume_ckpt.name})" if resume_ckpt else ""))
    console.print(table)
