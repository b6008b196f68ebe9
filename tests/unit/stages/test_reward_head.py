"""A reward model starts from the causal LM's whole backbone (tied embeddings included) with a one-output head."""

from __future__ import annotations

import torch

from tuneforge.models.load import load_model


def test_reward_head_keeps_the_backbone_of_a_tied_checkpoint(tiny_model_dir):
    # the 656K checkpoint stores its tied embeddings only as lm_head.weight
    rm = load_model(str(tiny_model_dir), head="reward", pad_token_id=0, device="cpu")
    lm = load_model(str(tiny_model_dir), device="cpu")
    assert type(rm).__name__ == "LlamaForSequenceClassification" and rm.config.num_labels == 1
    for name, p in lm.model.state_dict().items():
        torch.testing.assert_close(rm.model.state_dict()[name], p, rtol=0, atol=0, msg=name)
    assert rm.config.pad_token_id == 0 and rm.score.weight.shape == (1, lm.config.hidden_size)
