"""Preference optimisation on chosen/rejected pairs: dpo (loss sigmoid | robust | ipo | hinge, optional RPO SFT
term), simpo and orpo (both reference-free). The losses are in stages/pref_losses.py.

The reference model of dpo: with LoRA the policy itself with its adapter disabled (no second copy in memory);
with full or freeze tuning a frozen copy made before the first step, or, with `precompute_ref: true`, the
reference log-probs computed once before training and cached in the output folder (no copy kept; the cache is
reused when the same run resumes).

Logged on train (averaged over each logging interval) and at each evaluation (eval_ prefix): rewards/chosen,
rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen, logps/rejected.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from functools import partial
from typing import Literal

import torch
from pydantic import Field, model_validator

from tuneforge.stages.base import StageParams
from tuneforge.stages.logps import answer_logps
from tuneforge.stages.pairs import SIDES, PairCollator, PairwiseStage, split_pairs
from tuneforge.stages.pref_losses import dpo_loss, orpo_loss, simpo_loss
from tuneforge.stages.trainer import BatchMetricsTrainer, ListDataset

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
           "logps/rejected")
REF_CACHE = "reference_logps.pt"


class DpoParams(StageParams):
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference (KL weight)")
    loss: Literal["sigmoid", "robust", "ipo", "hinge"] = Field("sigmoid", description="DPO, robust DPO, IPO, SLiC")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed share of flipped labels (cDPO with "
                                                                    "sigmoid, robust DPO with robust)")
    rpo_alpha: float | None = Field(None, ge=0, description="add α × the chosen answers' NLL (RPO)")
    precompute_ref: bool = Field(False, description="compute the reference log-probs once before training and "
                                                    "cache them (no reference copy in memory for full/freeze)")

    @model_validator(mode="after")
    def _smoothing_applies(self):
        if self.label_smoothing and self.loss not in ("sigmoid", "robust"):
            raise ValueError(f"label_smoothing applies to loss sigmoid or robust, not {self.loss}")
        return self


class SimpoParams(StageParams):
    beta: float = Field(2.0, gt=0, description="reward scale of the length-normalised log-probs")
    gamma: float = Field(1.0, ge=0, description="target reward margin γ")
    sft_weight: float = Field(0.0, ge=0, description="add this × the chosen answers' NLL (CPO-SimPO)")


class OrpoParams(StageParams):
    beta: float = Field(0.1, gt=0, description="weight λ of the odds-ratio term beside the SFT loss")


class PreferenceTrainer(BatchMetricsTrainer):
    """Trainer for pair losses. `loss_fn(pc, pr, nc, nr, rc, rr) -> (losses, chosen rewards, rejected rewards)`;
    `reference`: "adapter" (PEFT adapter disabled), "copy" (`ref_model`), "cached" (in the batch) or None."""

    sides = SIDES

    def __init__(self, *args, loss_fn, reference: str | None, ref_model=None, sft_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn, self.reference, self.ref_model, self.sft_weight = loss_fn, reference, ref_model, sft_weight

    def _forward_logps(self, model, inputs):
        return answer_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])

    def reference_logps(self, model, inputs):
        first, second = self.sides
        if f"ref_{first}" in inputs:
            return inputs[f"ref_{first}"], inputs[f"ref_{second}"]
        with torch.no_grad():
            if self.reference == "adapter":
                with self.accelerator.unwrap_model(model).disable_adapter():
                    logps, _ = self._forward_logps(model, inputs)
            else:
                logps, _ = self._forward_logps(self.ref_model, inputs)
        return split_pairs(logps)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps, n = self._forward_logps(model, inputs)
        (pc, pr), (nc, nr) = split_pairs(logps), split_pairs(n)
        rc, rr = self.reference_logps(model, inputs) if self.reference else (None, None)
        losses, rw_c, rw_r = self.loss_fn(pc, pr, nc, nr, rc, rr)
        loss = losses.mean()
        if self.sft_weight:
            loss = loss + self.sft_weight * (-pc / nc).mean()
        self.store(model, {"rewards/chosen": rw_c, "rewards/rejected": rw_r, "rewards/margins": rw_c - rw_r,
                           "rewards/accuracies": (rw_c > rw_r).float(), "logps/chosen": pc, "logps/rejected": pr})
        return (loss, {"rewards_chosen": rw_c, "rewards_rejected": rw_r}) if return_outputs else loss


def precompute_reference(model, items: list[dict], pad_token_id: int, batch_size: int, cache,
                         sides: tuple[str, str] = SIDES) -> None:
    """Add `ref_<side>` (e.g. ref_chosen / ref_rejected) to every item: the model's log-probs before training
    (adapter disabled for a PEFT model). Cached in `cache` (a path) keyed by the token ids, so a resumed run does
    not recompute them."""
    from tuneforge.utils.progress import progress_bar

    a, b = sides
    key = hashlib.sha256(repr([(it[f"{a}_ids"], it[f"{b}_ids"]) for it in items]).encode()).hexdigest()
    if cache is not None and cache.is_file():
        saved = torch.load(cache)
        if saved.get("key") == key:
            for it, c, r in zip(items, saved[a], saved[b]):
                it[f"ref_{a}"], it[f"ref_{b}"] = float(c), float(r)
            return
    collate, chosen, rejected = PairCollator(pad_token_id, sides), [], []
    reference = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with progress_bar(len(items), "reference log-probs") as advance, torch.no_grad(), reference:
        for i in range(0, len(items), batch_size):
            batch = {k: v.to(device) for k, v in collate(items[i:i + batch_size]).items()}
            logps, _ = answer_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            c, r = split_pairs(logps)
            chosen += c.tolist()
            rejected += r.tolist()
            advance(len(items[i:i + batch_size]))
    model.train(was_training)
    for it, c, r in zip(items, chosen, rejected):
        it[f"ref_{a}"], it[f"ref_{b}"] = c, r
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, a: chosen, b: rejected}, cache)


class PreferenceStage(PairwiseStage):
    """Base of the stages trained by a PreferenceTrainer (or a subclass: `trainer_class`)."""

    metrics = ("eval_loss", *(f"eval_{m}" for m in METRICS))
    lr_scale = 0.25  # preference tuning moves a trained model gently: a quarter of the method's SFT rate
    trainer_class = PreferenceTrainer

    def loss_fn(self, params):
        raise NotImplementedError

    def reference(self, model, params) -> str | None:
        return None

    def collators(self, tok, data_cfg, params):
        sides = self.trainer_class.sides
        return PairCollator(tok.pad_token_id, sides), PairCollator(tok.pad_token_id, sides)

    def build(self, *, model, tok, train_items, val_items, args, callbacks, counter, params, data_cfg, out_dir):
        train_collator, eval_collator = self.collators(tok, data_cfg, params)
        reference, ref_model = self.reference(model, params), None
        if reference == "cached":
            for items, split in ((train_items, "train"), (val_items, "val")):
                if items:
                    cache = out_dir / f"{split}_{REF_CACHE}" if out_dir is not None else None
                    precompute_reference(model, items, tok.pad_token_id, args.per_device_eval_batch_size, cache,
                                         self.trainer_class.sides)
        elif reference == "copy":
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        return self.trainer_class(model=model, args=args, train_dataset=ListDataset(train_items),
                                  eval_dataset=ListDataset(val_items) if val_items else None,
                                  data_collator=train_collator, eval_collator=eval_collator, processing_class=tok,
                                  callbacks=callbacks, token_counter=counter, loss_fn=self.loss_fn(params),
                                  reference=reference, ref_model=ref_model, sft_weight=self.sft_weight(params))

    def sft_weight(self, params) -> float:
        return 0.0


def reference_mode(model, params) -> str:
    """How a stage with a reference model gets its log-probs: cached before training, the adapter disabled, or a
    frozen copy."""
    if params.precompute_ref:
        return "cached"
    return "adapter" if hasattr(model, "disable_adapter") else "copy"


def _dpo(pc, pr, nc, nr, rc, rr, **kw):
    return dpo_loss(pc, pr, rc, rr, **kw)


def _simpo(pc, pr, nc, nr, rc, rr, **kw):
    return simpo_loss(pc, pr, nc, nr, **kw)


def _orpo(pc, pr, nc, nr, rc, rr, **kw):
    return orpo_loss(pc, pr, nc, nr, **kw)


class DpoStage(PreferenceStage):
    name = "dpo"
    description = "direct preference optimisation on chosen/rejected pairs (DPO, robust DPO, IPO, SLiC hinge)"
    Params = DpoParams

    def loss_fn(self, params):
        return partial(_dpo, beta=params.beta, kind=params.loss, label_smoothing=params.label_smoothing)

    def reference(self, model, params) -> str:
        return reference_mode(model, params)

    def sft_weight(self, params) -> float:
        return params.rpo_alpha or 0.0


class SimpoStage(PreferenceStage):
    name = "simpo"
    description = "SimPO: reference-free, length-normalised preference optimisation with a target margin"
    Params = SimpoParams

    def loss_fn(self, params):
        return partial(_simpo, beta=params.beta, gamma=params.gamma)

    def sft_weight(self, params) -> float:
        return params.sft_weight


class OrpoStage(PreferenceStage):
    name = "orpo"
    description = "ORPO: SFT on the chosen answer plus an odds-ratio preference term, no reference model"
    Params = OrpoParams

    def loss_fn(self, params):
        return partial(_orpo, lam=params.beta)

