"""LoRA and its family through PEFT: rsLoRA scaling, DoRA (`dora` is LoRA with use_dora on), LoRA+ (the B matrices
learn `lr_ratio` times faster, through optimizer parameter groups) and layer / module selection."""

from __future__ import annotations

from typing import Union

from pydantic import Field

from tuneforge.methods.base import MethodParams
from tuneforge.methods.peft_base import PeftMethod


class LoraParams(MethodParams):
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: float | None = Field(None, description="scaling numerator; default 2*r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: Union[str, list[str]] = Field(
        "all-linear", description="'all-linear', module names (q_proj, v_proj, ...), or one regular expression "
                                  "matched against full module names")
    layers_to_transform: list[int] | None = Field(None, description="only these decoder layer indices get adapters")
    use_rslora: bool = Field(False, description="rank-stabilized scaling alpha/sqrt(r)")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA): a trained magnitude per output")
    modules_to_save: list[str] | None = Field(None, description="modules trained fully beside the adapter")
    lr_ratio: float | None = Field(None, ge=1, description="LoRA+: the B matrices learn this many times faster than "
                                                           "A (the paper suggests 16); null: plain LoRA")


class LoraMethod(PeftMethod):
    name = "lora"
    description = "low-rank adapters beside the frozen linear layers (rsLoRA, DoRA, LoRA+ options)"
    Params = LoraParams
    base_lr = 2e-4

    def peft_config(self, params, task_type, total_steps: int):
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, **lora_kwargs(params))

    def fit_to_model(self, params, model):
        if not params.layers_to_transform or params.target_modules != "all-linear":
            return params
        import torch

        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and ".layers." in n})
        return params.model_copy(update={"target_modules": names})  # PEFT takes layer indices with names only

    def optimizer(self, model, args, params):
        if not params.lr_ratio:
            return None
        from peft.optimizers import create_loraplus_optimizer
        from transformers import Trainer

        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        kwargs.pop("lr", None)
        return create_loraplus_optimizer(model, cls, lr=args.learning_rate, loraplus_lr_ratio=params.lr_ratio,
                                         weight_decay=args.weight_decay, **kwargs)

    def estimate_trainable(self, shape, params) -> int:
        from tuneforge.models.memory import TrainSetting, trainable_params

        targets = params.target_modules if isinstance(params.target_modules, str) else tuple(params.target_modules)
        n = trainable_params(shape, TrainSetting(method="lora", lora_r=params.r, lora_targets=targets))
        if params.layers_to_transform:
            n = n * len(params.layers_to_transform) // max(shape.n_layers, 1)
        return n


class DoraParams(LoraParams):
    use_dora: bool = Field(True, description="weight-decomposed LoRA (DoRA): a trained magnitude per output")


class DoraMethod(LoraMethod):
    name = "dora"
    description = "LoRA with a trained magnitude per output channel (weight-decomposed); slower steps than LoRA"
    Params = DoraParams


def lora_kwargs(params) -> dict:
    """The LoraConfig arguments shared by LoRA, DoRA and AdaLoRA."""
    return dict(r=params.r, lora_alpha=params.alpha if params.alpha is not None else 2 * params.r,
                lora_dropout=params.dropout, target_modules=params.target_modules, use_rslora=params.use_rslora,
                use_dora=params.use_dora, modules_to_save=params.modules_to_save,
                layers_to_transform=params.layers_to_transform, bias="none")
