"""Stages that train a causal LM on single sequences with labels (pt, sft): shared collation and Trainer."""

from __future__ import annotations

from tuneforge.data.render import Rendered
from tuneforge.stages.base import Prepared, Stage


def as_items(examples: list[Rendered]) -> list[dict]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]


class CausalLMStage(Stage):
    """Next-token loss on the labelled tokens of each sequence; packing applies."""

    packable = True
    cacheable = True
    row_independent = True

    def render(self, records, tok, data_cfg):
        """records → (list[Rendered], RenderStats)."""
        raise NotImplementedError

    def prepare(self, records, tok, data_cfg, params) -> Prepared:
        examples, stats = self.render(records, tok, data_cfg)
        return Prepared(as_items(examples), stats.as_dict())

    def render_for_preview(self, records, tok, data_cfg, params):
        examples, stats = self.render(records, tok, data_cfg)
        return examples, stats.as_dict()

    def collators(self, tok, data_cfg, params):
        from tuneforge.data.collate import PadCollator  # torch

        return PadCollator(tok.pad_token_id, packed=data_cfg.packing), PadCollator(tok.pad_token_id)

    def build(self, *, model, tok, train_items, val_items, args, callbacks, counter, params, data_cfg, out_dir):
        from tuneforge.stages.trainer import CausalLMTrainer, ListDataset  # torch + transformers' Trainer

        train_collator, eval_collator = self.collators(tok, data_cfg, params)
        return CausalLMTrainer(model=model, args=args, train_dataset=ListDataset(train_items),
                               eval_dataset=ListDataset(val_items) if val_items else None,
                               data_collator=train_collator, eval_collator=eval_collator, processing_class=tok,
                               callbacks=callbacks, token_counter=counter)
