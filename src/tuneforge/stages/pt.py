"""Continued pre-training: plain text cut into cutoff-long chunks, every token trained."""

from __future__ import annotations

from tuneforge.data.render import render_text_records
from tuneforge.stages.causal import CausalLMStage


class PretrainStage(CausalLMStage):
    name = "pt"
    description = "continued pre-training on plain text (every token trained)"
    accepts = ("text",)  # conversations are read as their text
    needs_chat_template = False

    def render(self, records, tok, data_cfg):
        return render_text_records(records, tok, cutoff=data_cfg.cutoff_len)
