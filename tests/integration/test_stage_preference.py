"""dpo (sigmoid, ipo, hinge, robust), simpo, orpo and kto end to end on the 656K model: the held-out reward margin rises
over its value before the first step, every adapter moved, frozen weights did not, and the reference log-probs
computed once (precompute_ref) train exactly like a reference copy."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stage_data import write_kto, write_pairs
from train_helpers import losses, tiny_config
from tuneforge.train.runner import train


def _evals(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval_rewards/margins" in r]


def _run(tmp_path, tiny_model_dir, *over, data=None):
    cfg = tiny_config(tmp_path, tiny_model_dir, "data.val_size=12", "train.epochs=2", "train.eval_steps=3",
                      "train.eval_on_start=true", "train.load_best=null", *over,
                      data=data or write_pairs(tmp_path / "pairs.jsonl"))
    return train(cfg)


@pytest.mark.parametrize("stage", ["stage=dpo", "stage={type: dpo, loss: ipo}", "stage={type: dpo, loss: hinge}",
                                   "stage={type: dpo, loss: robust, label_smoothing: 0.1}", "stage=simpo",
                                   "stage=orpo"])
def test_held_out_margin_rises_and_every_adapter_moves(tmp_path, tiny_model_dir, stage):
    res = _run(tmp_path, tiny_model_dir, stage)
    evals = _evals(res.output_dir)
    assert evals[0]["step"] == 0 and len(evals) >= 3
    start, end = evals[0], evals[-1]
    assert end["eval_rewards/margins"] > start["eval_rewards/margins"] + 0.01, (start, end)
    assert end["eval_rewards/accuracies"] >= start["eval_rewards/accuracies"]
    if "dpo" in stage:  # LoRA starts as the reference itself: zero margin, loss log 2 (sigmoid)
        assert start["eval_rewards/margins"] == pytest.approx(0, abs=1e-6)
    weights = load_file(str(res.final_dir / "adapter_model.safetensors"))
    assert all(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    rows = [json.loads(x) for x in (res.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/accuracies" in r and "loss" in r for r in rows)  # train-side pair metrics are logged


def test_kto_on_unpaired_rows_raises_the_desirable_over_undesirable_margin(tmp_path, tiny_model_dir):
    res = _run(tmp_path, tiny_model_dir, "stage=kto", data=write_kto(tmp_path / "kto.jsonl"))
    evals = _evals(res.output_dir)
    assert evals[0]["step"] == 0 and evals[0]["eval_rewards/margins"] == pytest.approx(0, abs=1e-6)
    assert evals[-1]["eval_rewards/margins"] > 0.01 and "eval_kl" in evals[-1]


def test_dpo_freeze_keeps_frozen_weights_and_precomputed_reference_equals_a_copy(tmp_path, tiny_model_dir):
    common = ("stage=dpo", "method.type=freeze", "method.trainable_layers=1", "train.max_steps=4",
              "train.learning_rate=1e-3")
    copy_run = train(tiny_config(tmp_path / "copy", tiny_model_dir, *common,
                                 data=write_pairs(tmp_path / "pairs.jsonl")))
    cached_run = train(tiny_config(tmp_path / "cached", tiny_model_dir, *common, "stage.precompute_ref=true",
                                   data=write_pairs(tmp_path / "pairs.jsonl")))
    assert (cached_run.output_dir / "train_reference_logps.pt").is_file()
    assert losses(cached_run.output_dir) == pytest.approx(losses(copy_run.output_dir), rel=1e-4)
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(copy_run.final_dir / "model.safetensors"))
    last = max(int(k.split(".layers.")[1].split(".")[0]) for k in before if ".layers." in k)
    shared = [k for k in before if k in after]  # tied embeddings are stored under one name only
    assert len(shared) >= len(before) - 1
    for k in shared:
        assert (not torch.equal(before[k], after[k])) == (f".layers.{last}." in k), k


def test_dpo_gradient_accumulation_equals_a_bigger_batch(tmp_path, tiny_model_dir):
    common = ("stage=dpo", "train.max_steps=3", "train.group_by_length=false", "train.learning_rate=1e-2")
    data = write_pairs(tmp_path / "pairs.jsonl")
    big = train(tiny_config(tmp_path / "big", tiny_model_dir, *common, "train.batch_size=4", data=data))
    acc = train(tiny_config(tmp_path / "acc", tiny_model_dir, *common, "train.batch_size=2", "train.grad_accum=2",
                            data=data))
    assert losses(acc.output_dir) == pytest.approx(losses(big.output_dir), abs=1e-5)
    a = load_file(str(big.final_dir / "adapter_model.safetensors"))
    b = load_file(str(acc.final_dir / "adapter_model.safetensors"))
    for k in a:  # the adapters reach ~0.1: float32 sums in another order differ by ~3e-5
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4, msg=k)
    assert max(v.abs().max() for k, v in a.items() if "lora_B" in k) > 1e-2


def test_sft_then_dpo_starts_from_the_sft_model_and_records_it_as_parent(tmp_path, tiny_model_dir):
    from peft import PeftModel

    from tuneforge.models.load import load_model
    from tuneforge.registry import queries
    from tuneforge.registry.store import open_store

    sft = train(tiny_config(tmp_path / "sft", tiny_model_dir, "train.max_steps=3", "train.learning_rate=5e-2"))
    dpo = train(tiny_config(tmp_path / "dpo", tiny_model_dir, "stage=dpo", "train.max_steps=2",
                            f"model.name={sft.output_dir}", data=write_pairs(tmp_path / "pairs.jsonl")))
    assert queries.get_run(open_store(), dpo.run_id).parent_run_id == sft.run_id
    # the DPO run's starting point is the SFT adapter merged into the base: its step-0 reference
    merged = load_model(str(sft.output_dir), device="cpu")
    by_hand = PeftModel.from_pretrained(load_model(str(tiny_model_dir), device="cpu"), str(sft.final_dir))
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    torch.testing.assert_close(merged(ids).logits, by_hand.merge_and_unload()(ids).logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged(ids).logits, load_model(str(tiny_model_dir), device="cpu")(ids).logits)
