"""LLaMA Pro block expansion: copy N decoder blocks, insert each copy after the block it copies (spread evenly
through the stack), zero the copies' output projections so each new block starts as the identity (its attention and
MLP add nothing to the residual stream), and train only the new blocks. The model keeps everything it knew at the
first step and learns in the added capacity; the result is a whole model with more layers, which transformers
loads like any other (its config says how many layers it has)."""

from __future__ import annotations

import copy

from pydantic import Field

from tuneforge.methods.base import Method, MethodParams
from tuneforge.utils.errors import ConfigError

# The projections that write a block's attention and MLP results into the residual stream (llama naming).
_OUTPUTS = ("o_proj", "down_proj")


class LlamaProParams(MethodParams):
    new_layers: int = Field(2, ge=1, description="decoder blocks to add (copies of evenly spaced existing blocks)")
    train_norms: bool = Field(False, description="also train the final norm")


class LlamaProMethod(Method):
    name = "llama_pro"
    description = "new identity-initialised decoder blocks are inserted and only they train (LLaMA Pro expansion)"
    Params = LlamaProParams
    base_lr = 1e-4

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        new = expand(model, params.new_layers)
        for p in model.parameters():
            p.requires_grad_(False)
        for block in new:
            block.requires_grad_(True)
        if params.train_norms:
            model.get_decoder().norm.requires_grad_(True)
        return model

    def estimate_trainable(self, shape, params) -> int:
        return params.new_layers * shape.layer_params


def expand(model, k: int) -> list:
    """Insert `k` identity copies into the decoder stack; returns the new blocks."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    n = len(layers) if layers is not None else 0
    if not n or k > n:
        raise ConfigError(f"method llama_pro: new_layers={k}, but the model has {n} decoder layers to copy",
                          hint=f"use 1..{n}" if n else "llama_pro needs a decoder with a `layers` list")
    every = n // k
    stack, new = [], []
    for i, block in enumerate(layers):
        stack.append(block)
        if (i + 1) % every == 0 and len(new) < k:
            twin = copy.deepcopy(block)
            _zero_outputs(twin)
            stack.append(twin)
            new.append(twin)
    decoder.layers = type(layers)(stack)
    _renumber(model, [i for i, b in enumerate(stack) if b in new], n)
    return new


def _zero_outputs(block) -> None:
    zeroed = 0
    for name, module in block.named_modules():
        if name.rsplit(".", 1)[-1] in _OUTPUTS:
            module.weight.data.zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.data.zero_()
            zeroed += 1
    if zeroed != len(_OUTPUTS):
        raise ConfigError("method llama_pro: this architecture's blocks have no o_proj/down_proj to start the new "
                          "blocks as identities", hint="use a llama-family model, or method freeze / lora")


def _renumber(model, new_positions: list[int], old_count: int) -> None:
    """Layer indices (KV-cache slots) and the config's layer count and per-layer lists follow the new stack."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for i, block in enumerate(model.get_decoder().layers):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) == old_count:
        expanded = list(types)
        for pos in new_positions:
            expanded.insert(pos, expanded[pos - 1])
        config.layer_types = expanded
    config.num_hidden_layers = old_count + len(new_positions)
