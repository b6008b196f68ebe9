"""AdaLoRA through PEFT: LoRA whose rank budget is reallocated during training, from `init_r` per module down to
an average of `target_r`, by importance. The Trainer calls the allocation step after every optimizer step (the
callback below), and the schedule needs the run's total step count, which the runner passes in."""

from __future__ import annotations

from typing import Union

from pydantic import Field
from transformers import TrainerCallback

from tuneforge.methods.base import MethodParams
from tuneforge.methods.peft_base import PeftMethod


class AdaLoraParams(MethodParams):
    init_r: int = Field(12, ge=1, description="rank every module starts with")
    target_r: int = Field(8, ge=1, description="average rank the budget shrinks to")
    alpha: float | None = Field(None, description="scaling numerator; default 2*target_r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: Union[str, list[str]] = Field("all-linear", description="'all-linear' or module names")
    tinit: float = Field(0.1, ge=0, description="steps before pruning starts (a number < 1: share of the run)")
    tfinal: float = Field(0.2, ge=0, description="steps at the end with the ranks fixed (a number < 1: share)")
    delta_t: int = Field(1, ge=1, description="reallocate the budget every N steps")
    beta1: float = Field(0.85, gt=0, lt=1, description="EMA factor of the importance (sensitivity)")
    beta2: float = Field(0.85, gt=0, lt=1, description="EMA factor of its uncertainty")
    orth_reg_weight: float = Field(0.5, ge=0, description="weight of the orthogonality regulariser of P and Q")


def _steps(value: float, total: int) -> int:
    return int(round(value * total)) if value < 1 else int(value)


class AdaLoraMethod(PeftMethod):
    name = "adalora"
    description = "LoRA whose ranks are pruned during training to where they matter most (an adaptive budget)"
    Params = AdaLoraParams
    base_lr = 5e-4

    def peft_config(self, params, task_type, total_steps: int):
        from peft import AdaLoraConfig

        from tuneforge.utils.errors import ConfigError

        tinit, tfinal = _steps(params.tinit, total_steps), _steps(params.tfinal, total_steps)
        if total_steps <= 0 or tinit + tfinal >= total_steps:
            raise ConfigError(f"method adalora: tinit ({tinit}) + tfinal ({tfinal}) steps leave no steps to prune "
                              f"ranks in a run of {total_steps} steps",
                              hint="lower method.tinit / method.tfinal (shares of the run when < 1), or train longer")
        return AdaLoraConfig(task_type=task_type, init_r=params.init_r, target_r=params.target_r,
                             lora_alpha=params.alpha if params.alpha is not None else 2 * params.target_r,
                             lora_dropout=params.dropout, target_modules=params.target_modules, tinit=tinit,
                             tfinal=tfinal, deltaT=params.delta_t, beta1=params.beta1, beta2=params.beta2,
                             orth_reg_weight=params.orth_reg_weight, total_step=total_steps)

    def callbacks(self, params) -> list:
        return [RankAllocation()]

    def estimate_trainable(self, shape, params) -> int:
        from tuneforge.models.memory import TrainSetting, trainable_params

        targets = params.target_modules if isinstance(params.target_modules, str) else tuple(params.target_modules)
        per_rank = trainable_params(shape, TrainSetting(method="lora", lora_r=1, lora_targets=targets))
        return per_rank * params.init_r + per_rank // max(shape.hidden, 1) * params.init_r  # + the E vectors


class RankAllocation(TrainerCallback):
    """AdaLoRA's budget step: after the optimizer step, while the gradients are still there."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        base = getattr(model, "base_model", None)
        if base is not None and hasattr(base, "update_and_allocate"):
            base.update_and_allocate(state.global_step)
