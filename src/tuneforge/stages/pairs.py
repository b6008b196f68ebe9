"""Pairwise preference data for the stages that compare two answers (rm, dpo, simpo, orpo): checks, rendering of
both sides, and batches that hold the chosen rows first and the rejected rows after them.

Each side is the prompt plus that answer, rendered like an SFT row with mask `last` (loss on that final answer
only) and truncated on its own (prompt first; the answer's tail only when unavoidable, data.on_long_answer).
"""

from __future__ import annotations

import torch

from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE, RenderStats, Rendered, render_row
from tuneforge.stages.base import Prepared, Stage
from tuneforge.utils.errors import DataError

SIDES = ("chosen", "rejected")


def check_pair(rec: Record) -> None:
    """A pair must have both answers, a prompt, and two different answers (else it teaches nothing)."""
    file, line = rec.location()
    for side in SIDES:
        if not getattr(rec, side):
            raise DataError(f"preference row without a {side} answer", file=file, line=line, field=side)
    if not any(m["role"] == "user" and m["content"].strip() for m in rec.messages):
        raise DataError("preference row with an empty prompt", file=file, line=line, field="messages")
    if [m["content"].strip() for m in rec.chosen] == [m["content"].strip() for m in rec.rejected]:
        raise DataError("chosen and rejected answers are identical, so the pair prefers nothing", file=file,
                        line=line, field="rejected", hint="fix or remove the row")


def side_record(rec: Record, side: str) -> Record:
    """The conversation of one side of a pair: the prompt and that answer."""
    return Record(messages=rec.messages + getattr(rec, side), tools=rec.tools, source=rec.source)


def render_pairs(records: list[Record], tok, cutoff: int, on_long_answer: str = "cut"
                 ) -> tuple[list[tuple[Record, Rendered, Rendered]], RenderStats]:
    """(record, chosen, rejected) renders of every pair and the counts: `rows`/`kept` count pairs; `tokens`, the
    truncation and drop counters count sides. A side dropped (no answer token left, or on_long_answer=drop) drops
    its pair."""
    stats, out = RenderStats(), []
    for rec in records:
        stats.rows += 1
        sides = [render_row(side_record(rec, side), tok, "last", cutoff, on_long_answer, stats) for side in SIDES]
        if None not in sides:
            out.append((rec, *sides))
    stats.kept = len(out)
    stats.tokens = sum(len(s.input_ids) for _, *pair in out for s in pair)
    stats.trained_tokens = sum(sum(1 for lab in s.labels if lab != IGNORE) for _, *pair in out for s in pair)
    return out, stats


class PairCollator:
    """Pads 2·B sequences (the B of the first side, e.g. chosen, then the B of the second) to the longest; labels
    padded with -100. Per-item numbers (`margin`, `desirable`, precomputed reference log-probs `ref_<side>`)
    become float tensors of B."""

    def __init__(self, pad_token_id: int, sides: tuple[str, str] = SIDES):
        self.pad, self.sides = pad_token_id, sides

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        seqs = [(it[f"{s}_ids"], it[f"{s}_labels"]) for s in self.sides for it in items]
        n = max(len(ids) for ids, _ in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        labels = torch.full((len(seqs), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for b, (i, lab) in enumerate(seqs):
            ids[b, :len(i)] = torch.tensor(i)
            labels[b, :len(lab)] = torch.tensor(lab)
            mask[b, :len(i)] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask,
                 "n_real": torch.tensor([len(i) for i, _ in seqs])}
        for key in ("margin", "desirable", *(f"ref_{s}" for s in self.sides)):
            if key in items[0]:
                batch[key] = torch.tensor([float(it[key]) for it in items])
        return batch


class PairwiseStage(Stage):
    """Base of the stages that train on chosen/rejected pairs."""

    accepts = ("pairwise",)

    def check_records(self, records):
        super().check_records(records)
        for rec in records:
            check_pair(rec)

    def item(self, rec: Record, chosen: Rendered, rejected: Rendered, params) -> dict:
        return {"chosen_ids": chosen.input_ids, "chosen_labels": chosen.labels,
                "rejected_ids": rejected.input_ids, "rejected_labels": rejected.labels}

    def prepare(self, records, tok, data_cfg, params) -> Prepared:
        pairs, stats = render_pairs(records, tok, data_cfg.cutoff_len, data_cfg.on_long_answer)
        return Prepared([self.item(rec, c, r, params) for rec, c, r in pairs], stats.as_dict())

    def render_for_preview(self, records, tok, data_cfg, params):
        pairs, stats = render_pairs(records, tok, data_cfg.cutoff_len, data_cfg.on_long_answer)
        shown = []
        for _, *pair in pairs:
            for side, r in zip(SIDES, pair):
                shown.append(Rendered(r.input_ids, r.labels, f"{r.source} · {side}", r.truncated, r.answer_start,
                                      r.answer_cut))
        return shown, stats.as_dict()

    def collators(self, tok, data_cfg, params):
        return PairCollator(tok.pad_token_id), PairCollator(tok.pad_token_id)


def split_pairs(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2·B batch dimension → (chosen B, rejected B)."""
    half = t.shape[0] // 2
    return t[:half], t[half:]
