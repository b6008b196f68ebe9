"""LoRA (with rsLoRA and DoRA flags) through PEFT."""

from __future__ import annotations

from tuneforge.utils.errors import ConfigError


def is_reward_model(model) -> bool:
    """A sequence-classification model (a reward model's scalar head) rather than a causal LM."""
    return type(model).__name__.endswith("ForSequenceClassification")


def lora_config(params, model=None):
    """`model`: a reward model gets the SEQ_CLS task, whose score head PEFT trains in full (modules_to_save)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS if model is not None and is_reward_model(model) else TaskType.CAUSAL_LM,
        r=params.r,
        lora_alpha=params.alpha if params.alpha is not None else 2 * params.r,
        lora_dropout=params.dropout,
        target_modules=params.target_modules,
        use_rslora=params.use_rslora,
        use_dora=params.use_dora,
        modules_to_save=params.modules_to_save,
        bias="none",
    )


def apply_lora(model, params):
    """Wrap `model` with LoRA adapters. The base may be in half precision (see models.load.resolve_load_dtype); every
    trainable weight (adapters, DoRA magnitudes, modules_to_save copies) is kept in float32, which mixed-precision
    training needs (fp16 gradient scaling refuses half-precision parameters)."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, lora_config(params, model))
    except ValueError as err:
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise ConfigError(f"method.lora.target_modules={params.target_modules!r}: {err}",
                          hint=f"use 'all-linear' or some of: {', '.join(names[:20])}") from err
    _trainable_in_float32(peft_model)
    return peft_model


def _trainable_in_float32(model) -> None:
    import torch

    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
