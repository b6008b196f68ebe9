"""What every PEFT-backed method shares: wrap the model with the method's PeftConfig, keep trainable weights in
float32, and turn PEFT's target-module errors into ours. The methods themselves are rows: a Params model and a
`peft_config` function (lora.py, adalora.py, ia3.py, prompt.py)."""

from __future__ import annotations

from tuneforge.methods.base import Method, is_reward_model
from tuneforge.utils.errors import ConfigError


class PeftMethod(Method):
    """A method that trains a PEFT adapter over a frozen base; the artifact is the adapter folder."""

    artifact = "adapter"
    frozen_base = True

    def peft_config(self, params, task_type, total_steps: int):
        raise NotImplementedError

    def fit_to_model(self, params, model):
        """The parameters, completed from the model where PEFT needs more than the user gave (LoRA: the linear
        module names behind 'all-linear' when only some layers get adapters)."""
        return params

    def initialise(self, peft_model, params, tok) -> None:
        """Set initial adapter weights after wrapping (prompt tuning from text); PEFT's own init otherwise."""

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        """Wrap `model` with the adapter. The base may be in half precision (see models.load.resolve_load_dtype);
        every trainable weight (adapters, DoRA magnitudes, virtual tokens, modules_to_save copies) is kept in float32,
        which mixed-precision training needs (fp16 gradient scaling refuses half-precision parameters). A reward
        model gets PEFT's SEQ_CLS task, whose score head trains in full."""
        from peft import TaskType, get_peft_model

        task = TaskType.SEQ_CLS if is_reward_model(model) else TaskType.CAUSAL_LM
        try:
            peft_model = get_peft_model(model, self.peft_config(self.fit_to_model(params, model), task, total_steps))
        except ValueError as err:
            targets = getattr(params, "target_modules", None)
            names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
            raise ConfigError(f"method {self.name}: {err}" + (f" (target_modules={targets!r})" if targets else ""),
                              hint=f"module names in this model: {', '.join(names[:20])}") from err
        self.initialise(peft_model, params, tok)
        trainable_in_float32(peft_model)
        return peft_model


def trainable_in_float32(model) -> None:
    import torch

    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
