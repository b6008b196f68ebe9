"""RunRecorder: what a training run records, and that it never raises."""

from __future__ import annotations

import math

import pytest

from tuneforge.registry import queries
from tuneforge.registry.api import RunRecorder
from tuneforge.registry.records import Dataset
from tuneforge.registry.store import RegistryError
from sqlalchemy import func, select


def _start(**kw):
    args = dict(kind="train", config={"train": {"lr": 2e-4, "epochs": 1}, "seed": 1}, base_model="tiny",
                base_model_identity="sha256:abc", stage="sft", method="lora",
                datasets=[("demo", "fp0123456789", 3)], output_dir="/tmp/out", tags=["exp1"])
    args.update(kw)
    return RunRecorder.start(**args)


def test_full_lifecycle(store, tmp_path):
    rec = _start()
    assert rec.active
    for step in range(1, 4):
        rec.log_metrics(step, {"loss": 3.0 / step, "learning_rate": 1e-4, "note": "not a number"}, epoch=step / 3)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "w.bin").write_bytes(b"x" * 10)
    rec.add_artifact("adapter", tmp_path / "adapter")
    rec.add_eval("sentiment", {"accuracy": 0.75, "n": 4})
    rec.finish("succeeded")
    rec.finish("failed")  # only the first finish counts

    run = queries.get_run(store, rec.run_id[:6])
    assert run.status == "succeeded" and run.ended_at is not None and run.error is None
    assert run.config == {"train": {"lr": 2e-4, "epochs": 1}, "seed": 1}
    assert (run.stage, run.method, run.base_model_identity) == ("sft", "lora", "sha256:abc")
    assert run.tags == ["exp1"]
    assert run.datasets == [{"name": "demo", "fingerprint": "fp0123456789", "n_records": 3, "role": "train"}]
    series = queries.metric_series(store, rec.run_id)
    assert sorted(series) == ["learning_rate", "loss"]
    assert [p[0] for p in series["loss"]] == [1, 2, 3] and series["loss"][-1][1] == pytest.approx(1.0)
    assert queries.final_metrics(store, rec.run_id)["loss"] == pytest.approx(1.0)
    assert queries.evals(store, rec.run_id)[0]["metrics"] == {"accuracy": 0.75, "n": 4}
    art = queries.artifacts(store, rec.run_id)[0]
    assert art["kind"] == "adapter" and art["size_bytes"] == 10


def test_nan_metric_and_nan_config_do_not_break(store):
    rec = _start(config={"x": float("nan"), "p": object()})
    rec.log_metrics(1, {"loss": float("nan"), "grad_norm": math.inf})
    rec.finish()
    assert queries.final_metrics(store, rec.run_id) == {"loss": None, "grad_norm": math.inf}
    assert queries.get_run(store, rec.run_id).status == "succeeded"


def test_same_dataset_content_is_one_dataset_row(store):
    a, b = _start(), _start(datasets=[("renamed copy", "fp0123456789", 3), ("dev", "fpdev", 2, "eval")])
    a.finish()
    b.finish()
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 2
    assert {r.id for r in queries.list_runs(store, dataset="fp0123")} == {a.run_id, b.run_id}
    assert [r.id for r in queries.list_runs(store, dataset="fpdev")] == [b.run_id]


def test_list_filters(store):
    a = _start(tags=["x", "y"])
    a.finish("failed", "boom")
    b = _start(base_model="other", tags=["y"], group_id="sweep1")
    b.finish()
    assert [r.id for r in queries.list_runs(store, status="failed")] == [a.run_id]
    assert [r.id for r in queries.list_runs(store, base_model="other")] == [b.run_id]
    assert [r.id for r in queries.list_runs(store, tag=["x", "y"])] == [a.run_id]
    assert {r.id for r in queries.list_runs(store, tag=["y"])} == {a.run_id, b.run_id}
    assert [r.id for r in queries.list_runs(store, group="sweep1")] == [b.run_id]
    assert queries.list_runs(store, dataset="nope") == []


def test_context_manager_records_failure(store):
    with pytest.raises(ValueError):
        with _start() as rec:
            raise ValueError("diverged")
    run = queries.get_run(store, rec.run_id)
    assert run.status == "failed" and "diverged" in run.error


def test_parent_link_and_unknown_parent(store):
    parent = _start()
    parent.finish()
    child = _start(kind="export", parent_run_id=parent.run_id)
    assert queries.get_run(store, child.run_id).parent_run_id == parent.run_id
    assert queries.children(store, parent.run_id) == [child.run_id]
    orphan = _start(parent_run_id="doesnotexist")  # a bad parent is a warning, not an exception
    assert not orphan.active


def test_broken_registry_never_raises(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    monkeypatch.setenv("TUNEFORGE_REGISTRY_URL", f"sqlite:///{blocker}/sub/registry.db")
    rec = _start()
    assert not rec.active and rec.run_id is None
    rec.log_metrics(1, {"loss": 1.0})
    rec.add_artifact("adapter", tmp_path)
    rec.add_eval("x", {"a": 1})
    rec.finish()
    assert "warning" in capsys.readouterr().err


def test_failure_mid_run_turns_recording_off(store, capsys):
    rec = _start()
    store.engine.dispose()
    rec.store = type("Broken", (), {})()  # any write now fails inside recording.*
    rec.log_metrics(1, {"loss": 1.0})
    rec.flush()
    assert rec.store is None and "recording is off" in capsys.readouterr().err
    rec.log_metrics(2, {"loss": 1.0})  # no-op, no second warning
    rec.finish()
    assert "warning" not in capsys.readouterr().err


def test_registry_can_be_switched_off(monkeypatch, registry_url):
    monkeypatch.setenv("TUNEFORGE_NO_REGISTRY", "1")
    assert not _start().active


def test_ambiguous_and_unknown_ids(store):
    with pytest.raises(RegistryError, match="no run"):
        queries.resolve_run_id(store, "zzz")
    ids = {_start().run_id for _ in range(20)}
    first = sorted(ids)[0][0]
    if sum(i.startswith(first) for i in ids) > 1:
        with pytest.raises(RegistryError, match="ambiguous"):
            queries.resolve_run_id(store, first)
