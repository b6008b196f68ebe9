"""What a run is about to do, printed before the model loads: data counts, chosen values, device defaults."""

from __future__ import annotations

from rich.table import Table

from tuneforge.utils.console import console


def print_plan(cfg, data, resolved, device: str, out, resume_ckpt) -> None:
    t = data.stats["train"]
    table = Table(title=f"tuneforge {cfg.stage} · {cfg.method.type} · {cfg.model.name}", show_header=False)
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
    if data.stats.get("val"):
        table.add_row("validation", f"{data.stats['val']['kept']} examples")
    if cfg.data.packing:
        table.add_row("packing", f"{data.stats['packed_sequences']} sequences of ≤{cfg.data.cutoff_len} tokens "
                                 f"({data.stats['samples_per_sequence']} samples each)")
    for key, why in resolved.chosen.items():
        table.add_row(f"{key} (auto)", why)
    table.add_row("device", f"{device}, precision {resolved.precision}, gradient checkpointing "
                            f"{resolved.gradient_checkpointing}")
    table.add_row("output", f"{out}" + (f" (resuming from {resume_ckpt.name})" if resume_ckpt else ""))
    console.print(table)
