"""train.distributed (none | ddp | fsdp | deepspeed, auto from the launch): validation of the setting, of the launch
and of the DeepSpeed file, the compatibility rules of the sharded modes, and the TrainingArguments each mode maps
to. Nothing here trains: FSDP runs on GPUs only (see test_train_distributed.py for why not on CPU) and deepspeed is
not installed here, so their arguments are checked against transformers' and accelerate's own parsing instead."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from pathlib import Path

import pytest

from tuneforge.config import compat
from tuneforge.config.load import load_config
from tuneforge.train.trainer import FSDP_CONFIG, distributed_arguments
from tuneforge.utils.errors import ConfigError

PRESETS = sorted((Path(__file__).resolve().parents[2] / "examples" / "deepspeed").glob("*.json"))
LAUNCH = "torchrun --nproc_per_node 2 -m tuneforge train"


def _cfg(tmp_path, *overrides):
    (tmp_path / "d.jsonl").write_text("{}\n")
    return load_config(None, [f"data.train={tmp_path / 'd.jsonl'}", *overrides])


def _deepspeed(tmp_path, *overrides, preset="zero2.json"):
    return _cfg(tmp_path, "train.distributed=deepspeed", f"train.deepspeed_config={PRESETS[0].parent / preset}",
                *overrides)


@pytest.fixture
def deepspeed_installed(monkeypatch):
    """Pretend deepspeed is importable (it is not installed here, and must not be)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "deepspeed" else real(name, *a))


def test_auto_is_ddp_under_a_launcher_and_none_in_one_process(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.train.distributed == "auto"
    assert compat.distributed_mode(cfg, 1) == "none" and compat.distributed_mode(cfg, 2) == "ddp"
    assert compat.distributed_mode(_cfg(tmp_path, "train.distributed=fsdp"), 2) == "fsdp"
    compat.check(cfg, world_size=2)
    compat.check(cfg)


def test_an_unknown_mode_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="train.distributed") as err:
        _cfg(tmp_path, "train.distributed=fdsp")
    assert "fsdp" in str(err.value)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_a_multi_process_mode_in_one_process_says_how_to_launch(tmp_path, mode):
    with pytest.raises(ConfigError, match=f"train.distributed={mode} needs several processes") as err:
        compat.check(_cfg(tmp_path, f"train.distributed={mode}"), device="cuda", world_size=1)
    assert LAUNCH in err.value.hint and "accelerate launch" in err.value.hint
    compat.check(_cfg(tmp_path, f"train.distributed={mode}"), device="cuda", world_size=2)


def test_none_under_a_launcher_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="launched as 2 processes"):
        compat.check(_cfg(tmp_path, "train.distributed=none"), world_size=2)


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ('{"train_batch_size": "auto"}', "zero_optimization.stage"),
    ('{"zero_optimization": {"stage": 4}}', "zero_optimization.stage"),
    ('[1, 2]', "zero_optimization.stage"),
])
def test_a_bad_deepspeed_file_fails_at_config_time_naming_the_key(tmp_path, content, needle):
    path = tmp_path / "ds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="train.deepspeed_config") as err:
        _cfg(tmp_path, "train.distributed=deepspeed", f"train.deepspeed_config={path}")
    assert needle in str(err.value)


def test_deepspeed_and_its_file_come_together(tmp_path):
    with pytest.raises(ConfigError, match="needs train.deepspeed_config"):
        _cfg(tmp_path, "train.distributed=deepspeed")
    with pytest.raises(ConfigError, match="train.distributed is auto"):
        _cfg(tmp_path, f"train.deepspeed_config={PRESETS[0]}")


