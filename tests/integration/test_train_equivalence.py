"""Settings that must not change what is learned: gradient accumulation vs a bigger batch, packed vs unpacked data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import losses, tiny_config, write_story_data
from tuneforge.train.runner import train


def _adapter(res) -> dict:
    return load_file(str(res.final_dir / "adapter_model.safetensors"))


@pytest.mark.slow
def test_gradient_accumulation_equals_a_bigger_batch(tmp_path, tiny_model_dir):
    # group_by_length orders rows by batch-sized groups (a different order per batch size); the random sampler
    # draws one permutation of the rows whatever the batch size, so both runs see the same rows per optimizer step.
    common = ("train.group_by_length=false", "train.epochs=2", "train.learning_rate=1e-2")
    accum = train(tiny_config(tmp_path / "accum", tiny_model_dir, *common, "train.batch_size=2", "train.grad_accum=2"))
    big = train(tiny_config(tmp_path / "big", tiny_model_dir, *common, "train.batch_size=4", "train.grad_accum=1"))
    la, lb = losses(accum.output_dir), losses(big.output_dir)
    assert len(la) == len(lb) == 8  # 16 rows / 4 per optimizer step × 2 epochs
    assert la == pytest.approx(lb, abs=1e-4)
    a, b = _adapter(accum), _adapter(big)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)
    assert any(v.abs().max() > 1e-3 for k, v in b.items() if "lora_B" in k)  # they trained, not just stayed at 0


def test_packed_training_equals_unpacked_through_the_runner(tmp_path, tiny_model_dir):
    """With every row in one optimizer step, packing changes only the layout: if packed samples attended to each
    other (e.g. a KV cache left on during training disables the position-id masks), the losses would differ."""
    data = write_story_data(tmp_path / "stories.jsonl", n_repeat=1)  # 8 rows
    common = ("train.batch_size=8", "train.max_steps=3", "data.cutoff_len=512", "train.learning_rate=1e-2")
    unpacked = train(tiny_config(tmp_path / "unpacked", tiny_model_dir, *common, data=data))
    packed = train(tiny_config(tmp_path / "packed", tiny_model_dir, *common, "data.packing=true", data=data))
    info = json.loads((packed.output_dir / "run.json").read_text())
    assert info["data"]["packed_sequences"] == 1  # all 8 samples in one sequence
    lu, lp = losses(unpacked.output_dir), losses(packed.output_dir)
    assert len(lu) == len(lp) == 3
    assert lp == pytest.approx(lu, abs=1e-4)
