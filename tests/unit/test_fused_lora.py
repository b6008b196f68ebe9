"""train.lora_kernel=fused: LoRA linear layers as one autograd function give PEFT's outputs and gradients, and
every call the function cannot run goes to PEFT's own forward."""

from __future__ import annotations

import copy

import pytest
import torch

from tuneforge.models import fused_lora


def _peft(base, **lora):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(**{"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                               "target_modules": "all-linear", **lora}))
    for name, p in model.named_parameters():  # B starts at zero: give it values so every gradient path is live
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


class Two(torch.nn.Module):
    """Two linear layers with biases (the tiny model's have none)."""

    def __init__(self):
        super().__init__()
        self.up, self.down = torch.nn.Linear(12, 20), torch.nn.Linear(20, 12)

    def forward(self, x):
        return self.down(torch.nn.functional.silu(self.up(x)))


def _grads(model, run):
    model.zero_grad()
    out = run()
    loss = out if out.dim() == 0 else (out.float() ** 2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _same(a, b, tol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, rtol=tol, atol=tol), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=tol, atol=tol * 1e-2), name


def _counted(monkeypatch):
    calls = []
    real = fused_lora.LoraLinearFunction.apply
    monkeypatch.setattr(fused_lora.LoraLinearFunction, "apply", lambda *a: calls.append(1) or real(*a))
    return calls


def test_fused_layers_give_the_loss_and_every_gradient_of_peft(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = _peft(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32))
    ids = torch.randint(3, 2000, (2, 24), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids}
    peft = _grads(model, lambda: model(**batch).loss)
    calls = _counted(monkeypatch)
    assert fused_lora.fuse(model) == len(fused_lora.lora_layers(model)) > 0
    fused = _grads(model, lambda: model(**batch).loss)
    assert len(calls) == len(fused_lora.lora_layers(model))  # every layer ran fused
    _same(peft, fused)
    fused_lora.unfuse(model)
    _same(peft, _grads(model, lambda: model(**batch).loss))


def test_base_biases_and_the_input_gradient_follow_peft():
    model = _peft(Two())
    x = torch.randn(3, 5, 12, requires_grad=True)
    x_grad = lambda: torch.autograd.grad((model(x) ** 2).mean(), x)[0]  # noqa: E731
    peft, peft_x = _grads(model, lambda: model(x)), x_grad()
    fused_lora.fuse(model)
    _same(peft, _grads(model, lambda: model(x)))
    assert torch.allclose(peft_x, x_grad(), atol=1e-7)


@pytest.mark.parametrize("case", ["dropout", "dora", "disabled", "merged", "frozen_base_trained", "bf16_autocast"])
def test_calls_it_cannot_run_take_peft_forward(case, monkeypatch):
    model = _peft(Two(), **({"lora_dropout": 0.1} if case == "dropout" else {"use_dora": True} if case == "dora"
                            else {}))
    model.eval()  # dropout off, so both paths give the same values
    x = torch.randn(4, 12)
    reference = copy.deepcopy(model)
    calls = _counted(monkeypatch)
    fused_lora.fuse(model)
    if case == "disabled":
        with model.disable_adapter(), reference.disable_adapter():
            assert torch.allclose(model(x), reference(x)) and not calls
        return
    if case == "merged":
        model.merge_adapter()
        reference.merge_adapter()
    if case == "frozen_base_trained":
        model.base_model.model.up.base_layer.weight.requires_grad_(True)
        reference.base_model.model.up.base_layer.weight.requires_grad_(True)
    if case == "bf16_autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.allclose(model(x).float(), reference(x).float()) and not calls
        return
    assert torch.allclose(model(x), reference(x), atol=1e-6)
    fused_calls = {"frozen_base_trained": 1}.get(case, 0)  # only the down layer can still run fused
    assert len(calls) == fused_calls


def test_a_deep_copy_keeps_its_own_fused_layers():
    """The DPO/GRPO/PPO reference copy: its layers run its own weights, not the trained model's."""
    model = _peft(Two())
    fused_lora.fuse(model)
    reference = copy.deepcopy(model)
    x = torch.randn(2, 12)
    before = reference(x).detach()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    assert torch.equal(reference(x), before) and not torch.allclose(model(x), before)
