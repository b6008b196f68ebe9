"""`tuneforge data preview`: show rendered samples with the trained tokens marked, and token-length statistics.

This is what the model will actually see: the chat template applied, the loss mask, truncation and EOS. Trained
tokens are shown highlighted (green) in the terminal and between ⟦ ⟧ in plain output.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.data.render import IGNORE, Rendered
from tuneforge.utils.stats import length_summary


@dataclass
class Segment:
    text: str
    trained: bool


def segments(r: Rendered, tok) -> list[Segment]:
    """Split a rendered sample into runs of trained / untrained tokens, decoded to text."""
    out: list[Segment] = []
    run: list[int] = []
    state = None
    for tid, lab in zip(r.input_ids, r.labels):
        t = lab != IGNORE
        if state is not None and t != state:
            out.append(Segment(tok.decode(run), state))
            run = []
        run.append(tid)
        state = t
    if run:
        out.append(Segment(tok.decode(run), bool(state)))
    return out


def marked_text(r: Rendered, tok) -> str:
    return "".join(f"⟦{s.text}⟧" if s.trained else s.text for s in segments(r, tok))


def length_stats(lengths: list[int], cutoff: int) -> dict:
    """`tuneforge.utils.stats.length_summary` (the doctor's numbers too) plus how many rows reach `cutoff`."""
    if not lengths:
        return {}
    return length_summary(lengths) | {"at_cutoff": sum(1 for x in lengths if x >= cutoff)}


def renders_chat(stage: str) -> bool:
    """Whether a stage renders conversations through the chat template (every stage but plain-text `pt`)."""
    return stage != "pt"


def preview(cfg, n: int = 3):
    """Render the configured training data → (first n rendered samples, stats dict, tokenizer)."""
    from tuneforge.data.render import render_records
    from tuneforge.data.run_records import load_train_records
    from tuneforge.models.load import load_tokenizer

    template = cfg.model.template if renders_chat(cfg.stage) else None
    tok = load_tokenizer(cfg.model.name, revision=cfg.model.revision, template=template)
    records, _, summaries, skipped = load_train_records(cfg)
    d = cfg.data
    rendered, rstats = render_records(records, tok, stage=cfg.stage, mask=d.mask, cutoff=d.cutoff_len,
                                      on_long_answer=d.on_long_answer)
    lengths = [len(r.input_ids) for r in rendered]
    trained = [sum(1 for lab in r.labels if lab != IGNORE) for r in rendered]
    stats = {"datasets": summaries, "skipped_rows": len(skipped), "render": rstats.as_dict(),
             "tokens": length_stats(lengths, d.cutoff_len), "trained_tokens": length_stats(trained, 10**9)}
    return rendered[:n], stats, tok
