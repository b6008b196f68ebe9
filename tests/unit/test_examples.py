"""Every example config validates, and (with the shared demo data) its datasets load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.config.load import load_config
from tuneforge.data.run_records import load_train_records
from tuneforge.utils.paths import shared_dir

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples_for_each_stage_and_method():
    cfgs = [load_config(p) for p in EXAMPLES]
    assert {c.stage for c in cfgs} == {"pt", "sft"}
    assert {c.method.type for c in cfgs} == {"full", "freeze", "lora"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads_its_data(path, monkeypatch):
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared is absent; set TUNEFORGE_SHARED to check the examples' data")
    monkeypatch.setenv("TUNEFORGE_SHARED", str(shared))
    cfg = load_config(path)
    train, val, summaries, skipped = load_train_records(cfg)
    assert train and not skipped
    assert all(fp for _, fp, _ in summaries)
    assert "${" not in str(cfg.data.train[0].path or "")
