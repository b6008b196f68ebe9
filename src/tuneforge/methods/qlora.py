"""QLoRA: LoRA adapters over a base quantized to 4 bits (NF4 or FP4, optionally double-quantized) or 8 bits as it
loads, through bitsandbytes and PEFT. bitsandbytes (>= 0.48) quantizes and trains on the CPU as well as on CUDA:
on a CPU the win is memory (the frozen base takes about a quarter of its float16 size in 4 bits), not speed.

The adapter is a normal LoRA adapter; its folder also names how the base was quantized (BASE_QUANTIZATION), so
chat, eval and export rebuild that base, dequantized, and see the model that trained rather than the unquantized
original plus the adapter (which differs by the quantization error).

`init: loftq` (LoftQ, Li et al. 2023) starts the adapter as the best rank-r approximation of the quantization error
W − Q(W), so quantized base + adapter ≈ the original weights before any step. It is the one-step form that PEFT's
`replace_lora_weights_loftq` computes for a base already quantized as it loaded: the base stays exactly what
bitsandbytes makes of the original weights, so the rebuilt base is the one the adapter trained on, and the adapter
is saved as trained (not converted like PiSSA's). PEFT's alternating form (`init_lora_weights="loftq"`,
`loftq_iter` > 1) re-quantizes W − AB, a changed base that would have to be saved with every run. tuneforge fits
the start itself because PEFT 0.21 runs both forms on CUDA or XPU only (`compute_device = "cuda"` in
peft/utils/loftq_utils.py; its LoraConfig also demands scipy for "loftq") and sets B·A to the error without dividing
by the LoRA scaling alpha/r: with tuneforge's default alpha = 2r such a start is exactly as far from W as the bare
4-bit base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.methods.lora import LoraMethod, LoraParams
from tuneforge.utils.errors import ConfigError, ModelError


class QloraParams(LoraParams):
    bits: Literal[4, 8] = Field(4, description="bits per frozen base weight")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (NF4: normal-float, for weights)")
    double_quant: bool = Field(True, description="quantize the quantization constants too (saves ~0.4 bit/weight)")

    @field_validator("init")
    @classmethod
    def _init_fits_method(cls, v):  # replaces LoRA's check, which refuses loftq
        if v in ("pissa", "olora"):
            raise ValueError(f"init={v} decomposes the base weights, which a quantized base does not keep; use "
                             f"method.type=lora with init={v}, or init=default (or loftq)")
        return v

    @model_validator(mode="after")
    def _loftq_setting(self):
        if self.init == "loftq" and self.bits != 4:
            raise ValueError("init=loftq fits the error of a 4-bit base: set bits=4, or init=default")
        if self.init == "loftq" and self.use_dora:
            raise ValueError("init=loftq with use_dora: DoRA's magnitudes are taken from the base before the start "
                             "is fitted, so the start would be lost; set use_dora=false, or init=default")
        return self


class QloraMethod(LoraMethod):
    name = "qlora"
    description = ("LoRA over a base quantized to 4 or 8 bits as it loads (bitsandbytes): its frozen weights take a "
                   "quarter")
    Params = QloraParams
    requires = ("bitsandbytes",)

    def load_kwargs(self, params, *, compute_dtype: str) -> dict:
        import torch
        from transformers import BitsAndBytesConfig

        if params.bits == 8:
            return {"quantization": BitsAndBytesConfig(load_in_8bit=True)}
        return {"quantization": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=params.quant_type, bnb_4bit_use_double_quant=params.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype))}

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        from peft import prepare_model_for_kbit_training

        # Norms and the output layer in float32, inputs that carry gradients into the adapters; checkpointing is
        # the Trainer's to decide (train.gradient_checkpointing).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return super().apply(model, params, total_steps=total_steps, tok=tok)

    def save(self, trainer, final_dir) -> None:
        """The LoRA adapter, and how its base was quantized (models.load.BASE_QUANTIZATION): loading the adapter
        anywhere rebuilds the base it trained on."""
        from tuneforge.models.load import BASE_QUANTIZATION

        super().save(trainer, final_dir)
        if not trainer.args.should_save:  # another rank of a multi-process run writes the folder
            return
        config = trainer.accelerator.unwrap_model(trainer.model).get_base_model().config.quantization_config
        settings = config if isinstance(config, dict) else config.to_dict()
        (Path(final_dir) / BASE_QUANTIZATION).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    def initialise(self, peft_model, params, tok) -> None:
        if params.init == "loftq":
            fit_loftq_start(peft_model)

    def base_bytes_per_weight(self, params) -> float | None:
        """4 bits (+ the 8-bit constants per 64-weight block, or ~0.13 bit double-quantized); 8 bits."""
        return 1.0 if params.bits == 8 else (4 + (0.127 if params.double_quant else 0.5)) / 8


def fit_loftq_start(peft_model) -> int:
    """Set every 4-bit LoRA layer's adapter to the rank-r truncated SVD of its quantization error W − Q(W), divided
    by the LoRA scaling, so that Q(W) + scaling·B·A ≈ W. W is read back from the safetensors files the base loaded
    from (a quantized model no longer holds it), one matrix at a time. Returns the number of layers fitted."""
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from bitsandbytes.nn import Linear4bit

    model = peft_model.get_base_model()
    original = _checkpoint_reader(model)
    fitted = 0
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if not isinstance(base, Linear4bit) or not hasattr(module, "lora_A"):
            continue
        quantized = dequantize_4bit(base.weight.data, base.weight.quant_state).float()
        error = original(f"{name}.weight").to(quantized.device, torch.float32) - quantized
        u, s, vh = torch.linalg.svd(error, full_matrices=False)
        for adapter, lora_a in module.lora_A.items():
            r = module.r[adapter]
            root = s[:r].sqrt()
            lora_a.weight.data = (root[:, None] * vh[:r]).to(lora_a.weight.dtype)
            lora_b = module.lora_B[adapter].weight
            lora_b.data = (u[:, :r] * root / module.scaling[adapter]).to(lora_b.dtype)
        fitted += 1
    if not fitted:
        raise ConfigError("method.init=loftq found no 4-bit layer with an adapter to fit",
                          hint="check method.target_modules, or set method.init=default")
    return fitted


def _checkpoint_reader(model):
    """`read(key)`: one unquantized tensor of the checkpoint `model` was loaded from (a folder, or a hub id already
    in the local cache), by its name in the model's state dict."""
    from safetensors import safe_open

    folder = Path(model.config.name_or_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(folder), local_files_only=True))
    index = folder / "model.safetensors.index.json"
    files = json.loads(index.read_text())["weight_map"] if index.is_file() else None
    if files is None and not (folder / "model.safetensors").is_file():
        raise ModelError(f"method.init=loftq reads the original weights from {folder}/model.safetensors, which is "
                         f"missing", hint="convert the model to safetensors, or set method.init=default")
    prefix = f"{model.base_model_prefix}."

    def read(key: str):
        for name in (key, key.removeprefix(prefix)):  # the prefix is absent when the bare backbone was saved
            if files is not None and name not in files:
                continue
            with safe_open(str(folder / (files[name] if files else "model.safetensors")), framework="pt") as f:
                if name in f.keys():
                    return f.get_tensor(name)
        raise ModelError(f"method.init=loftq: {key} is not in the checkpoint at {folder}",
                         hint="set method.init=default")

    return read
