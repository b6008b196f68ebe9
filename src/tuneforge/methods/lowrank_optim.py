"""GaLore and APOLLO: every weight trains (like `full`), but the optimizer keeps its state for the target linear
layers in a low-rank projection of their gradients, refreshed every `update_interval` steps, which cuts the
optimizer's memory. Both come through the transformers optimizer integration (galore-torch, apollo-torch)."""

from __future__ import annotations

import copy
from typing import Literal, Union

from pydantic import Field

from tuneforge.methods.base import MethodParams
from tuneforge.methods.full import FullMethod


class GaloreParams(MethodParams):
    target_modules: Union[str, list[str]] = Field(
        "all-linear", description="linear layers whose optimizer state is projected: 'all-linear', names or a regex")
    rank: int = Field(128, ge=1, description="rank of the gradient projection")
    update_interval: int = Field(200, ge=1, description="steps between refreshing the projection")
    scale: float = Field(0.25, gt=0, description="scale of the projected update")


class ApolloParams(GaloreParams):
    rank: int = Field(256, ge=1, description="rank of the random projection (1: APOLLO-Mini)")
    scale: float = Field(1.0, gt=0, description="scale of the update")
    scale_type: Literal["channel", "tensor"] = Field("channel", description="scaling factors per channel or tensor")


class GaloreMethod(FullMethod):
    name = "galore"
    description = "every weight trains; the optimizer state of linear layers is kept in a low-rank projection (GaLore)"
    Params = GaloreParams
    requires = ("galore_torch",)
    optim = "galore_adamw"

    def optim_args(self, params) -> str:
        return f"rank={params.rank},update_proj_gap={params.update_interval},scale={params.scale}"

    def optimizer(self, model, args, params):
        from transformers import Trainer

        low_rank = copy.copy(args)  # the run's rates and betas, with this optimizer
        low_rank.optim, low_rank.optim_target_modules = self.optim, params.target_modules
        low_rank.optim_args = self.optim_args(params)
        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(low_rank, model)
        groups = kwargs.pop("params")
        groups[0]["params"] = [p for p in groups[0]["params"] if p.requires_grad]
        return cls(groups, **kwargs)


class ApolloMethod(GaloreMethod):
    name = "apollo"
    description = "every weight trains; AdamW-like updates scaled from a random low-rank projection (APOLLO)"
    Params = ApolloParams
    requires = ("apollo_torch",)
    optim = "apollo_adamw"

    def optim_args(self, params) -> str:
        return (f"rank={params.rank},update_proj_gap={params.update_interval},scale={params.scale},"
                f"scale_type={params.scale_type},proj=random")
