"""Per-device choices: which device is picked, whether the Trainer is forced onto the CPU, which dtype weights load in."""

from __future__ import annotations

import pytest
import torch

from tuneforge.config.auto import resolve_auto
from tuneforge.config.load import load_config
from tuneforge.methods import METHODS, get_method
from tuneforge.models.load import pick_device, resolve_load_dtype
from tuneforge.train.trainer import training_arguments
from tuneforge.utils.errors import ModelError


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_pick_device_prefers_cuda_then_mps(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto") == expected
    assert pick_device("cpu") == "cpu"  # an explicit device is kept


def _arguments(tmp_path, device: str):
    cfg = load_config(None, ["data.train=train.jsonl", "train.batch_size=2", "train.epochs=1", "train.learning_rate=1e-3",
                             f"output.dir={tmp_path / 'run'}"])
    resolved = resolve_auto(cfg.train, get_method(cfg.method), 8, device)
    return training_arguments(cfg, resolved, tmp_path, device, 8)


@pytest.mark.parametrize("device, forced_cpu", [("mps", False), ("cuda", False), ("cuda:1", False), ("cpu", True)])
def test_only_the_cpu_device_forces_the_trainer_onto_the_cpu(tmp_path, device, forced_cpu):
    assert _arguments(tmp_path, device).use_cpu is forced_cpu


@pytest.mark.parametrize("model_dtype, method, device, bf16_ok, precision, expected", [
    ("auto", "lora", "cpu", False, "auto", "float32"),
    ("auto", "lora", "mps", False, "auto", "float32"),
    ("auto", "lora", "cuda", True, "auto", "bfloat16"),
    ("auto", "lora", "cuda:0", False, "auto", "float16"),
    ("auto", "lora", "cuda", True, "bf16", "bfloat16"),
    ("auto", "lora", "cuda", True, "fp16", "float16"),
    ("auto", "lora", "cuda", True, "fp32", "float32"),  # fp32 training asked for: no half-precision base
    ("auto", "full", "cuda", True, "auto", "float32"),  # the optimizer updates base weights: fp32 master weights
    ("auto", "freeze", "cuda", True, "bf16", "float32"),
    ("bfloat16", "full", "cpu", False, "auto", "bfloat16"),  # explicit model.dtype wins everywhere
    ("float16", "lora", "mps", False, "auto", "float16"),
    ("float32", "lora", "cuda", True, "bf16", "float32"),
])
def test_resolve_load_dtype(model_dtype, method, device, bf16_ok, precision, expected):
    frozen = METHODS[method].frozen_base
    assert resolve_load_dtype(model_dtype, frozen, device, bf16_ok, precision=precision) == expected


def test_resolve_load_dtype_names_the_key_for_an_unknown_dtype():
    with pytest.raises(ModelError, match="model.dtype='int3'") as err:
        resolve_load_dtype("int3", True, "cuda", True)
    assert "bfloat16" in str(err.value)


def test_lora_on_a_half_precision_base_trains_float32_weights(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tuneforge.methods.lora import LoraParams

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model = METHODS["lora"].apply(base, LoraParams(r=4, use_dora=True, modules_to_save=["norm"]))
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert any("modules_to_save" in n for n in trainable) and any("magnitude" in n for n in trainable)
    assert set(trainable.values()) == {torch.float32}, trainable
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}  # the frozen base keeps its half-precision memory footprint
