"""Full fine-tuning: every parameter trains."""

from __future__ import annotations


def apply_full(model, params=None):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
