"""The Method plug-in: which parameters train and how, what the run saves, and whether that merges into the base.

A method is one subclass of `Method`, registered in `tuneforge.methods.METHODS`. The runner knows no method by name:
it asks the configured method for the load dtype policy (`frozen_base`), to apply itself to the loaded model, for an
optimizer (LoRA+ parameter groups) and callbacks (AdaLoRA's rank allocation), and what its artifact is called.
Which stages, devices and launch modes a method works with is data: `tuneforge.config.compat`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tuneforge.config.schema import params_error
from tuneforge.utils.errors import ConfigError


class MethodParams(BaseModel):
    """A method's own parameters, written beside `type` under `method:` (`method: {type: ia3}`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    """Trainable and total parameters; a PEFT model counts its adapters (and virtual tokens) too."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return ParamCount(int(trainable), int(total))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParamCount(trainable, total)


def is_reward_model(model) -> bool:
    """A sequence-classification model (a reward model's scalar head) rather than a causal LM."""
    return type(model).__name__.endswith("ForSequenceClassification")


class Method:
    """Base class of a training method. Subclasses set the class attributes and implement `apply`."""

    name: ClassVar[str]
    description: ClassVar[str]  # what trains, in one sentence
    Params: ClassVar[type[MethodParams]] = MethodParams
    artifact: ClassVar[str] = "model"  # "adapter": a PEFT folder applied on the base; "model": full weights
    frozen_base: ClassVar[bool] = False  # base weights never change (on a GPU they may load in half precision)
    mergeable: ClassVar[bool] = True  # an adapter can be merged into its base (export merge, chaining runs)
    base_lr: ClassVar[float] = 2e-5  # the auto learning rate at batch size 8
    requires: ClassVar[tuple[str, ...]] = ()  # importable packages the method needs (checked before any load)

    def params(self, section) -> MethodParams:
        """Validate the keys written beside `type` under `method:`; unknown keys get "did you mean"."""
        raw = section if isinstance(section, dict) else dict(getattr(section, "model_extra", None) or {})
        try:
            return self.Params(**raw)
        except ValidationError as err:
            raise ConfigError(params_error(err, "method", f"method {self.name}", self.Params.model_fields)) from None

    def load_kwargs(self, params: MethodParams, *, compute_dtype: str) -> dict:
        """Extra arguments for loading the base (QLoRA: its quantization config); `compute_dtype`: the dtype the
        base would load in otherwise."""
        return {}

    def apply(self, model, params: MethodParams, *, total_steps: int = 0, tok=None):
        """Make the intended parameters trainable (or wrap the model with an adapter); returns the model to train.
        `total_steps`: the run's optimizer steps (AdaLoRA schedules its rank budget over them); `tok`: the
        tokenizer (prompt tuning initialises its virtual tokens from text)."""
        raise NotImplementedError

    def save(self, trainer, final_dir) -> None:
        """Write the final artifact (the Trainer's save: adapter or model, with accelerate unwrapping)."""
        trainer.save_model(str(final_dir))

    def optimizer(self, model, args, params: MethodParams):
        """An optimizer of the method's own (parameter groups with their own rates), or None: the Trainer's."""
        return None

    def callbacks(self, params: MethodParams) -> list:
        """TrainerCallbacks the method needs during training."""
        return []

    def base_bytes_per_weight(self, params: MethodParams) -> float | None:
        """Bytes per frozen base weight when the method stores them its own way (QLoRA); None: the dtype's."""
        return None

    def estimate_trainable(self, shape, params: MethodParams) -> int:
        """Trainable parameters from the model's shape (tuneforge.models.memory.ModelShape), without weights."""
        return 0
