"""Freeze tuning: train only the last (or first) N decoder layers, or modules matching name patterns."""

from __future__ import annotations

import fnmatch
import re

from pydantic import Field

from tuneforge.methods.base import Method, MethodParams, is_reward_model
from tuneforge.utils.errors import ConfigError

_LAYER = re.compile(r"\.layers\.(\d+)\.")


class FreezeParams(MethodParams):
    trainable_layers: int = Field(2, description="train the last N decoder layers (negative: the first N)")
    trainable_modules: list[str] | None = Field(None, description="name patterns to train instead of layers")
    train_embeddings: bool = Field(False, description="also train the token embeddings")


def _num_layers(model) -> int:
    ids = {int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER.search(n))}
    if not ids:
        raise ConfigError("method.freeze: cannot find numbered decoder layers ('.layers.N.') in this model",
                          hint="use method.trainable_modules with name patterns instead")
    return max(ids) + 1


def trainable_names(model, params) -> list[str]:
    """Names of the parameters that stay trainable under the freeze settings."""
    names = [n for n, _ in model.named_parameters()]
    if params.trainable_modules:
        pats = [p if any(c in p for c in "*?[") else f"*{p}*" for p in params.trainable_modules]
        keep = [n for n in names if any(fnmatch.fnmatch(n, p) for p in pats)]
        if not keep:
            raise ConfigError(f"method.trainable_modules {params.trainable_modules} match no parameter",
                              hint=f"parameter names look like: {names[:3]}")
    else:
        total = _num_layers(model)
        k = params.trainable_layers
        if k == 0 or abs(k) > total:
            raise ConfigError(f"method.trainable_layers={k} but the model has {total} layers",
                              hint=f"use 1..{total} (last N) or -1..-{total} (first N)")
        layers = set(range(total - k, total)) if k > 0 else set(range(-k))
        keep = [n for n in names if (m := _LAYER.search(n)) and int(m.group(1)) in layers]
    if params.train_embeddings:
        keep += [n for n in names if "embed_tokens" in n or "lm_head" in n]
    if is_reward_model(model):
        keep += [n for n in names if n.startswith("score.")]  # a reward model's new head always trains
    return sorted(set(keep))


class FreezeMethod(Method):
    name = "freeze"
    description = "the last (or first) N decoder layers, or modules matching name patterns, train; the rest is frozen"
    Params = FreezeParams
    base_lr = 5e-5

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        keep = set(trainable_names(model, params))
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        return model

    def estimate_trainable(self, shape, params) -> int:
        n = min(abs(params.trainable_layers), shape.n_layers) * shape.layer_params
        return n + (shape.vocab * shape.hidden if params.train_embeddings else 0)
