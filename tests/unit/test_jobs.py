"""Fine-tuning jobs without a model: request → run config, and the state machine on a real registry."""

from __future__ import annotations

import pytest

from tuneforge.jobs import store as js
from tuneforge.jobs.spec import JobInputs, model_name, normalize_method, run_config, validate_config
from tuneforge.registry.store import open_store
from tuneforge.registry.testing import registry_url_fixture
from tuneforge.utils.errors import ConfigError

INPUTS = JobInputs("/models/base", "chatml", "/s/files/file-a.jsonl", None, "/s/jobs/ftjob-abc/run")


def test_openai_hyperparameters_become_the_run_config():
    method = normalize_method({"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5}}}, None)
    cfg = run_config(method, 7, {"method.type": "dora", "method.r": 4}, INPUTS)
    assert cfg["train"]["epochs"] == 3.0 and cfg["train"]["batch_size"] == "auto" and cfg["train"]["seed"] == 7
    assert cfg["train"]["learning_rate_multiplier"] == 0.5 and cfg["stage"] == {"type": "sft"}
    assert cfg["method"] == {"type": "dora", "r": 4} and cfg["output"]["run_name"] == "ftjob-abc"
    assert cfg["data"]["train"] == [{"path": "/s/files/file-a.jsonl"}] and cfg["model"]["template"] == "chatml"
    legacy = normalize_method(None, {"n_epochs": 2})
    assert legacy == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    dpo = run_config(normalize_method({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}, None), 1, None,
                     INPUTS)
    assert dpo["stage"] == {"type": "dpo", "beta": 0.2} and "learning_rate_multiplier" not in dpo["train"]
    assert model_name("tiny", "colors", "ftjob-abc") == "ft:tiny:colors:abc" and model_name("t", None, "ftjob-x") \
        == "ft:t::x"


@pytest.mark.parametrize("method, overrides, why", [
    ({"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}, None, "positive number"),
    ({"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 2.5}}}, None, "whole number"),
    ({"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": True}}}, None, "positive number"),
    ({"type": "supervised"}, {"model.name": "other"}, "set by the server"),
    ({"type": "supervised"}, {"data.train": []}, "set by the server"),
    ({"type": "supervised"}, {"output.dir": "/tmp"}, "set by the server"),
])
def test_bad_job_settings_are_refused_before_anything_runs(method, overrides, why):
    with pytest.raises(ConfigError, match=why):
        run_config(normalize_method(method, None), 1, overrides, INPUTS)


def test_the_config_is_validated_like_tuneforge_train(tiny_model_dir, tmp_path):
    inputs = JobInputs(str(tiny_model_dir), "chatml", str(tmp_path / "d.jsonl"), None, str(tmp_path / "j" / "run"))
    method = normalize_method({"type": "supervised"}, None)
    assert validate_config(run_config(method, 1, {"train.max_steps": 3}, inputs)).train.max_steps == 3
    with pytest.raises(ConfigError, match="did you mean"):
        validate_config(run_config(method, 1, {"train.max_step": 3}, inputs))
    with pytest.raises(ConfigError):
        normalize_method({"type": "unsupervised"}, None)
    with pytest.raises(ConfigError, match="not also at the top level"):
        normalize_method({"type": "supervised"}, {"n_epochs": 1})


registry_url = registry_url_fixture()  # SQLite, and PostgreSQL when a server is configured (CI)


@pytest.fixture
def store(registry_url):
    return open_store(registry_url)


def _job(store, status="queued"):
    return js.add_job(store, id=f"ftjob-{status}", project="p", model="m", training_file="file-x", seed=1,
                      method={"type": "supervised"}, status=status)


def test_the_state_machine_allows_what_openai_does_and_explains_the_rest(store):
    running = _job(store, "running")
    assert js.transition(store, "p", running.id, "pause").status == "pausing"
    assert js.get_job(store, None, running.id).requested == "pause"
    with pytest.raises(js.JobConflict, match="pausing already"):
        js.transition(store, "p", running.id, "pause")
    with pytest.raises(js.JobConflict, match="resumes once it has paused"):
        js.transition(store, "p", running.id, "resume")
    queued = _job(store, "queued")
    assert js.transition(store, "p", queued.id, "pause").status == "paused"
    assert js.transition(store, "p", queued.id, "resume").status == "queued"
    cancelled = js.transition(store, "p", queued.id, "cancel")
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None and cancelled.requested is None
    with pytest.raises(js.JobConflict, match="cancelled already"):
        js.transition(store, "p", queued.id, "cancel")
    assert js.transition(store, "p", running.id, "cancel").requested == "cancel"  # its worker must stop
    with pytest.raises(js.NotFound):
        js.transition(store, "other-project", running.id, "cancel")
    events = [e.message for e in js.list_events(store, running.id, limit=10)[0]]
    assert events[0] == "Fine-tuning job cancelled" and events[-1].startswith("Pausing")


def test_event_pages_go_from_newest_to_oldest(store):
    job = _job(store)
    for i in range(5):
        js.add_event(store, job.id, f"event {i}")
    first, more = js.list_events(store, job.id, limit=2)
    assert [e.message for e in first] == ["event 4", "event 3"] and more
    rest, more = js.list_events(store, job.id, after=f"ftevent-{first[-1].id}", limit=10)
    assert [e.message for e in rest] == ["event 2", "event 1", "event 0"] and not more
    with pytest.raises(js.NotFound):
        js.list_events(store, job.id, after="ftevent-xyz")
