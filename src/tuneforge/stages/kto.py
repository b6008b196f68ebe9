"""KTO (Ethayarajh et al. 2024): unpaired conversations labelled desirable or undesirable.

With r = log π(y|x) − log π_ref(y|x) and z the reference point, the batch estimate of KL(π‖π_ref) on mismatched
prompt/answer pairs (clamped at 0, no gradient):
    desirable:    λ_D · (1 − σ(β (r − z)))        undesirable:  λ_U · (1 − σ(β (z − r)))
The mismatched pair of row i is row i's prompt with the answer of the next row (a fixed shift over the dataset).
Pairwise data also works: each pair gives a desirable (chosen) and an undesirable (rejected) row. The reference is
the same as dpo's (adapter disabled with LoRA, a frozen copy, or log-probs precomputed once).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from pydantic import Field

from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE, RenderStats, render_row
from tuneforge.stages.base import Prepared, Stage, StageParams
from tuneforge.stages.pairs import check_pair, split_pairs
from tuneforge.stages.preference import PreferenceStage, PreferenceTrainer, reference_mode
from tuneforge.utils.errors import DataError

KTO_SIDES = ("target", "kl")


class KtoParams(StageParams):
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference")
    desirable_weight: float = Field(1.0, gt=0, description="λ_D; the paper keeps λ_D·n_D / (λ_U·n_U) in [1, 4/3]")
    undesirable_weight: float = Field(1.0, gt=0, description="λ_U")
    precompute_ref: bool = Field(False, description="compute the reference log-probs once before training")


def kto_loss(r, z, desirable, *, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """Per-row KTO losses; `r` log-ratios, `z` the (detached, clamped) reference point, `desirable` 0/1 floats."""
    d = desirable.bool()
    return torch.where(d, desirable_weight * (1 - F.sigmoid(beta * (r - z))),
                       undesirable_weight * (1 - F.sigmoid(beta * (z - r))))


class KtoTrainer(PreferenceTrainer):
    sides = KTO_SIDES

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = {k: split_pairs(inputs[k]) for k in ("input_ids", "attention_mask", "labels")}
        target, _ = self._forward_logps(model, {k: v[0] for k, v in rows.items()})
        with torch.no_grad():  # the reference point z carries no gradient: no backward through these rows
            mismatched, _ = self._forward_logps(model, {k: v[1] for k, v in rows.items()})
        ref_target, ref_mismatched = self.reference_logps(model, inputs)
        r = target - ref_target
        z = (mismatched - ref_mismatched).detach().mean()
        if self.accelerator.num_processes > 1:
            z = self.accelerator.reduce(z, reduction="mean")
        z = z.clamp(min=0)
        desirable = inputs["desirable"]
        loss = self.loss_fn(r, z, desirable).mean()
        d = desirable.bool()
        rewards = self.loss_fn.keywords["beta"] * r.detach()
        self.store(model, {"rewards/chosen": rewards[d], "rewards/rejected": rewards[~d], "kl": z.reshape(1),
                           "logps/chosen": target[d], "logps/rejected": target[~d]})
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def averages(self, split: str) -> dict[str, float]:
        out = super().averages(split)
        if "rewards/chosen" in out and "rewards/rejected" in out:
            out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
        return out


def unpaired_rows(records: list[Record]) -> list[Record]:
    """KTO rows as they are; a pair becomes a desirable (chosen) and an undesirable (rejected) row."""
    rows = []
    for rec in records:
        if rec.chosen is None:
            rows.append(rec)
            continue
        for side, label in (("chosen", True), ("rejected", False)):
            rows.append(Record(messages=rec.messages + getattr(rec, side), tools=rec.tools, label=label,
                               source=rec.source, extra=rec.extra))
    return rows


class KtoStage(PreferenceStage):
    name = "kto"
    description = "KTO: conversations labelled desirable or undesirable, no pairs needed (pairs work too)"
    accepts = ("unpaired", "pairwise")
    Params = KtoParams
    trainer_class = KtoTrainer
    metrics = ("eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins", "eval_kl",
               "eval_logps/chosen", "eval_logps/rejected")

    def check_records(self, records):
        Stage.check_records(self, records)  # the kind check; pairs are checked as pairs, KTO rows below
        for rec in records:
            if rec.chosen is not None or rec.rejected is not None:
                check_pair(rec)
            elif not rec.messages or rec.messages[-1]["role"] != "assistant":
                file, line = rec.location()
                raise DataError("a KTO row must end with the assistant answer it labels", file=file, line=line,
                                field="messages")
        labels = {r.label for r in unpaired_rows(records)}
        if len(labels) == 1:
            raise DataError(f"every KTO row is {'desirable' if labels.pop() else 'undesirable'}: KTO needs both "
                            f"kinds", hint="add rows with the other label (or train desirable rows alone with sft)")

    def prepare(self, records, tok, data_cfg, params) -> Prepared:
        rows = unpaired_rows(records)
        stats, items = RenderStats(), []
        render = dict(tok=tok, mask="last", cutoff=data_cfg.cutoff_len, on_long_answer=data_cfg.on_long_answer)
        for i, rec in enumerate(rows):
            stats.rows += 1
            other = rows[(i + 1) % len(rows)]
            mismatched = Record(messages=rec.messages[:-1] + other.messages[-1:], tools=rec.tools, source=rec.source)
            target = render_row(rec, stats=stats, **render)
            kl = render_row(mismatched, stats=RenderStats(), **render)
            if target is None or kl is None:
                continue
            items.append({"target_ids": target.input_ids, "target_labels": target.labels, "kl_ids": kl.input_ids,
                          "kl_labels": kl.labels, "desirable": float(bool(rec.label))})
        stats.kept = len(items)
        stats.tokens = sum(len(it["target_ids"]) for it in items)
        stats.trained_tokens = sum(sum(1 for lab in it["target_labels"] if lab != IGNORE) for it in items)
        return Prepared(items, stats.as_dict())

    def render_for_preview(self, records, tok, data_cfg, params):
        stats, shown = RenderStats(), []
        for rec in unpaired_rows(records):
            stats.rows += 1
            r = render_row(rec, tok, "last", data_cfg.cutoff_len, data_cfg.on_long_answer, stats)
            if r is not None:
                r.source = f"{rec.source} · {'desirable' if rec.label else 'undesirable'}"
                shown.append(r)
        stats.kept = len(shown)
        return shown, stats.as_dict()

    def loss_fn(self, params):
        return partial(kto_loss, beta=params.beta, desirable_weight=params.desirable_weight,
                       undesirable_weight=params.undesirable_weight)

    def reference(self, model, params) -> str:
        return reference_mode(model, params)
