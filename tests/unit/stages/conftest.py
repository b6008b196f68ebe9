"""Shared pieces of the stage unit tests."""

from __future__ import annotations

import pytest


def tiny_causal_lm(model_dir, lora: bool):
    """The 656K model in training mode, seeded; with `lora`, under a randomly initialised LoRA on every linear."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return model.train()


@pytest.fixture
def make_causal_lm(tiny_model_dir):
    """`make_causal_lm(lora=...)`: a fresh tiny_causal_lm of the 656K model."""
    return lambda lora: tiny_causal_lm(tiny_model_dir, lora)


@pytest.fixture
def lora_model(make_causal_lm):
    return make_causal_lm(lora=True)
