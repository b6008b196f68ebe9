"""`tuneforge data preview`: show rendered samples with the trained tokens marked, and token-length statistics.

This is what the model will actually see: the chat template applied, the loss mask, truncation and EOS. Trained
tokens are shown highlighted (green) in the terminal and between ⟦ ⟧ in plain output.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.data.render import IGNORE, Rendered


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
    if not lengths:
        return {}
    xs = sorted(lengths)

    def pct(q):
        return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]

    return {"n": len(xs), "min": xs[0], "mean": round(sum(xs) / len(xs), 1), "p50": pct(0.5), "p90": pct(0.9),
            "p99": pct(0.99), "max": xs[-1], "at_cutoff": sum(1 for x in xs if x >= cutoff)}


def preview(cfg, n: int = 3):
    """Render the configured training data → (first n rendered samples, stats dict, tokenizer)."""
    from tuneforge.data.render import render_records
    from tuneforge.models.load import load_tokenizer
    from tuneforge.stages import get_stage
    from tuneforge.data.run_records import load_train_records

    tok = load_tokenizer(cfg.model.name, revision=cfg.model.revision)
    if get_stage(cfg.stage).needs_chat_template:
        from tuneforge.data.templates import ensure_chat_template

        ensure_chat_template(tok, cfg.model.template)
    records, _, summaries, skipped = load_train_records(cfg)
    rendered, rstats = render_records(records, tok, stage=cfg.stage, mask=cfg.data.mask, cutoff=cfg.data.cutoff_len)
    lengths = [len(r.input_ids) for r in rendered]
    trained = [sum(1 for lab in r.labels if lab != IGNORE) for r in rendered]
    stats = {"datasets": summaries, "skipped_rows": len(skipped), "render": rstats.as_dict(),
             "tokens": length_stats(lengths, cfg.data.cutoff_len), "trained_tokens": length_stats(trained, 10**9)}
    return rendered[:n], stats, tok
