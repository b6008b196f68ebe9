"""The pt/sft loss over the labelled positions only (`token_loss`, `CausalLMTrainer.compute_loss`) equals the model's
own loss: its value and its gradients, with a LoRA adapter and with every weight trained (the output layer tied to
the embeddings), over several chunks, padded and packed; and the models it cannot serve keep their own loss."""

from __future__ import annotations

import pytest
import torch

from tuneforge.data.render import IGNORE
from tuneforge.stages import token_loss as token_loss_mod
from tuneforge.stages.token_loss import LinearCrossEntropy, labelled_token_loss


def _padded():
    torch.manual_seed(1)
    ids = torch.randint(5, 500, (3, 20))
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    labels = torch.full_like(ids, IGNORE)
    labels[0, 12:18], labels[1, 9:20], labels[2, 11:15] = ids[0, 12:18], ids[1, 9:20], ids[2, 11:15]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _packed():
    torch.manual_seed(2)
    ids = torch.randint(5, 500, (2, 24))
    pos = torch.cat([torch.arange(10), torch.arange(14)]).repeat(2, 1)
    labels = ids.clone()
    labels[:, :4] = IGNORE
    labels[:, 10:13] = IGNORE
    return {"input_ids": ids, "position_ids": pos, "labels": labels}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("make", [_padded, _packed], ids=["padded", "packed"])
def test_values_and_gradients_equal_the_models_own_loss(make_causal_lm, monkeypatch, lora, make):
    model = make_causal_lm(lora)
    batch = make()
    monkeypatch.setattr(token_loss_mod, "CHUNK_ELEMENTS", 5 * model.config.vocab_size)  # 5 positions per chunk
    n_items = (batch["labels"][:, 1:] != IGNORE).sum()
    own = model(**batch, num_items_in_batch=n_items).loss
    own.backward()
    want = _grads(model)
    model.zero_grad()
    total, count = labelled_token_loss(model, batch)
    (total / count).backward()
    got = _grads(model)
    assert count == n_items and count > 10
    assert torch.allclose(own, total / count, atol=1e-5)
    assert want.keys() == got.keys() and len(got) > 0
    if not lora:
        assert any("embed_tokens" in k for k in got)  # the tied output layer is trained, through both of its uses
    assert all(torch.allclose(want[k], got[k], atol=1e-5, rtol=1e-4) for k in want)


def test_linear_cross_entropy_with_a_bias_matches_autograd():
    torch.manual_seed(3)
    h = torch.randn(7, 5, requires_grad=True)
    w = torch.randn(11, 5, requires_grad=True)
    b = torch.randn(11, requires_grad=True)
    t = torch.randint(0, 11, (7,))
    want = torch.nn.functional.cross_entropy(h @ w.t() + b, t, reduction="sum")
    want.backward(torch.tensor(0.5))
    expected = [x.grad.clone() for x in (h, w, b)]
    for x in (h, w, b):
        x.grad = None
    got = LinearCrossEntropy.apply(h, w, b, t)
    got.backward(torch.tensor(0.5))
    assert torch.allclose(want, got, atol=1e-5)
    assert all(torch.allclose(e, x.grad, atol=1e-5) for e, x in zip(expected, (h, w, b)))


def test_prompt_tuning_and_soft_capping_keep_the_models_own_loss(tiny_model_dir, make_causal_lm):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prompt = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert labelled_token_loss(prompt, _padded()) is None  # its virtual tokens live in PEFT's forward
    capped = make_causal_lm(lora=True)
    capped.get_base_model().config.final_logit_softcapping = 30.0
    assert labelled_token_loss(capped, _padded()) is None


def test_the_trainer_loss_equals_the_default_trainers(make_causal_lm, tmp_path):
    from transformers import Trainer, TrainingArguments

    from tuneforge.stages.trainer import CausalLMTrainer

    model = make_causal_lm(lora=True)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    batch = _packed()
    n_items = (batch["labels"][:, 1:] != IGNORE).sum()
    ours, theirs = CausalLMTrainer(model=model, args=args), Trainer(model=model, args=args)
    for n in (n_items, None):  # normalised by the accumulated batch's labelled tokens, or a batch mean
        got = ours.compute_loss(model, dict(batch), num_items_in_batch=n)
        want = theirs.compute_loss(model, dict(batch), num_items_in_batch=n)
        assert torch.allclose(got, want, atol=1e-5)
