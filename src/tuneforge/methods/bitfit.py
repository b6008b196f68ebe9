"""BitFit: only bias terms train.

Llama-family models have no biases. There, BitFit adds zero biases to the attention and MLP projections and turns
on the config flags that declare them (`attention_bias`, `mlp_bias`), so the saved model reloads with them in any
transformers install, and before the first step it computes exactly what the base does. A model with neither
biases nor those flags is refused with the reason."""

from __future__ import annotations

from pydantic import Field

from tuneforge.methods.base import Method, MethodParams, is_reward_model
from tuneforge.utils.errors import ConfigError

_BIAS_FLAGS = {"self_attn": "attention_bias", "mlp": "mlp_bias"}


class BitfitParams(MethodParams):
    add_biases: bool = Field(True, description="on a model without biases (llama family), add zero biases to the "
                                               "attention and MLP projections and train those")


class BitfitMethod(Method):
    name = "bitfit"
    description = "only the bias terms train (zero biases are added where a llama-family model has none)"
    Params = BitfitParams
    base_lr = 1e-3

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        if not _has_biases(model):
            if not params.add_biases:
                raise ConfigError("method bitfit: this model has no bias terms to train",
                                  hint="set method.add_biases=true, or use method ia3 (a similar trained share)")
            _add_zero_biases(model)
        for n, p in model.named_parameters():
            p.requires_grad_(n.endswith(".bias") or (is_reward_model(model) and n.startswith("score.")))
        return model

    def estimate_trainable(self, shape, params) -> int:
        return shape.n_layers * (shape.hidden * 2 + shape.kv_dim * 2 + shape.intermediate * 2 + shape.hidden)


def _has_biases(model) -> bool:
    return any(n.endswith(".bias") and p.ndim == 1 for n, p in model.named_parameters() if ".layers." in n)


def _add_zero_biases(model) -> None:
    import torch

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    missing = [flag for flag in _BIAS_FLAGS.values() if not hasattr(config, flag)]
    if missing:
        raise ConfigError(f"method bitfit: {config.model_type} models have no bias terms, and their config has no "
                          f"{' / '.join(missing)} flag to add them",
                          hint="use method ia3 (a similar trained share) or lora")
    added = 0
    for name, module in model.named_modules():
        part = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else ""
        if part in _BIAS_FLAGS and isinstance(module, torch.nn.Linear) and module.bias is None:
            w = module.weight
            module.bias = torch.nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
            added += 1
    if not added:
        raise ConfigError(f"method bitfit: found no attention or MLP projections to add biases to in this "
                          f"{config.model_type} model", hint="use method ia3 or lora")
    for flag in _BIAS_FLAGS.values():
        setattr(config, flag, True)
