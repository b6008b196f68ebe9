"""QLoRA: LoRA adapters over a base quantized to 4 bits (NF4 or FP4, optionally double-quantized) or 8 bits as it
loads, through bitsandbytes and PEFT. bitsandbytes (>= 0.48) quantizes and trains on the CPU as well as on CUDA:
on a CPU the win is memory (the frozen base takes about a quarter of its float16 size in 4 bits), not speed.

The adapter is a normal LoRA adapter. Merging it (export, or a next stage starting from the run) loads the base
unquantized and merges into that, so the merged model differs from the quantized training-time model by the
quantization error of the base."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tuneforge.methods.lora import LoraMethod, LoraParams


class QloraParams(LoraParams):
    bits: Literal[4, 8] = Field(4, description="bits per frozen base weight")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (NF4: normal-float, for weights)")
    double_quant: bool = Field(True, description="quantize the quantization constants too (saves ~0.4 bit/weight)")

    @field_validator("init")
    @classmethod
    def _not_on_quantized_weights(cls, v):
        if v in ("pissa", "olora"):
            raise ValueError(f"init={v} decomposes the base weights, which a quantized base does not keep; use "
                             f"method.type=lora with init={v}, or init=default")
        return v


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

    def base_bytes_per_weight(self, params) -> float | None:
        """4 bits (+ the 8-bit constants per 64-weight block, or ~0.13 bit double-quantized); 8 bits."""
        return 1.0 if params.bits == 8 else (4 + (0.127 if params.double_quant else 0.5)) / 8
