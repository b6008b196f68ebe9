"""Every example runs on a fresh install: no TUNEFORGE_SHARED, no ../shared folder — only the repo and the embedded
model. Each one validates, names its model, loads its data, and says what it shows and how to run it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tuneforge.config.load import load_config
from tuneforge.data.catalog import DatasetSpec, load_dataset
from tuneforge.data.run_records import load_train_records

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples_for_each_stage_and_method(fresh_install):
    cfgs = [load_config(p) for p in EXAMPLES]
    from tuneforge.stages import STAGES

    assert {c.stage.type for c in cfgs} == set(STAGES)
    from tuneforge.methods import METHODS

    assert {c.method.type for c in cfgs} == set(METHODS)
    assert {p.stem for p in EXAMPLES} >= {f"sft_{m}" for m in METHODS if m != "lora"}
    assert {p.stem for p in EXAMPLES} >= {"hello", "quickstart", "sft_lora", "sft_full", "sft_dora", "sft_freeze",
                                          "pt_lora", "rm", "dpo", "simpo", "orpo", "kto"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_says_what_it_shows_and_how_to_run_it(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 30, f"{path.name}: first line must say what it shows"
    header = [line for line in lines if line.startswith("#")]
    assert any(f"tuneforge train examples/{path.name}" in line for line in header), path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_works_on_a_fresh_install(path, fresh_install):
    from tuneforge.models.source import resolve_model

    cfg = load_config(path)
    assert "${" not in str(cfg.model_dump())
    assert resolve_model(cfg.model.name).kind != "hub", f"{path.name}: {cfg.model.name} is not installed locally"
    train, val, summaries, skipped = load_train_records(cfg)
    assert len(train) >= 8 and not skipped
    assert all(fp for _, fp, _ in summaries)
    for entry in cfg.data.train:
        assert Path(entry.path).is_relative_to(path.parent / "data"), "example data ships in examples/data/"
    if cfg.data.val_size:
        assert val


def test_the_classification_example_has_balanced_labelled_data(fresh_install):
    from tuneforge.eval.taskdata import check_labels

    cfg = load_config(next(p for p in EXAMPLES if p.name == "sft_freeze.yaml"))
    cls = cfg.eval.classification
    dev = load_dataset(DatasetSpec(path=cls.data)).records
    train, _, _, _ = load_train_records(cfg)
    for records in (train, dev):
        check_labels(records, cls.labels)
        answers = Counter(r.messages[-1]["content"] for r in records)
        assert set(answers) == set(cls.labels) and max(answers.values()) - min(answers.values()) <= 2, answers
    assert len(dev) >= 40 and len(train) >= 100
    assert not {r.messages[-2]["content"] for r in train} & {r.messages[-2]["content"] for r in dev}  # no leakage
