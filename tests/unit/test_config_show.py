"""`tuneforge config show`: every key from the schema with type, default and help; a config's resolved values."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.cli.config_cmd import all_rows
from tuneforge.config.schema import RunConfig
from tuneforge.methods import METHODS


@pytest.fixture()
def config(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}", "output": str(i)}) + "\n" for i in range(10)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model:\n  name: tinystories-656k\ndata:\n  train: [train.jsonl]\n  cutoff_len: 256\n"
                   "method:\n  lora: {r: 4}\ntrain:\n  learning_rate: 1.0e-3\n")
    return cfg


def _show(*args) -> tuple[dict, str | None]:
    result = CliRunner().invoke(app, ["config", "show", *args, "--json"])
    assert result.exit_code == 0, result.output
    return {r["key"]: r for r in json.loads(result.stdout)["keys"]}, json.loads(result.stdout)["note"]


def test_every_key_has_type_default_and_help():
    rows = {r["key"]: r for r in all_rows()}
    defaults = RunConfig.model_construct().model_dump()  # no validation: data.train may stay empty
    assert rows["data.cutoff_len"]["default"] == defaults["data"]["cutoff_len"] == 1024
    assert rows["train.epochs"]["type"] == "float|auto" and rows["train.epochs"]["default"] == "auto"
    assert rows["method.type"]["type"] == "|".join(METHODS)
    assert rows["method.r"]["default"] == 8 and "(method lora)" in rows["method.r"]["help"]
    assert rows["stage.type"]["type"].startswith("pt|sft|")
    assert rows["data.train[].path"]["type"] == "str|null"
    assert rows["eval.classification.labels"]["default"] == "(required)"
    missing = [k for k, r in rows.items() if not r["help"]]
    assert not missing, f"keys without a description in config/schema.py: {missing}"
    sections = {"model", "data", "method", "train", "output", "eval"}
    assert not sections & set(rows)  # sections are flattened into their keys


def test_config_values_and_resolved_auto(config):
    rows, note = _show(str(config), "train.epochs=2")
    assert note is None
    assert rows["train.epochs"]["value"] == 2 and rows["train.epochs"]["resolved"] is None
    assert rows["data.cutoff_len"]["value"] == 256 and rows["method.r"]["value"] == 4
    assert rows["train.batch_size"]["value"] == "auto" and rows["train.batch_size"]["resolved"].startswith("4 (")
    assert rows["train.learning_rate"]["value"] == 1e-3 and rows["train.learning_rate"]["resolved"] is None
    assert rows["method.alpha"]["resolved"].startswith("8 ")
    assert rows["train.precision"]["resolved"].startswith("fp32")
    assert rows["data.train[].path"]["value"] == [str(config.parent / "train.jsonl")]
    auto_epochs, _ = _show(str(config))
    assert auto_epochs["train.epochs"]["resolved"].startswith("10 (10 rows")


def test_unreadable_data_leaves_auto_unresolved_with_a_note(config, tmp_path):
    rows, note = _show(str(config), f"data.train={tmp_path / 'missing.jsonl'}")
    assert "auto values need the training data" in note and "missing.jsonl" in note
    assert rows["train.batch_size"]["resolved"] is None and rows["method.alpha"]["resolved"]


def test_table_output_and_errors(config):
    result = CliRunner().invoke(app, ["config", "show", str(config)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "cutoff_len" in result.stdout and "longest training sequence" in result.stdout and "→" in result.stdout
    bad = CliRunner().invoke(app, ["config", "show", str(config), "train.epoch=2"])
    assert bad.exit_code != 0 and "did you mean 'train.epochs'" in str(bad.exception)
