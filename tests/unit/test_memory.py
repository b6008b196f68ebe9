"""Training memory estimate: model shapes read without loading weights, and the estimate's terms."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import pytest

from tuneforge.models.memory import (
    LOGIT_COPIES,
    TrainSetting,
    cheaper_settings,
    estimate_training_memory,
    read_model_shape,
    shape_from_config,
    trainable_params,
)

GGUF = "models/smollm2-135m-instruct-q4_1-gguf/SmolLM2-135M-Instruct.Q4_1.gguf"  # only its header is read: fast
SMOLLM2_CONFIG = {"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}


def _safetensors_numel(path) -> int:
    """Parameter count from a safetensors header (no tensor is read)."""
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    total = 0
    for name, meta in header.items():
        if name != "__metadata__":
            n = 1
            for d in meta["shape"]:
                n *= d
            total += n
    return total


def test_shape_from_config_counts_the_real_parameters(tiny_model_dir):
    shape = read_model_shape(str(tiny_model_dir))
    assert (shape.n_layers, shape.hidden, shape.vocab, shape.n_kv_heads) == (2, 128, 2048, 4)
    assert shape.n_params == _safetensors_numel(tiny_model_dir / "model.safetensors")


def test_gguf_metadata_gives_the_shape_without_loading_weights(shared):
    shape = read_model_shape(str(shared / GGUF))
    assert (shape.n_layers, shape.hidden, shape.intermediate, shape.vocab) == (30, 576, 1536, 49152)
    assert shape.tied_embeddings and 134e6 < shape.n_params < 135e6
    assert shape_from_config(SMOLLM2_CONFIG).n_params == shape.n_params  # the formula matches the real tensors


def test_trainable_parameters_match_peft_and_freeze(tiny_model_dir, one_thread):
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.load import load_model

    shape = read_model_shape(str(tiny_model_dir))
    model = get_peft_model(load_model(str(tiny_model_dir), device="cpu"),
                           LoraConfig(r=4, target_modules="all-linear"))
    peft_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable_params(shape, TrainSetting(method="lora", lora_r=4)) == peft_count
    q_only = trainable_params(shape, TrainSetting(method="lora", lora_r=4, lora_targets=("q_proj",)))
    assert q_only == 2 * 4 * (128 + 128)
    assert trainable_params(shape, TrainSetting(method="freeze", trainable_layers=1)) == shape.layer_params
    assert trainable_params(shape, TrainSetting(method="full")) == shape.n_params


def test_estimate_terms():
    shape = shape_from_config(SMOLLM2_CONFIG)
    full = estimate_training_memory(shape, TrainSetting(method="full", batch_size=4, seq_len=256))
    assert full.terms["weights"] == full.terms["gradients"] == shape.n_params * 4
    assert full.terms["optimizer"] == shape.n_params * 8  # AdamW: 2 fp32 states
    assert full.terms["logits"] == 4 * 256 * 49152 * 4 * LOGIT_COPIES
    lora = estimate_training_memory(shape, replace(full.setting, method="lora"))
    assert lora.total < full.total and lora.terms["optimizer"] == lora.trainable_params * 8
    bf16 = estimate_training_memory(shape, replace(full.setting, precision="bf16", device="cuda"))
    assert bf16.terms["weights"] == shape.n_params * 2 and bf16.terms["activations"] < full.terms["activations"]
    ckpt = estimate_training_memory(shape, replace(full.setting, gradient_checkpointing=True))
    assert ckpt.terms["activations"] < full.terms["activations"] / 5
    double = estimate_training_memory(shape, replace(full.setting, batch_size=8))
    assert double.terms["logits"] == 2 * full.terms["logits"]
    assert double.terms["activations"] == 2 * full.terms["activations"]
    freeze = estimate_training_memory(shape, replace(full.setting, method="freeze", trainable_layers=2))
    assert freeze.terms["activations"] < full.terms["activations"] / 10  # frozen layers keep no activations


def test_cheaper_settings_fit_the_budget_first():
    shape = shape_from_config(SMOLLM2_CONFIG)
    setting = TrainSetting(method="full", batch_size=16, seq_len=1024)
    total = estimate_training_memory(shape, setting).total
    options = cheaper_settings(shape, setting, budget=total // 3, grad_accum=2)
    assert all(t < total for _, t in options) and len(options) >= 4
    fits = [t <= total // 3 for _, t in options]
    assert fits == sorted(fits, reverse=True)  # those within budget come first
    assert any("grad_accum=8" in advice and "batch_size=4" in advice for advice, _ in options)
    hopeless = cheaper_settings(shape, replace(setting, batch_size=64, seq_len=2048), budget=16 * 2 ** 30)
    combined = hopeless[0]  # no single change fits 16 GiB: their combination comes first
    assert combined[1] <= 16 * 2 ** 30 and "method.type=lora + train.batch_size=16" in combined[0]


@pytest.mark.parametrize("setting, measured_mib", [
    # peak RSS (MiB) of `tuneforge train` (stage pt, packing, 3 steps) on CPU in fp32, from /usr/bin/time -v
    (dict(name="tiny", method="lora", batch_size=1, seq_len=64), 550),
    (dict(name="tiny", method="lora", batch_size=16, seq_len=512), 1174),
    (dict(name="tiny", method="full", batch_size=32, seq_len=256), 979),
    (dict(name="smollm2", method="lora", batch_size=4, seq_len=256), 4071),
])
def test_estimate_is_calibrated_against_measured_peaks(setting, measured_mib, tiny_model_dir, shared):
    model = {"tiny": tiny_model_dir, "smollm2": shared / GGUF}[setting["name"]]
    train = TrainSetting(**{k: v for k, v in setting.items() if k != "name"})
    est = estimate_training_memory(read_model_shape(str(model)), train).total / 2 ** 20
    assert 0.9 * measured_mib <= est <= 1.25 * measured_mib, (est, measured_mib)
