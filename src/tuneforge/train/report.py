"""What a run is about to do, printed before the model loads: data counts, chosen values, device defaults."""

from __future__ import annotations

from rich.table import Table

from tuneforge.train import distributed as dist
from tuneforge.train.cpu_runtime import runtime_line
from tuneforge.utils.console import console


def _schedule_rows(cfg, data, schedule) -> list[tuple[str, str]]:
    def every(steps: int) -> str:
        if not steps and cfg.data.streaming:  # the HF Trainer's one "epoch" of a stream is the whole run
            return "at the end of the run (a stream has no epochs: set train.save_steps / eval_steps for more)"
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


def _streaming_rows(cfg, data, resolved) -> list[tuple[str, str]]:
    """What a streamed run reads (data.streaming): nothing is counted ahead but the rows."""
    s, d = data.stats["streaming"], cfg.data
    read = (f"{s['documents']:,} rows, {s['bytes'] / 1e6:,.1f} MB, checked ahead in {s['seconds']:.1f} s"
            if s["scanned"] else "hub data, rows checked as they stream")
    per_step = resolved.batch_size * cfg.train.grad_accum * dist.world_size()
    order = f"shuffled within {d.shuffle_buffer} blocks" if d.shuffle_buffer > 1 else "file order"
    return [("data", f"streamed ({read}); tokenized while training, nothing kept or cached"),
            ("blocks", f"{per_step} blocks of {d.cutoff_len} tokens per step ({per_step * d.cutoff_len:,} tokens), "
                       f"documents joined with eos, no attention across them; {order}; the data repeats until "
                       f"train.max_steps={cfg.train.max_steps}")]


def print_plan(cfg, data, resolved, device: str, out, resume_ckpt, schedule=None) -> None:
    t = data.stats["train"]
    table = Table(title=f"tuneforge {cfg.stage.type} · {cfg.method.type} · {cfg.model.name}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if cfg.data.streaming:
        for key, text in _streaming_rows(cfg, data, resolved):
            table.add_row(key, text)
    else:
        table.add_row("data", f"{t['rows']} rows → {t['kept']} examples, {t['tokens']:,} tokens "
                              f"({t['trained_tokens']:,} trained)")
    if data.stats.get("skipped_rows"):
        table.add_row("skipped rows", f"[yellow]{data.stats['skipped_rows']}[/yellow] (data.on_error=skip); first: "
                                      f"{data.stats['skipped_examples'][:1]}")
    if t.get("truncated") or t.get("dropped_no_target"):
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
    if cfg.data.packing and not cfg.data.streaming:
        table.add_row("packing", f"{data.stats['packed_sequences']} sequences of ≤{cfg.data.cutoff_len} tokens "
                                 f"({data.stats['samples_per_sequence']} samples each)")
    for key, why in resolved.chosen.items():
        table.add_row(f"{key} (auto)", why)
    table.add_row("device", f"{device}, precision {resolved.precision}, gradient checkpointing "
                            f"{resolved.gradient_checkpointing}")
    table.add_row("runtime", runtime_line(cfg, device))
    table.add_row("output", f"{out}" + (f" (resuming from {resume_ckpt.name})" if resume_ckpt else ""))
    console.print(table)
