"""An eval of a model or adapter that a training run produced is recorded as that run's child (lineage)."""

from __future__ import annotations

import json

import pytest

from tuneforge.eval.runner import EvalPlan, ModelSpec, _start_recorder
from tuneforge.registry import queries
from tuneforge.registry.api import RunRecorder
from tuneforge.registry.lineage import lineage
from tuneforge.registry.store import open_store
from tuneforge.registry.testing import registry_url_fixture

registry_url = registry_url_fixture()


@pytest.fixture
def trained_run(registry_url, tmp_path):
    """A finished training run whose folder holds run.json and an adapter folder, like `tuneforge train` leaves."""
    rec = RunRecorder.start(kind="train", config={}, base_model="tiny", stage="sft", method="lora",
                            datasets=[("stories", "fp-stories", 8)], output_dir=tmp_path / "run")
    rec.finish()
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_text(json.dumps({"status": "succeeded", "run_id": rec.run_id}))
    return rec.run_id, tmp_path / "run"


@pytest.mark.parametrize("spec_of", [lambda run: ModelSpec("tiny", str(run / "adapter")),  # model::runs/X/adapter
                                     lambda run: ModelSpec(str(run / "model")),  # a full fine-tune's model folder
                                     lambda run: ModelSpec("tiny", str(run))])  # the run folder itself
def test_eval_of_a_runs_output_is_its_child(trained_run, tmp_path, spec_of):
    train_id, run_dir = trained_run
    rec = _start_recorder(spec_of(run_dir), EvalPlan(), tmp_path / "report")
    rec.add_eval("task", {"accuracy": 0.5})
    rec.finish()
    store = open_store()
    assert queries.get_run(store, rec.run_id).parent_run_id == train_id
    tree = lineage(store, rec.run_id)
    assert tree["root"] == train_id and tree["datasets"][0]["fingerprint"] == "fp-stories"
    assert [c["id"] for c in tree["tree"]["children"]] == [rec.run_id]


def test_eval_outside_a_run_or_of_an_unknown_run_has_no_parent(trained_run, tmp_path):
    _train_id, run_dir = trained_run
    plain = _start_recorder(ModelSpec("tiny"), EvalPlan(), tmp_path / "a")
    (run_dir / "run.json").write_text(json.dumps({"run_id": "notregistered"}))  # e.g. trained with another registry
    foreign = _start_recorder(ModelSpec("tiny", str(run_dir / "adapter")), EvalPlan(), tmp_path / "b")
    for rec in (plain, foreign):
        assert rec.active  # an unknown parent never costs the eval its record
        rec.finish()
        assert queries.get_run(open_store(), rec.run_id).parent_run_id is None
