"""Adapter tuning (bottleneck adapters) and UniPELT (gated adapter + gated prefix + gated LoRA), on our own modules
(tuneforge.models.addons).

Why our own: PEFT has no bottleneck adapter, and the `adapters` library (AdapterHub), which has both, pins a
transformers release older than ours. The modules are small; the artifact is an adapter folder that chat,
generate, eval and serve load like a PEFT one. Neither merges into the base (a bottleneck has a nonlinearity)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.methods.base import Method, MethodParams

_PLACEMENT = {"houlsby": ("o_proj", "down_proj"), "pfeiffer": ("down_proj",)}
Activation = Literal["relu", "gelu", "silu", "tanh"]


class AdapterParams(MethodParams):
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="houlsby: an adapter after attention and after the MLP of every block; pfeiffer: "
                               "after the MLP only (half the adapters, usually as good)")
    reduction_factor: int = Field(16, ge=1, description="bottleneck width = the layer's width / this")
    activation: Activation = Field("relu", description="the bottleneck's nonlinearity")


class AdapterMethod(Method):
    name = "adapter"
    description = "small bottleneck layers after attention and MLP outputs train; the base is frozen (not mergeable)"
    Params = AdapterParams
    artifact = "adapter"
    frozen_base = True
    mergeable = False
    base_lr = 1e-3
    kind = "bottleneck"

    def settings(self, params) -> dict:
        return {"targets": list(_PLACEMENT[params.placement]), "reduction_factor": params.reduction_factor,
                "activation": params.activation}

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        from tuneforge.models import addons

        model.tuneforge_addon_settings = self.settings(params)  # what save() records
        addons.attach(model, self.kind, model.tuneforge_addon_settings)
        return model

    def save(self, trainer, final_dir) -> None:
        from tuneforge.models import addons

        model = trainer.accelerator.unwrap_model(trainer.model)
        addons.save(model, final_dir, self.kind, model.tuneforge_addon_settings)

    def estimate_trainable(self, shape, params) -> int:
        per_block = {"houlsby": 2, "pfeiffer": 1}[params.placement]
        size = max(1, shape.hidden // params.reduction_factor)
        return shape.n_layers * per_block * (2 * shape.hidden * size + size + shape.hidden)


class UnipeltParams(MethodParams):
    r: int = Field(8, ge=1, description="rank of the gated LoRA on the query and value projections")
    alpha: float = Field(16, description="LoRA scaling numerator (scale alpha / r)")
    lora_targets: list[str] = Field(["q_proj", "v_proj"], description="linear layers that get the gated LoRA")
    prefix_length: int = Field(10, ge=1, description="trained key/value positions per layer (gated prefix)")
    reduction_factor: int = Field(16, ge=1, description="gated bottleneck adapter after each MLP: width / this")
    activation: Activation = Field("relu", description="the bottleneck's nonlinearity")


class UnipeltMethod(AdapterMethod):
    name = "unipelt"
    description = "gated LoRA, gated prefix and a gated bottleneck adapter train together; each layer learns how " \
                  "much of each to use (not mergeable)"
    Params = UnipeltParams
    base_lr = 5e-4
    kind = "unipelt"

    def settings(self, params) -> dict:
        return {"r": params.r, "alpha": params.alpha, "lora_targets": list(params.lora_targets),
                "prefix_length": params.prefix_length, "adapter_targets": ["down_proj"],
                "reduction_factor": params.reduction_factor, "activation": params.activation}

    def estimate_trainable(self, shape, params) -> int:
        h, size = shape.hidden, max(1, shape.hidden // params.reduction_factor)
        shapes = shape.linear_shapes()
        lora = sum(params.r * (d_in + d_out) + d_in + 1 for d_in, d_out in
                   (shapes.get(t, (h, h)) for t in params.lora_targets))
        prefix = 2 * params.prefix_length * shape.kv_dim + shape.hidden + shape.n_heads
        adapter = 2 * h * size + size + h + h + 1
        return shape.n_layers * (lora + prefix + adapter)
