"""Continued pre-training: plain text cut into cutoff-long chunks, every token trained; or, with data.streaming,
fixed cutoff-long blocks of a token stream (tuneforge.data.streaming)."""

from __future__ import annotations

from tuneforge.data.render import render_text_records
from tuneforge.data.streaming import TokenStream
from tuneforge.stages.causal import CausalLMStage


class PretrainStage(CausalLMStage):
    name = "pt"
    description = "continued pre-training on plain text (every token trained)"
    accepts = ("text",)  # conversations are read as their text
    needs_chat_template = False

    def render(self, records, tok, data_cfg):
        return render_text_records(records, tok, cutoff=data_cfg.cutoff_len)

    def build(self, *, model, tok, train_items, val_items, args, callbacks, counter, params, data_cfg, out_dir):
        """A streamed run trains on the stream's blocks, always packed (position ids restart at every document);
        validation rows (data.eval) are rendered items as usual."""
        if not isinstance(train_items, TokenStream):
            return super().build(model=model, tok=tok, train_items=train_items, val_items=val_items, args=args,
                                 callbacks=callbacks, counter=counter, params=params, data_cfg=data_cfg,
                                 out_dir=out_dir)
        from tuneforge.data.collate import PadCollator  # torch
        from tuneforge.stages.trainer import CausalLMTrainer, ListDataset, StreamDataset

        return CausalLMTrainer(model=model, args=args, train_dataset=StreamDataset(train_items),
                               eval_dataset=ListDataset(val_items) if val_items else None,
                               data_collator=PadCollator(tok.pad_token_id, packed=True),
                               eval_collator=PadCollator(tok.pad_token_id), processing_class=tok,
                               callbacks=callbacks, token_counter=counter)
