"""Optional mirrors: TensorBoard event files; unknown or missing mirrors only warn."""

from __future__ import annotations

import pytest

from tuneforge.registry.api import RunRecorder
from tuneforge.registry.store import close_store


@pytest.fixture
def registry_url(tmp_path, monkeypatch):
    """SQLite only: these tests are about the CLI / mirrors, the backends are covered by the other tests."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("TUNEFORGE_REGISTRY_URL", url)
    yield url
    close_store(url)


def test_tensorboard_mirror_writes_scalars(registry_url, tmp_path):
    rec = RunRecorder.start(kind="train", config={}, base_model="tiny", output_dir=tmp_path / "out",
                            mirror="tensorboard")
    rec.log_metrics(1, {"loss": 2.0}, epoch=0.5)
    rec.log_metrics(2, {"loss": 1.5})
    rec.add_eval("task", {"accuracy": 0.5})
    rec.finish()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == [2.0, 1.5]
    assert acc.Scalars("eval/task/accuracy")[0].value == 0.5


def test_unknown_mirror_warns(registry_url, capsys, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_MIRROR", "nosuch")
    rec = RunRecorder.start(kind="train", config={}, base_model="tiny")
    assert rec.active and rec.mirrors == []
    rec.finish()
    assert "unknown registry mirror" in capsys.readouterr().err
