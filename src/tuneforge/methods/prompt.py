"""Prompt-based methods through PEFT: trained virtual tokens instead of changed weights. None of them merges into
the base: their artifact is always an adapter folder, loaded by chat, generate, eval and serve.

- `prompt`: prompt tuning, virtual token embeddings before the input (optionally initialised from a text);
- `ptuning`: P-tuning, virtual tokens produced by a small encoder (MLP or LSTM);
- `prefix`: prefix tuning, trained keys and values on every layer, reparameterised through an MLP while training;
- `ptuning_v2`: P-tuning v2, deep prompts on every layer, trained directly (prefix tuning without the MLP).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.methods.base import MethodParams
from tuneforge.methods.peft_base import PeftMethod
from tuneforge.utils.errors import ConfigError


class PromptParams(MethodParams):
    num_virtual_tokens: int = Field(20, ge=1, description="trained tokens put before every input")
    init_text: str | None = Field(None, description="start the virtual tokens from this text's embeddings "
                                                    "(repeated to length); null: random vocabulary embeddings")


class PromptTuning(PeftMethod):
    name = "prompt"
    description = "trained virtual token embeddings before the input (prompt tuning); the fewest trained parameters"
    Params = PromptParams
    base_lr = 3e-2
    mergeable = False

    def peft_config(self, params, task_type, total_steps: int):
        from peft import PromptTuningConfig, PromptTuningInit

        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=params.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)

    def initialise(self, peft_model, params, tok) -> None:
        if not params.init_text:
            return
        if tok is None:
            raise ConfigError("method prompt: init_text needs the tokenizer")
        import torch

        ids = tok(params.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError("method.init_text encodes to no tokens", hint="give a few words describing the task")
        n = params.num_virtual_tokens
        ids = (ids * (n // len(ids) + 1))[:n]
        embed = peft_model.get_input_embeddings()
        encoder = peft_model.prompt_encoder[peft_model.active_adapter].embedding
        with torch.no_grad():
            encoder.weight.copy_(embed(torch.tensor(ids, device=embed.weight.device)).to(encoder.weight.dtype))

    def estimate_trainable(self, shape, params) -> int:
        return params.num_virtual_tokens * shape.hidden


class PtuningParams(MethodParams):
    num_virtual_tokens: int = Field(20, ge=1, description="trained tokens put before every input")
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="the prompt encoder that produces the tokens")
    encoder_hidden_size: int | None = Field(None, ge=1, description="its hidden size; null: the model's")
    encoder_num_layers: int = Field(2, ge=1, description="layers of the prompt encoder")
    encoder_dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the prompt encoder")


class Ptuning(PeftMethod):
    name = "ptuning"
    description = "virtual tokens produced by a small trained encoder (P-tuning, MLP or LSTM) before the input"
    Params = PtuningParams
    base_lr = 1e-3
    mergeable = False

    def peft_config(self, params, task_type, total_steps: int):
        from peft import PromptEncoderConfig

        return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=params.num_virtual_tokens,
                                   encoder_reparameterization_type=params.encoder.upper(),
                                   encoder_hidden_size=params.encoder_hidden_size,
                                   encoder_num_layers=params.encoder_num_layers,
                                   encoder_dropout=params.encoder_dropout)

    def estimate_trainable(self, shape, params) -> int:
        h, e = shape.hidden, params.encoder_hidden_size or shape.hidden
        return params.num_virtual_tokens * h + 2 * h * e + e * e


class PrefixParams(MethodParams):
    num_virtual_tokens: int = Field(20, ge=1, description="trained key/value positions on every layer")
    encoder_hidden_size: int | None = Field(None, ge=1, description="hidden size of the reparameterising MLP; "
                                                                    "null: the model's")


class PrefixTuning(PeftMethod):
    name = "prefix"
    description = "trained keys and values on every layer, through an MLP while training (prefix tuning)"
    Params = PrefixParams
    base_lr = 1e-2
    mergeable = False
    projection = True

    def peft_config(self, params, task_type, total_steps: int):
        from peft import PrefixTuningConfig

        kwargs = {"encoder_hidden_size": params.encoder_hidden_size} if self.projection else {}
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=params.num_virtual_tokens,
                                  prefix_projection=self.projection, **kwargs)

    def estimate_trainable(self, shape, params) -> int:
        kv = params.num_virtual_tokens * shape.n_layers * 2 * shape.kv_dim
        if not self.projection:
            return kv
        e = getattr(params, "encoder_hidden_size", None) or shape.hidden
        return params.num_virtual_tokens * shape.hidden + shape.hidden * e + e * shape.n_layers * 2 * shape.kv_dim


class DeepPromptParams(MethodParams):
    num_virtual_tokens: int = Field(20, ge=1, description="trained key/value positions on every layer")


class PtuningV2(PrefixTuning):
    name = "ptuning_v2"
    description = "deep prompts: trained keys and values on every layer, directly (P-tuning v2)"
    Params = DeepPromptParams
    projection = False
