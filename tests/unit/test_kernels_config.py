"""train.kernels (none | liger): refused where it cannot run (CPU, MPS, liger-kernel missing) with what to do
instead, handed to the Trainer (use_liger_kernel) where it can, and recorded in run.json's runtime. The kernels
themselves need a CUDA GPU: bench/gpu_knobs.py measures them there (bench/README.md)."""

from __future__ import annotations

import importlib.util

import pytest

from tuneforge.config import compat
from tuneforge.config.auto import resolve_auto
from tuneforge.config.load import load_config
from tuneforge.methods import get_method
from tuneforge.train.cpu_runtime import runtime_info, runtime_line
from tuneforge.train.runner import _check_config
from tuneforge.train.trainer import training_arguments
from tuneforge.utils.errors import ConfigError


def _cfg(tmp_path, *over):
    (tmp_path / "d.jsonl").write_text("{}\n")
    return load_config(None, [f"data.train={tmp_path / 'd.jsonl'}", f"output.dir={tmp_path / 'run'}",
                              "train.batch_size=2", "train.epochs=1", "train.learning_rate=1e-3", *over])


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_liger_off_a_gpu_is_refused_by_the_table_with_what_to_set(tmp_path, device):
    with pytest.raises(ConfigError) as err:
        compat.check(_cfg(tmp_path, "train.kernels=liger"), device=device)
    assert f"kernels liger with device {device} cannot run" in str(err.value)
    assert "train.kernels=none" in err.value.hint
    compat.check(_cfg(tmp_path, "train.kernels=liger"), device="cuda")
    compat.check(_cfg(tmp_path), device=device)


def test_liger_without_its_package_names_the_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        _check_config(_cfg(tmp_path, "train.kernels=liger"), "cuda")
    assert "liger-kernel" in str(err.value) and "pip install liger-kernel" in err.value.hint


@pytest.mark.parametrize("kernels", ["none", "liger"])
def test_the_setting_reaches_the_trainer_and_run_json(tmp_path, kernels):
    cfg = _cfg(tmp_path, f"train.kernels={kernels}")
    resolved = resolve_auto(cfg.train, get_method(cfg.method), 8, "cuda")
    assert training_arguments(cfg, resolved, tmp_path, "cuda", 8).use_liger_kernel is (kernels == "liger")
    assert runtime_info(cfg)["kernels"] == kernels
    assert ("kernels liger" in runtime_line(cfg)) is (kernels == "liger")
