"""What every training method reports: trainable vs total parameters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ParamCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable params {self.trainable:,} / {self.total:,} ({self.percent:.3f}%)"


def count_parameters(model) -> ParamCount:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParamCount(trainable, total)
