"""Log-probs of the answers, computed chunk by chunk from the decoder's hidden states, equal those of the whole
logits: values and gradients, with a LoRA adapter, over several chunks."""

from __future__ import annotations

import torch

from tuneforge.data.render import IGNORE
from tuneforge.stages import logps as logps_mod
from tuneforge.stages.logps import answer_logps, sequence_logps


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 500, (3, 20))
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0  # a right-padded row
    labels = torch.full_like(ids, IGNORE)
    labels[0, 12:18], labels[1, 9:20], labels[2, 11:15] = ids[0, 12:18], ids[1, 9:20], ids[2, 11:15]
    return ids, mask, labels


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_chunked_values_and_gradients_equal_the_whole_logits(lora_model, monkeypatch):
    monkeypatch.setattr(logps_mod, "CHUNK_TOKENS", 4)  # 18 scored tokens: five chunks
    ids, mask, labels = _batch()
    full, n_full = sequence_logps(lora_model(input_ids=ids, attention_mask=mask).logits, labels)
    full.sum().backward()
    want = _grads(lora_model)
    lora_model.zero_grad()
    chunked, n = answer_logps(lora_model, ids, mask, labels)
    chunked.sum().backward()
    got = _grads(lora_model)
    assert torch.allclose(full, chunked, atol=1e-5) and torch.equal(n_full, n)
    assert want.keys() == got.keys() and len(got) > 0
    assert all(torch.allclose(want[k], got[k], atol=1e-5) for k in want)


def test_a_model_with_logit_soft_capping_takes_the_whole_logits_path(lora_model):
    ids, mask, labels = _batch()
    lora_model.get_base_model().config.final_logit_softcapping = 30.0
    assert logps_mod.decoder_and_head(lora_model) is None
    with torch.no_grad():
        a = answer_logps(lora_model, ids, mask, labels)[0]
        b = sequence_logps(lora_model(input_ids=ids, attention_mask=mask).logits, labels)[0]
    assert torch.equal(a, b)
