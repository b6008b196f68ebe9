"""Sanity check of the benchmark scorer with the real SmolLM2-135M-Instruct: on ARC-Easy the pretrained model scores
clearly above chance, while a randomly initialised model with the same tokenizer and vocabulary (2 narrow layers, so
it costs little) scores at chance.

60 items (a fixed seeded sample): at chance (about 25 %) the standard error is 5.6 points, so "pretrained at least
chance + 3 SE" (one-sided p < 0.002), "random within chance +- 2.5 SE" and "pretrained at least 15 points above the
random copy" are meaningful, while the test stays around half a minute on a CPU (shared prompt scoring).
"""

import math

import pytest

N_ITEMS = 60


@pytest.mark.slow
def test_pretrained_above_chance_random_copy_at_chance(shared):
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.eval.bench import evaluate_mc
    from tuneforge.eval.tasks import load_task
    from tuneforge.models.load import load_for_inference

    task = load_task("arc_easy", limit=N_ITEMS)
    model, tok = load_for_inference("smollm2-135m-instruct", dtype="float32", device="cpu")
    pretrained = evaluate_mc(task, model, tok, progress=False)["metrics"]
    torch.manual_seed(0)
    # an untrained model with the same tokenizer and vocabulary, 2 narrow layers: at chance like a full-size one
    small = model.config.__class__(**{**model.config.to_dict(), "num_hidden_layers": 2, "hidden_size": 64,
                                      "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                                      "head_dim": 16})
    random_copy = AutoModelForCausalLM.from_config(small, dtype=torch.float32).eval()
    del model
    random = evaluate_mc(task, random_copy, tok, progress=False)["metrics"]
    chance = pretrained["chance"]
    se = math.sqrt(chance * (1 - chance) / N_ITEMS)
    print(f"chance {chance:.3f}  pretrained acc {pretrained['acc']:.3f} acc_norm {pretrained['acc_norm']:.3f}  "
          f"random acc {random['acc']:.3f} acc_norm {random['acc_norm']:.3f}")
    assert pretrained["acc"] >= chance + 3 * se
    assert pretrained["acc_norm"] >= chance + 2.5 * se
    for key in ("acc", "acc_norm"):
        assert abs(random[key] - chance) <= 2.5 * se
        assert pretrained[key] - random[key] >= 0.15
