"""`tuneforge data preview` helpers: rendered samples split into trained / untrained text, length statistics.
(The composition, which asks the configured stage to render, is tuneforge.stages.preview.)

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
