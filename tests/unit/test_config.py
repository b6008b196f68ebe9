"""Config loading: overrides, unknown keys with suggestions, type/range errors naming key and file, auto rules."""

from __future__ import annotations

import pytest

from tuneforge.config.auto import auto_batch_size, auto_epochs, resolve_auto, size_factor
from tuneforge.config.load import load_config
from tuneforge.config.schema import TrainSection
from tuneforge.methods import METHODS, method_and_params
from tuneforge.utils.errors import ConfigError


def _write(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_yaml_plus_dotted_overrides(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    p = _write(tmp_path, "data:\n  train: d.jsonl\nmethod:\n  type: lora\n")
    cfg = load_config(p, ["train.learning_rate=3e-4", "method.r=4", "data.packing=true"])
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert method_and_params(cfg)[1].r == 4 and cfg.data.packing is True
    # relative dataset paths resolve against the YAML file's folder
    assert cfg.data.train[0].path == str((tmp_path / "d.jsonl").resolve())


def test_unknown_key_suggests_and_names_file(tmp_path):
    p = _write(tmp_path, "data:\n  train: x.jsonl\ntrain:\n  learning_rat: 1e-4\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "train.learning_rat" in msg and "did you mean 'train.learning_rate'" in msg


def test_unknown_top_level_section(tmp_path):
    p = _write(tmp_path, "data:\n  train: x.jsonl\nmethods:\n  type: lora\n")
    with pytest.raises(ConfigError, match="did you mean 'method'"):
        load_config(p)


def test_type_and_range_errors_name_the_key(tmp_path):
    p = _write(tmp_path, "data:\n  train: x.jsonl\n")
    with pytest.raises(ConfigError, match=r"train\.epochs.*'abc'"):
        load_config(p, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match=r"method\.r: Input should be greater than or equal to 1"):
        method_and_params(load_config(p, ["method.lora.r=0"]))  # methods validate their own keys
    with pytest.raises(ConfigError, match=r"unknown method 'qlora9'"):
        method_and_params(load_config(p, ["method.type=qlora9"]))


def test_missing_data_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="data.train is empty"):
        load_config(_write(tmp_path, "stage: sft\n"))
    with pytest.raises(ConfigError, match=r"run\.yaml:3: not valid YAML"):
        load_config(_write(tmp_path, "data:\n  train: [a\n  b: c\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_dataset_shorthands(tmp_path):
    cfg = load_config(None, ["data.train=[alpaca_en_demo, some/file.jsonl]"])
    assert cfg.data.train[0].name == "alpaca_en_demo" and cfg.data.train[1].path == "some/file.jsonl"


def test_auto_rules():
    assert auto_epochs(10) == 10  # small sets see >= 100 examples
    assert auto_epochs(1000) == 3
    assert auto_epochs(100_000) == 1
    # short answers (labels): about 2,000 examples seen are enough, at least one epoch
    assert auto_epochs(4000, answer_tokens=3) == 1 and auto_epochs(1000, answer_tokens=3) == 2
    assert auto_epochs(500, answer_tokens=3) == 3 and auto_epochs(10, answer_tokens=3) == 10
    assert auto_epochs(4000, answer_tokens=40) == 3  # long answers keep the rule by rows
    r4000 = resolve_auto(TrainSection(), METHODS["lora"], 4000, "cpu", answer_tokens=3.0)
    assert r4000.epochs == 1 and "short answers" in r4000.chosen["epochs"]


def test_adapter_methods_on_small_models_get_a_higher_auto_rate():
    assert size_factor(135_000_000) == pytest.approx(2.72, abs=0.01)
    assert size_factor(1_000_000_000) == size_factor(7_000_000_000) == size_factor(None) == 1.0
    assert size_factor(10_000_000) == 3.0  # capped
    lora = resolve_auto(TrainSection(batch_size=8), METHODS["lora"], 4000, "cpu", model_params=135_000_000)
    assert lora.learning_rate == pytest.approx(2e-4 * 2.72, rel=0.01) and "135M parameters" in lora.chosen[
        "learning_rate"]
    full = resolve_auto(TrainSection(batch_size=8), METHODS["full"], 4000, "cpu", model_params=135_000_000)
    assert full.learning_rate == pytest.approx(2e-5)  # methods that change base weights keep their rate
    assert auto_batch_size(50, "cpu") == 4 and auto_batch_size(100_000, "cpu") == 8
    assert auto_batch_size(100_000, "cuda") == 16
    r = resolve_auto(TrainSection(), METHODS["lora"], 1000, "cpu")
    assert r.epochs == 3 and r.batch_size == 4 and r.precision == "fp32" and r.gradient_checkpointing is False
    assert r.learning_rate == pytest.approx(2e-4 * (4 / 8) ** 0.5)
    assert set(r.chosen) >= {"epochs", "batch_size", "learning_rate"}
    fixed = resolve_auto(TrainSection(epochs=2, batch_size=3, learning_rate=1e-5), METHODS["full"], 10, "cpu")
    assert (fixed.epochs, fixed.batch_size, fixed.learning_rate) == (2, 3, 1e-5)
    assert "epochs" not in fixed.chosen


def test_a_first_argument_that_is_an_override_is_not_a_config_file():
    from tuneforge.config.load import config_arguments

    assert config_arguments("train.epochs=1", ["a=b"]) == (None, ["train.epochs=1", "a=b"])
    assert config_arguments("runs/x=1.yaml", None) == ("runs/x=1.yaml", [])
    assert config_arguments("cfg.yaml", ["a=b"]) == ("cfg.yaml", ["a=b"])
    assert config_arguments(None, None) == (None, [])


def test_learning_rate_multiplier_scales_auto_and_given_rates():
    auto = resolve_auto(TrainSection(batch_size=8), METHODS["lora"], 1000, "cpu").learning_rate
    halved = resolve_auto(TrainSection(batch_size=8, learning_rate_multiplier=0.5), METHODS["lora"], 1000, "cpu")
    assert halved.learning_rate == pytest.approx(auto / 2)
    assert "multiplier 0.5" in halved.chosen["learning_rate"]
    given = resolve_auto(TrainSection(batch_size=8, learning_rate=1e-4, learning_rate_multiplier=3), METHODS["lora"],
                         1000, "cpu")
    assert given.learning_rate == pytest.approx(3e-4)