def test_the_presets_are_zero2_and_zero3_with_values_filled_from_the_run(tmp_path):
    assert [p.name for p in PRESETS] == ["zero2.json", "zero3.json"]
    for path, stage in zip(PRESETS, (2, 3)):
        data = json.loads(path.read_text())
        assert data["zero_optimization"]["stage"] == stage
        # transformers fills these from TrainingArguments, so train.batch_size / grad_accum / precision rule
        for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
            assert data[key] == "auto", (path.name, key)
        assert data["bf16"]["enabled"] == data["fp16"]["enabled"] == "auto"
        assert "optimizer" not in data and "scheduler" not in data  # train.optim and train.lr_scheduler apply
        cfg = _deepspeed(tmp_path, preset=path.name)
        assert cfg.train.deepspeed_config == str(path)
    assert json.loads(PRESETS[1].read_text())["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]


def test_deepspeed_without_cuda_or_without_the_package_fails_before_anything_loads(tmp_path, deepspeed_installed):
    cfg = _deepspeed(tmp_path)
    for device in ("cpu", "mps"):
        with pytest.raises(ConfigError, match="DeepSpeed ZeRO trains on CUDA GPUs") as err:
            compat.check(cfg, device=device, world_size=2)
        assert "train.distributed=ddp" in err.value.hint
    compat.check(cfg, device="cuda:0", world_size=2)  # with the package, on GPUs: accepted


def test_deepspeed_not_installed_is_named(tmp_path):
    assert importlib.util.find_spec("deepspeed") is None, "deepspeed is installed here: this test needs it absent"
    with pytest.raises(ConfigError, match="needs the deepspeed package, which is not installed") as err:
        compat.check(_deepspeed(tmp_path), device="cuda", world_size=2)
    assert "pip install deepspeed" in err.value.hint


@pytest.mark.parametrize("overrides, mode, reason", [
    (["method.type=galore"], "fsdp", "whole gradient"),
    (["method.type=apollo"], "deepspeed", "whole gradient"),
    (["method.type=qlora"], "fsdp", "bnb_4bit_quant_storage"),
    (["method.type=qlora"], "deepspeed", "ZeRO-3 cannot partition"),
    (["method.type=adalora"], "fsdp", "prunes ranks"),
    (["method.type=adalora"], "ddp", "prunes ranks"),
])
def test_methods_that_need_whole_tensors_are_refused_under_sharding(tmp_path, deepspeed_installed, overrides, mode,
                                                                    reason):
    extra = [f"train.deepspeed_config={PRESETS[0]}"] if mode == "deepspeed" else []
    cfg = _cfg(tmp_path, *overrides, f"train.distributed={mode}", *extra)
    with pytest.raises(ConfigError, match=reason) as err:
        compat.check(cfg, device="cuda", world_size=2)
    assert err.value.message.startswith(f"method {cfg.method.type} with distributed {mode} cannot run")
    assert err.value.hint


@pytest.mark.parametrize("method", ["full", "lora", "freeze", "ia3", "llama_pro"])
def test_methods_over_whole_tensors_run_sharded(tmp_path, deepspeed_installed, method):
    compat.check(_cfg(tmp_path, f"method.type={method}", "train.distributed=fsdp"), device="cuda", world_size=2)
    compat.check(_deepspeed(tmp_path, f"method.type={method}"), device="cuda", world_size=2)
    compat.check(_cfg(tmp_path, "method.type=galore", "train.distributed=ddp"), world_size=2)


def test_fsdp_on_cpu_is_refused_because_accelerate_would_run_ddp(tmp_path):
    with pytest.raises(ConfigError, match="silently train as DDP") as err:
        compat.check(_cfg(tmp_path, "train.distributed=fsdp"), device="cpu", world_size=2)
    assert "train.distributed=ddp" in err.value.hint


def test_the_rules_name_only_known_values():
    for rule in compat.RULES:
        assert set(rule.when.get("distributed", compat.DISTRIBUTED)) <= set(compat.DISTRIBUTED)


def test_each_mode_maps_to_its_training_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed_arguments(_cfg(tmp_path), "cpu", False) == {"ddp_backend": "gloo",
                                                                   "ddp_find_unused_parameters": False}
    assert distributed_arguments(_cfg(tmp_path, "train.distributed=ddp"), "cuda:1", True)["ddp_backend"] is None
    fsdp = distributed_arguments(_cfg(tmp_path, "train.distributed=fsdp"), "cuda:0", True)
    assert fsdp["fsdp"] is True and fsdp["activation_checkpointing"] is False  # FSDP checkpoints them itself
    assert fsdp["fsdp_config"] == {**FSDP_CONFIG, "activation_checkpointing": True}
    ds = distributed_arguments(_deepspeed(tmp_path), "cuda:0", False)
    assert ds == {"deepspeed": str(PRESETS[0])}
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed_arguments(_cfg(tmp_path), "cpu", False) == {}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_fsdp_config_uses_transformers_keys_for_fsdp2(tmp_path, monkeypatch, checkpointing):
    """transformers ignores fsdp_config keys it does not know: every key we set must show in the accelerate plugin
    arguments it derives (version 2 = FSDP2), and accelerate must accept those."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import TrainingArguments

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # transformers sets it: restored after the test
    mapped = distributed_arguments(_cfg(tmp_path, "train.distributed=fsdp"), "cuda", checkpointing)
    monkeypatch.delenv("WORLD_SIZE")  # building the arguments in a single test process
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, **mapped)
    plugin = args.fsdp_plugin_args
    assert plugin == {"fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
                      "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False,
                      "activation_checkpointing": checkpointing}
    # a misspelt key would be ignored silently, also where its default matches: every key is one transformers reads
    source = inspect.getsource(TrainingArguments._process_fsdp_args)
    read = set(re.findall(r'fsdp_config(?:\.get\(|\[)"(\w+)"', source))
    ours = {*FSDP_CONFIG, "activation_checkpointing"}  # (transformers adds its defaults to the dict it was given)
    assert ours <= read, ours - read
    built = FullyShardedDataParallelPlugin(**plugin)
    assert built.fsdp_version == 2 and built.activation_checkpointing is checkpointing
    assert "FULL_STATE_DICT" in str(built.state_dict_type)


@pytest.mark.parametrize("mode", ["fsdp", "deepspeed"])
def test_fused_lora_layers_are_refused_under_sharding_and_auto_takes_peft(mode):
    """Sharded weights are gathered by the layers' own modules, which the fused LoRA function does not call."""
    from peft import LoraConfig, get_peft_model

    from tuneforge.train.cpu_runtime import check_lora_kernel, lora_kernel, use_lora_kernel

    with pytest.raises(ConfigError, match=f"train.distributed={mode} shards them") as err:
        check_lora_kernel("fused", mode)
    assert "lora_kernel=auto or peft" in err.value.hint
    check_lora_kernel("fused", "ddp")
    model = get_peft_model(torch_two_layers(), LoraConfig(r=2, target_modules=["0", "1"]))
    assert use_lora_kernel(model, lora_kernel("auto", mode)) == "peft"
    assert use_lora_kernel(model, lora_kernel("auto", "ddp")) == "fused"
    assert use_lora_kernel(torch_two_layers(), lora_kernel("auto", "none")) == "none"


def torch_two_layers():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
