"""Training stages: what data a stage needs and how it is rendered. Methods (full/freeze/lora) are orthogonal."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    needs_chat_template: bool  # sft renders conversations with the chat template; pt reads plain text
    data_kind: str  # "chat" | "text"


STAGES = {
    "pt": Stage("pt", "continued pre-training on plain text (every token trained)", False, "text"),
    "sft": Stage("sft", "supervised fine-tuning on conversations (loss on answers)", True, "chat"),
}


def get_stage(name: str) -> Stage:
    return STAGES[name]
