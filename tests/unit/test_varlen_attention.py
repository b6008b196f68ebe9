"""train.attention=varlen: a packed row's samples attend alone, giving what the block-diagonal sdpa mask gives."""

from __future__ import annotations

import pytest
import torch

from tuneforge.models import varlen


def test_segments_start_where_the_position_ids_restart_or_jump():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5], [3, 4, 0, 1, 7, 8]])
    assert varlen.segments(pos) == [[(0, 3), (3, 5), (5, 6)], [(0, 6)], [(0, 2), (2, 4), (4, 6)]]


def test_models_with_windowed_or_chunked_layers_are_not_supported():
    from transformers import LlamaConfig, MistralConfig

    assert varlen.supports(LlamaConfig())
    assert not varlen.supports(MistralConfig(sliding_window=64))
    assert not varlen.supports(LlamaConfig(num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"]))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    varlen.register()
    return model


def _packed_batch():
    """Two packed rows of 3 samples (the second ends in a padding block, as the packed collator makes it)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 2000, (2, 40), generator=g)
    pos = torch.tensor([list(range(17)) + list(range(9)) + list(range(14)),
                        list(range(25)) + list(range(11)) + list(range(4))])
    return {"input_ids": ids, "position_ids": pos, "labels": ids.clone()}


def _loss_and_grads(model, impl, batch):
    model.set_attn_implementation(impl)
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), out.loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_packed_rows_give_the_block_diagonal_sdpa_result_and_the_samples_alone(tiny):
    batch = _packed_batch()
    logits_sdpa, loss_sdpa, grads_sdpa = _loss_and_grads(tiny, "sdpa", batch)
    logits_var, loss_var, grads_var = _loss_and_grads(tiny, varlen.NAME, batch)
    assert loss_var == pytest.approx(loss_sdpa, rel=1e-6)
    torch.testing.assert_close(logits_var, logits_sdpa, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_var, grads_sdpa):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # and each sample's logits are those of the sample run alone: nothing leaks across the packed boundaries
    tiny.set_attn_implementation("sdpa")
    for row, spans in enumerate(varlen.segments(batch["position_ids"])):
        for s, e in spans:
            alone = tiny(input_ids=batch["input_ids"][row:row + 1, s:e]).logits.detach()
            torch.testing.assert_close(logits_var[row:row + 1, s:e], alone, atol=1e-5, rtol=1e-5)


def test_a_padded_batch_with_its_mask_is_plain_sdpa(tiny):
    ids = torch.randint(3, 2000, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    tiny.set_attn_implementation("sdpa")
    want = tiny(**batch).logits.detach()
    tiny.set_attn_implementation(varlen.NAME)
    torch.testing.assert_close(tiny(**batch).logits.detach(), want)
    tiny.set_attn_implementation("sdpa")
