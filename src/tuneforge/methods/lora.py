"""LoRA and its family through PEFT: rsLoRA scaling, DoRA (`dora` is LoRA with use_dora on), LoRA+ (the B matrices
learn `lr_ratio` times faster, through optimizer parameter groups), layer / module selection and the adapter's start
(`init`: zero B, gaussian, PiSSA, OLoRA, and LoftQ for QLoRA — fitted in methods/qlora.py, where the quantized base
is)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal, Union

from pydantic import Field, field_validator

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
    init: Literal["default", "gaussian", "pissa", "olora", "loftq"] = Field(
        "default", description="adapter start: default (B = 0), gaussian, pissa (the weights' principal singular "
                               "vectors), olora (a QR basis), or loftq (method qlora only: the adapter starts as the "
                               "rank-r part of the 4-bit rounding error, so quantized base + adapter ≈ the original "
                               "weights); pissa/olora adapters are converted when saved so they apply to the "
                               "original base")

    @field_validator("init")
    @classmethod
    def _init_fits_method(cls, v):
        if v == "loftq":
            raise ValueError("init=loftq fits the adapter to the rounding error of a 4-bit base, and this method "
                             "trains over the unquantized one: use method.type=qlora with init=loftq")
        return v


class LoraMethod(PeftMethod):
    name = "lora"
    description = "low-rank adapters beside the frozen linear layers (rsLoRA, DoRA, LoRA+ options)"
    Params = LoraParams
    base_lr = 2e-4

    def peft_config(self, params, task_type, total_steps: int):
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, **lora_kwargs(params))

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        peft_model = super().apply(model, params, total_steps=total_steps, tok=tok)
        if params.init in _CONVERTED:  # keep the starting adapter: saving converts against it
            config = peft_model.peft_config[peft_model.active_adapter]
            config.init_lora_weights = True  # reloading the saved start must not run the SVD/QR again
            start = Path(tempfile.mkdtemp(prefix="tuneforge-lora-init-"))
            peft_model.save_pretrained(str(start))
            peft_model.tuneforge_initial_adapter = str(start)
        return peft_model

    def save(self, trainer, final_dir: Path) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        start = getattr(model, "tuneforge_initial_adapter", None)
        if start is None:
            return super().save(trainer, final_dir)
        # ΔW of a PiSSA/OLoRA adapter is relative to a base it modified in place; converted (rank 2r) it applies to
        # the original base, which is what every other command loads. Each process made its own start folder; only
        # the one that saves (rank 0) writes the adapter.
        if trainer.args.should_save:
            model.save_pretrained(str(final_dir), path_initial_model_for_weight_conversion=start)
        shutil.rmtree(start, ignore_errors=True)

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


_CONVERTED = ("pissa", "olora")  # initialisations that change the base weights: the adapter is converted at save
# → PEFT's init_lora_weights; loftq starts from PEFT's default and QLoRA fits it (see methods/qlora.py for why not
# PEFT's own "loftq")
_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora", "loftq": True}


def lora_kwargs(params) -> dict:
    """The LoraConfig arguments of LoRA, QLoRA and DoRA."""
    init = {"init_lora_weights": _INIT[params.init]} if hasattr(params, "init") else {}
    return dict(**init, r=params.r, lora_alpha=params.alpha if params.alpha is not None else 2 * params.r,
                lora_dropout=params.dropout, target_modules=params.target_modules, use_rslora=params.use_rslora,
                use_dora=params.use_dora, modules_to_save=params.modules_to_save,
                layers_to_transform=params.layers_to_transform, bias="none")
