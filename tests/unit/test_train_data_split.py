"""Validation rows are split off distinct rows, so up-sampling never puts one row in both train and validation;
run-folder helpers for resume (config comparison, metrics rows after the checkpoint, last row per step)."""

from __future__ import annotations

import json

from tuneforge.config.load import load_config
from tuneforge.data.run_records import load_train_records
from tuneforge.train.callbacks import drop_rows_after
from tuneforge.train.output import config_changes
from tuneforge.train.plots import last_per_step


def _data(path, n=10):
    path.write_text("\n".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(n)) + "\n")
    return path


def _key(r):
    return json.dumps(r.normalized(), sort_keys=True)


def test_ratio_upsampling_never_leaks_rows_into_validation(tmp_path):
    cfg = load_config(None, [f"data.train=[{{path: {_data(tmp_path / 'd.jsonl')}, ratio: 3}}]", "data.val_size=0.2"])
    train, val, _, _ = load_train_records(cfg)
    assert len(val) == 2 and len({_key(r) for r in val}) == 2  # 20% of the 10 distinct rows, each once
    assert not {_key(r) for r in train} & {_key(r) for r in val}
    assert len(train) == 24  # the 8 remaining rows, three times each


def test_registry_num_samples_upsampling_never_leaks_rows_into_validation(tmp_path):
    _data(tmp_path / "d.jsonl", n=6)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"up": {"file_name": "d.jsonl", "num_samples": 20}}))
    cfg = load_config(None, ["data.train=up", f"data.dataset_info={tmp_path}", "data.val_size=2"])
    train, val, _, _ = load_train_records(cfg)
    assert len(val) == 2 and not {_key(r) for r in train} & {_key(r) for r in val}
    assert len({_key(r) for r in train}) == 4


def test_config_changes_ignore_display_keys():
    old = {"train": {"learning_rate": 0.005, "logging_steps": 1}, "output": {"overwrite": False}, "tags": []}
    new = {"train": {"learning_rate": 0.05, "logging_steps": 5}, "output": {"overwrite": True}, "tags": ["x"],
           "data": {"max_samples": 100}}
    assert config_changes(old, new) == [("train.learning_rate", 0.005, 0.05), ("data.max_samples", "(not set)", 100)]
    # a key an older config lacks counts as its default: no change when the new value is that default
    assert config_changes(old, {**new, "train": {**new["train"], "eval_steps": 0}}, {"train": {"eval_steps": 0}}) == \
        config_changes(old, new)


def test_drop_rows_after_and_last_row_per_step(tmp_path):
    f = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.5}, {"step": 3, "eval_loss": 2}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert drop_rows_after(f, 2) == 2
    kept = [json.loads(x) for x in f.read_text().splitlines()]
    assert [r["step"] for r in kept] == [1, 2]
    redone = kept + [{"step": 2, "loss": 1.9}, {"step": 3, "loss": 1.4}]
    assert [(r["step"], r["loss"]) for r in last_per_step(redone, "loss")] == [(1, 3.0), (2, 1.9), (3, 1.4)]
