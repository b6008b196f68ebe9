"""Offline, a model loads without transformers' Hub kernels (compiled layers it would download on a GPU and that
stop an offline run when they are not cached: bench/README.md's H200 run met it); USE_HUB_KERNELS set by the user
is left to transformers."""

from __future__ import annotations

from huggingface_hub import constants

from tuneforge.models.load import hub_kernels_kwargs, load_model


def test_an_offline_load_turns_hub_kernels_off(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    assert hub_kernels_kwargs() == {"use_kernels": False}
    assert load_model(str(tiny_model_dir), device="cpu").use_kernels is False


def test_online_or_a_users_setting_keeps_transformers_default(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    assert hub_kernels_kwargs() == {}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    assert hub_kernels_kwargs() == {}
