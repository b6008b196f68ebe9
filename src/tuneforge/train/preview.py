"""Answer the same prompts before and after training, so a run shows its behaviour change, not only a loss."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from tuneforge.utils.console import console


def answer(model, tok, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers (chat template applied) for each prompt."""
    from tuneforge.infer.engine import Engine

    was_training = model.training
    model.eval()
    try:
        gens = Engine(model, tok).generate([[{"role": "user", "content": p}] for p in prompts],
                                           max_new_tokens=max_new_tokens, temperature=0.0, batch_size=8)
    finally:
        if was_training:
            model.train()
    return [g.text.strip() for g in gens]


def show_and_save(prompts: list[str], before: list[str], after: list[str], out: Path) -> None:
    table = Table(title="Same prompts, before and after fine-tuning", show_lines=True, expand=True)
    table.add_column("prompt", ratio=1)
    table.add_column("before", ratio=2)
    table.add_column("after", ratio=2, style="green")
    for p, b, a in zip(prompts, before, after):
        table.add_row(p, b, a)
    console.print(table)
    rows = [{"prompt": p, "before": b, "after": a} for p, b, a in zip(prompts, before, after)]
    (out / "preview.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
