"""Training methods: which parameters train and how. `apply_method(model, method_section) -> model`."""

from __future__ import annotations

from tuneforge.methods.base import ParamCount, count_parameters
from tuneforge.methods.freeze import apply_freeze
from tuneforge.methods.full import apply_full
from tuneforge.methods.lora import apply_lora

_APPLY = {"full": apply_full, "freeze": apply_freeze, "lora": apply_lora}


def apply_method(model, method):
    """Apply `method.type` with its own parameter section (method.lora / method.freeze)."""
    params = getattr(method, method.type, None)
    return _APPLY[method.type](model, params)


__all__ = ["apply_method", "count_parameters", "ParamCount"]
