"""Supervised fine-tuning: conversations through the chat template, loss on the answers (data.mask)."""

from __future__ import annotations

from tuneforge.data.render import render_records
from tuneforge.stages.causal import CausalLMStage


class SftStage(CausalLMStage):
    name = "sft"
    description = "supervised fine-tuning on conversations (loss on the answers)"
    accepts = ("chat",)

    def render(self, records, tok, data_cfg):
        return render_records(records, tok, mask=data_cfg.mask, cutoff=data_cfg.cutoff_len,
                              on_long_answer=data_cfg.on_long_answer)
