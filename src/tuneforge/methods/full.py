"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from tuneforge.methods.base import Method


class FullMethod(Method):
    name = "full"
    description = "every weight trains; the result is a whole model"
    base_lr = 2e-5

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def estimate_trainable(self, shape, params) -> int:
        return shape.n_params
