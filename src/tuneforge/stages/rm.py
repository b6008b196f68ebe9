"""Reward modelling: a one-output score head on the backbone, trained on chosen/rejected pairs with the
Bradley–Terry loss  -log σ(r_chosen − r_rejected − margin)  plus an optional centering term
c·mean((r_c + r_r)²) that keeps rewards near zero (InstructGPT / Llama 2 reward models).

Evaluation logs the pairwise accuracy (share of pairs where the chosen answer scores higher) and the mean margin
r_chosen − r_rejected. The result scores conversations: `tuneforge eval rm`, and the `rm` reward of ppo/grpo.
"""

from __future__ import annotations

from pydantic import Field

from tuneforge.stages.base import StageParams
from tuneforge.stages.pairs import PairwiseStage, split_pairs
from tuneforge.stages.trainer import BatchMetricsTrainer, ListDataset


class RewardParams(StageParams):
    margin: float = Field(0.0, description="a fixed margin the chosen reward must beat the rejected one by")
    margin_column: str | None = Field(None, description="a data column with a per-pair margin (e.g. a rating "
                                                        "difference), added to `margin`")
    center_coef: float = Field(0.0, ge=0, description="weight of mean((r_chosen + r_rejected)^2), e.g. 0.01")


def reward_loss(chosen, rejected, margin=0.0, center_coef: float = 0.0):
    """Bradley–Terry loss of a batch of pair rewards (tensors of B), mean over pairs."""
    import torch.nn.functional as F

    loss = -F.logsigmoid(chosen - rejected - margin).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


class RewardTrainer(BatchMetricsTrainer):
    """compute_loss on a PairCollator batch; logs (and evaluations add) `accuracy` and `margin` of the pairs."""

    def __init__(self, *args, params: RewardParams, **kwargs):
        super().__init__(*args, **kwargs)
        self.params = params

    def rewards(self, model, inputs):
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return split_pairs(out.logits[:, 0].float())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen, rejected = self.rewards(model, inputs)
        margin = inputs.get("margin", 0.0) + self.params.margin
        loss = reward_loss(chosen, rejected, margin, self.params.center_coef)
        self.store(model, {"accuracy": (chosen > rejected).float(), "margin": chosen - rejected})
        return (loss, {"chosen": chosen, "rejected": rejected}) if return_outputs else loss


class RewardStage(PairwiseStage):
    name = "rm"
    description = "reward model: a scalar score head trained on chosen/rejected pairs (Bradley–Terry)"
    Params = RewardParams
    generative = False
    metrics = ("eval_loss", "eval_accuracy", "eval_margin")

    def item(self, rec, chosen, rejected, params):
        out = super().item(rec, chosen, rejected, params)
        if params.margin_column:
            from tuneforge.utils.errors import DataError

            value = rec.extra.get(params.margin_column)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                file, line = rec.location()
                raise DataError(f"stage.margin_column={params.margin_column}: expected a number, got {value!r}",
                                file=file, line=line, field=params.margin_column)
            out["margin"] = float(value)
        return out

    def load_model(self, src, *, dtype, device, revision, tok, quantization=None):  # quantized: refused by compat
        from tuneforge.models.load import load_model

        return load_model(src, dtype=dtype, device=device, revision=revision, head="reward",
                          pad_token_id=tok.pad_token_id)

    def build(self, *, model, tok, train_items, val_items, args, callbacks, counter, params, data_cfg, out_dir):
        train_collator, eval_collator = self.collators(tok, data_cfg, params)
        return RewardTrainer(model=model, args=args, train_dataset=ListDataset(train_items),
                             eval_dataset=ListDataset(val_items) if val_items else None,
                             data_collator=train_collator, eval_collator=eval_collator, processing_class=tok,
                             callbacks=callbacks, token_counter=counter, params=params)


def load_reward_model(name: str, *, device: str = "auto", dtype: str = "auto"):
    """(reward model in eval mode, tokenizer) from an rm run folder (LoRA: adapter merged into its base; full/freeze:
    its model folder) or any sequence-classification model folder."""
    from tuneforge.models.load import load_model, load_tokenizer
    from tuneforge.models.source import resolve_model

    src = resolve_model(name)
    tok = load_tokenizer(src)
    model = load_model(src, head="reward", pad_token_id=tok.pad_token_id, device=device, dtype=dtype)
    return model.eval(), tok


def score_pairs(model, tok, records, *, cutoff: int = 1024, batch_size: int = 8, progress: bool = True) -> dict:
    """Pairwise accuracy and mean margin of a reward model on chosen/rejected records."""
    import torch

    from tuneforge.stages.pairs import PairCollator, render_pairs
    from tuneforge.utils.progress import progress_bar

    RewardStage().check_records(records)
    pairs, stats = render_pairs(records, tok, cutoff)
    items = [{"chosen_ids": c.input_ids, "chosen_labels": c.labels, "rejected_ids": r.input_ids,
              "rejected_labels": r.labels} for _, c, r in pairs]
    collate, chosen, rejected = PairCollator(tok.pad_token_id), [], []
    device = next(model.parameters()).device
    with progress_bar(len(items), "scoring pairs", progress) as advance, torch.no_grad():
        for i in range(0, len(items), batch_size):
            batch = collate(items[i:i + batch_size])
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            c, r = split_pairs(out.logits[:, 0].float().cpu())
            chosen += c.tolist()
            rejected += r.tolist()
            advance(len(items[i:i + batch_size]))
    n = len(chosen)
    return {"n": n, "accuracy": sum(c > r for c, r in zip(chosen, rejected)) / max(n, 1),
            "margin": sum(c - r for c, r in zip(chosen, rejected)) / max(n, 1),
            "chosen_mean": sum(chosen) / max(n, 1), "rejected_mean": sum(rejected) / max(n, 1),
            "dropped": stats.dropped_no_target, "truncated_sides": stats.truncated + stats.answer_cut}
