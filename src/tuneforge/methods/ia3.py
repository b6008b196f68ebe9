"""IA³ through PEFT: learned vectors that rescale the keys, values and feed-forward activations (far fewer trained
parameters than LoRA); mergeable into the base."""

from __future__ import annotations

from pydantic import Field

from tuneforge.methods.base import MethodParams
from tuneforge.methods.peft_base import PeftMethod


class Ia3Params(MethodParams):
    target_modules: list[str] | str | None = Field(
        None, description="modules whose outputs (or inputs, for feed-forward ones) are rescaled; null: PEFT's "
                          "choice for the architecture (llama: k_proj, v_proj, down_proj)")
    feedforward_modules: list[str] | str | None = Field(
        None, description="which of target_modules are feed-forward (scaled on their input); null: PEFT's choice")
    modules_to_save: list[str] | None = Field(None, description="modules trained fully beside the vectors")


class Ia3Method(PeftMethod):
    name = "ia3"
    description = "learned vectors rescale keys, values and feed-forward activations (IA3); tiny and mergeable"
    Params = Ia3Params
    base_lr = 3e-3

    def peft_config(self, params, task_type, total_steps: int):
        from peft import IA3Config

        return IA3Config(task_type=task_type, target_modules=params.target_modules,
                         feedforward_modules=params.feedforward_modules, modules_to_save=params.modules_to_save)

    def estimate_trainable(self, shape, params) -> int:
        return shape.n_layers * (2 * shape.kv_dim + shape.intermediate)
