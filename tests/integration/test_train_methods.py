"""Short real runs: the loss drops, and each method touches exactly the parameters it should."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from train_helpers import losses, tiny_config
from tuneforge.train.runner import train


def _base_state(model_dir):
    return {k: v.float() for k, v in AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items()}


def test_lora_loss_drops_and_only_adapter_trains(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.epochs=4")
    res = train(cfg)
    assert res.status == "succeeded"
    ls = losses(res.output_dir)
    assert ls[-1] < ls[0] * 0.8, ls
    adapter = load_file(str(res.final_dir / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero: it trained
    for f in ("config.yaml", "run.json", "metrics.jsonl", "loss.png"):
        assert (res.output_dir / f).is_file(), f
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["status"] == "succeeded" and info["parameters"]["trainable"] < info["parameters"]["total"]


def test_freeze_trains_only_last_layer(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, "method.type=freeze", "method.trainable_layers=1",
                      "train.learning_rate=1e-3")
    res = train(cfg)
    before = _base_state(tiny_model_dir)
    after = load_file(str(res.final_dir / "model.safetensors"))
    changed = {k for k, v in after.items() if k in before and not torch.equal(v.float(), before[k])}
    assert changed, "nothing trained"
    assert all(".layers.1." in k for k in changed), changed  # the model has layers 0 and 1
    assert any(".layers.1." in k for k in changed)


def test_full_trains_everything(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, "method.type=full", "train.learning_rate=1e-3")
    res = train(cfg)
    before = _base_state(tiny_model_dir)
    after = load_file(str(res.final_dir / "model.safetensors"))
    unchanged = [k for k, v in after.items() if k in before and torch.equal(v.float(), before[k])]
    assert not unchanged, unchanged
    ls = losses(res.output_dir)
    assert ls[-1] < ls[0]


class CaptureModel(TrainerCallback):
    """Keeps the live (PEFT-wrapped) model the Trainer trains."""

    model = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model


@pytest.mark.parametrize("use_rslora, scaling", [(True, 8 / 2), (False, 8 / 4)])  # alpha 8 (2r) / sqrt(r) vs / r
def test_rslora_scales_live_modules_by_alpha_over_sqrt_r(tmp_path, tiny_model_dir, use_rslora, scaling):
    from peft.tuners.lora import LoraLayer

    capture = CaptureModel()
    res = train(tiny_config(tmp_path, tiny_model_dir, f"method.use_rslora={str(use_rslora).lower()}",
                            "method.alpha=8", "train.max_steps=1"), extra_callbacks=[capture])
    assert res.status == "succeeded"
    layers = [m for m in capture.model.modules() if isinstance(m, LoraLayer)]
    assert layers and all(m.scaling["default"] == pytest.approx(scaling) for m in layers)


def test_dora_trains_a_magnitude_vector_per_module(tmp_path, tiny_model_dir):
    res = train(tiny_config(tmp_path, tiny_model_dir, "method.use_dora=true", "train.max_steps=3"))
    adapter = load_file(str(res.final_dir / "adapter_model.safetensors"))
    magnitudes = {k: v for k, v in adapter.items() if "lora_magnitude_vector" in k}
    lora_a = [k for k in adapter if "lora_A" in k]
    assert lora_a and len(magnitudes) == len(lora_a), sorted(adapter)  # one magnitude per adapted module
    base = _base_state(tiny_model_dir)
    moved = 0.0
    for k, m in magnitudes.items():
        weight = base[k.replace("base_model.model.", "").split(".lora_magnitude_vector")[0] + ".weight"]
        initial = torch.linalg.norm(weight, dim=1)  # DoRA starts at the column norms of W (B = 0)
        assert m.shape == initial.shape, k
        moved = max(moved, (m.float() - initial).abs().max().item())
    assert moved > 1e-4, "the DoRA magnitudes did not train"


def test_packed_training_and_classification_metrics_each_epoch(tmp_path, tiny_model_dir):
    from tuneforge.eval.callback import classification_callbacks

    rows = [{"instruction": "Is this review positive?", "input": text, "output": label}
            for text, label in [("I loved it, great fun", "1"), ("awful and boring", "0"), ("a happy day", "1"),
                                ("sad and bad", "0")] * 5]
    data = tmp_path / "cls.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = tiny_config(tmp_path, tiny_model_dir, "data.packing=true", "data.cutoff_len=256", "data.val_size=4",
                      "train.epochs=2",
                      "eval.classification.labels=['0','1']", "eval.classification.mode=score", data=data)
    res = train(cfg, eval_callbacks=classification_callbacks)
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["data"]["packed_sequences"] < info["data"]["train"]["kept"]  # several samples per sequence
    rows = [json.loads(x) for x in (res.output_dir / "metrics.jsonl").read_text().splitlines()]
    cls = [r for r in rows if "eval_cls/accuracy" in r]
    assert [r["epoch"] for r in cls] == [1.0, 2.0]  # measured at the end of each epoch
    assert all(r["eval_cls/n"] == 4 and r["eval_cls/n_unparseable"] == 0 for r in cls)  # every validation row scored
    assert all(r["eval_cls/accuracy"] * 4 == round(r["eval_cls/accuracy"] * 4) for r in cls)  # a share of 4 rows
    assert info["metrics"]["padding_fraction"] < 0.5
