"""Bad input fails before the model loads, names file/line/field, and never clobbers a user's folder."""

from __future__ import annotations

import json

import pytest

from train_helpers import tiny_config, write_story_data
from tuneforge.train.runner import train
from tuneforge.utils.errors import ConfigError, DataError


def _bad_data(tmp_path):
    p = write_story_data(tmp_path / "bad.jsonl")
    lines = p.read_text().splitlines()
    lines[4] = json.dumps({"instruction": "Say hi", "output": 42})
    lines[9] = "{not json"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_bad_row_errors_before_model_load(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("tuneforge.models.load.load_model",
                        lambda *a, **k: pytest.fail("model loaded before data check"))
    cfg = tiny_config(tmp_path, tiny_model_dir, data=_bad_data(tmp_path))
    with pytest.raises(DataError) as e:
        train(cfg)
    assert "bad.jsonl:5" in str(e.value) and "output" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_on_error_skip_counts_rows(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, "data.on_error=skip", "train.max_steps=1", data=_bad_data(tmp_path))
    res = train(cfg)
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["data"]["skipped_rows"] == 2 and info["data"]["train"]["rows"] == 14


def test_refuses_foreign_non_empty_output(tmp_path, tiny_model_dir):
    (tmp_path / "run").mkdir()
    keep = tmp_path / "run" / "precious.txt"
    keep.write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        train(tiny_config(tmp_path, tiny_model_dir))
    assert keep.read_text() == "mine"


def test_finished_default_run_gets_a_new_folder(tmp_path, tiny_model_dir):
    over = ("train.max_steps=1", f"output.dir={tmp_path}/runs/{{run_name}}", "output.run_name=demo")
    first = train(tiny_config(tmp_path, tiny_model_dir, *over))
    second = train(tiny_config(tmp_path, tiny_model_dir, *over))
    assert first.output_dir.name == "demo" and second.output_dir.name == "demo-2"


def test_empty_dataset_is_an_error(tmp_path, tiny_model_dir):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n")
    with pytest.raises(DataError):
        train(tiny_config(tmp_path, tiny_model_dir, data=p))
