"""The method plug-ins' configuration: flat and older nested forms, another method's keys, the compatibility table
and the README matrix generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tuneforge.config import compat
from tuneforge.config.load import load_config
from tuneforge.config.schema import TrainSection
from tuneforge.methods import METHODS, get_method, method_and_params, method_section
from tuneforge.stages import STAGES
from tuneforge.utils.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def _cfg(tmp_path, *overrides):
    (tmp_path / "d.jsonl").write_text("{}\n")
    return load_config(None, [f"data.train={tmp_path / 'd.jsonl'}", *overrides])


def test_flat_and_older_nested_forms_give_the_same_parameters(tmp_path):
    flat = method_and_params(_cfg(tmp_path, "method.type=lora", "method.r=4", "method.use_rslora=true"))
    nested = method_and_params(_cfg(tmp_path, "method.type=lora", "method.lora.r=4", "method.lora.use_rslora=true"))
    assert flat[1] == nested[1] and flat[1].r == 4 and flat[1].use_rslora


def test_a_config_saved_by_older_tuneforge_with_every_section_still_loads(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    (tmp_path / "old.yaml").write_text(
        "data: {train: d.jsonl}\nmethod:\n  type: freeze\n  lora: {r: 8, alpha: null, dropout: 0.0, target_modules: "
        "all-linear, use_rslora: false, use_dora: false, modules_to_save: null}\n  freeze: {trainable_layers: 1, "
        "trainable_modules: null, train_embeddings: false}\n")
    method, params = method_and_params(load_config(tmp_path / "old.yaml"))
    assert method.name == "freeze" and params.trainable_layers == 1
    assert method_section(method, params)["trainable_layers"] == 1


def test_another_methods_settings_name_the_type_that_takes_them(tmp_path):
    with pytest.raises(ConfigError, match="method.lora.* is set, but method.type is ia3") as err:
        method_and_params(_cfg(tmp_path, "method.type=ia3", "method.lora.r=16"))
    assert "method.type=lora" in err.value.hint
    with pytest.raises(ConfigError, match="method.r is a parameter of method lora / qlora / dora / longlora / unipelt, not of ia3") as err:
        method_and_params(_cfg(tmp_path, "method.type=ia3", "method.r=16"))
    assert "method.type=lora" in err.value.hint


def test_unknown_keys_and_methods_get_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match="method.num_virtual_token: unknown key for method prompt — did you mean "
                                          "'num_virtual_tokens'"):
        method_and_params(_cfg(tmp_path, "method.type=prompt", "method.num_virtual_token=8"))
    with pytest.raises(ConfigError, match="unknown method 'adalor' — did you mean 'adalora'"):
        get_method("adalor")


def test_every_method_has_parameters_with_defaults_and_a_description():
    for m in METHODS.values():
        m.Params()  # every parameter has a default
        assert m.description and m.base_lr > 0 and m.artifact in ("adapter", "model")
        assert all(f.description for f in m.Params.model_fields.values()), m.name


def test_the_compat_table_names_only_stages_and_methods_that_exist():
    known = {"stage": set(STAGES), "method": set(METHODS), "packing": {"on", "off"},
             "distributed": {"none", "ddp", "fsdp", "deepspeed"}, "device": {"cpu", "cuda", "mps"}, "quantization": {"none", "4bit", "8bit"},
             "kernels": set(TrainSection.model_fields["kernels"].annotation.__args__)}
    for rule in compat.RULES:
        assert set(rule.when) <= set(compat.AXES)
        for axis, values in rule.when.items():
            assert set(values) <= known[axis], (axis, values)


@pytest.mark.parametrize("overrides, reason", [
    (["stage=dpo", "method.type=prompt"], "virtual tokens"),
    (["method.type=prefix", "data.packing=true"], "packed sequence"),
])
def test_an_unsupported_combination_is_refused_with_the_reason_and_an_alternative(tmp_path, overrides, reason):
    cfg = _cfg(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=reason) as err:
        compat.check(cfg)
    assert "instead" not in err.value.message and err.value.hint
    compat.check(_cfg(tmp_path, "stage=dpo", "method.type=ia3"))  # a supported one passes


def test_adalora_is_refused_under_ddp(tmp_path):
    with pytest.raises(ConfigError, match="prunes ranks"):
        compat.check(_cfg(tmp_path, "method.type=adalora"), world_size=2)


def test_the_readme_matrix_is_generated_from_the_table():
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- methods-matrix -->\n(.*?)\n<!-- /methods-matrix -->", text, re.S)
    assert found, "README.md lacks the <!-- methods-matrix --> block"
    assert found.group(1).strip() == compat.matrix_markdown(list(STAGES), list(METHODS)).strip(), (
        "README matrix out of date: paste compat.matrix_markdown(list(STAGES), list(METHODS))")


def test_the_readme_lists_every_method_with_its_description():
    text = README.read_text(encoding="utf-8")
    for m in METHODS.values():
        assert f"| `{m.name}` | {m.description} |" in text, m.name


def test_methods_command_lists_methods_the_matrix_and_one_methods_parameters():
    from typer.testing import CliRunner

    from tuneforge.cli import app

    out = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert all(name in out.output for name in METHODS) and "virtual tokens" in out.output and "prunes ranks" in out.output
    one = CliRunner().invoke(app, ["methods", "adalora"], env={"COLUMNS": "200"})
    assert one.exit_code == 0 and "target_r" in one.output and "tinit" in one.output


def test_a_method_whose_package_is_missing_fails_before_anything_loads(tmp_path, monkeypatch):
    import importlib.util

    from tuneforge.train.runner import _check_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name))
    with pytest.raises(ConfigError, match="method qlora / train.optim=adamw needs bitsandbytes") as err:
        _check_config(_cfg(tmp_path, "method.type=qlora", "output.report_to=[]"), "cpu")
    assert "pip install bitsandbytes" in err.value.hint
    with pytest.raises(ConfigError, match="needs bitsandbytes"):
        _check_config(_cfg(tmp_path, "train.optim=adamw_8bit", "output.report_to=[]"), "cpu")
