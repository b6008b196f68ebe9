"""Resuming is only for the same run: a changed config is refused (unless train.resume=force), a failure after the
run is recorded marks it failed, counters continue and redone steps are not logged twice."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback

from train_helpers import StopAt, tiny_config
from tuneforge.train.runner import train
from tuneforge.utils.errors import ConfigError


class CrashAt(TrainerCallback):
    """Dies after step `step` was logged, like a killed process: no checkpoint for that step."""

    def __init__(self, step):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kw):
        if state.global_step == self.step and logs and "loss" in logs:
            raise RuntimeError("simulated crash")


def _interrupted(tmp_path, tiny_model_dir, *over):
    cfg = tiny_config(tmp_path, tiny_model_dir, "train.save_steps=2", *over)
    assert train(cfg, extra_callbacks=[StopAt(2)]).status == "interrupted"
    return cfg


def test_changed_config_is_refused_before_model_load(tmp_path, tiny_model_dir, monkeypatch):
    _interrupted(tmp_path, tiny_model_dir)
    monkeypatch.setattr("tuneforge.models.load.load_model", lambda *a, **k: pytest.fail("model loaded"))
    changed = tiny_config(tmp_path, tiny_model_dir, "train.save_steps=2", "train.learning_rate=0.05",
                          "data.max_samples=10")
    with pytest.raises(ConfigError) as err:
        train(changed)
    msg = str(err.value) + str(err.value.hint)
    assert "train.learning_rate: 0.005 → 0.05" in msg and "data.max_samples: None → 10" in msg
    assert "output.dir" in msg and "train.resume=force" in msg


def test_force_resumes_and_unchanged_display_keys_resume(tmp_path, tiny_model_dir):
    _interrupted(tmp_path, tiny_model_dir)
    same = train(tiny_config(tmp_path, tiny_model_dir, "train.save_steps=2", "output.tensorboard=true",
                             "train.logging_steps=2"))  # display-only keys may change
    assert same.status == "succeeded"


def test_force_resumes_a_changed_config(tmp_path, tiny_model_dir):
    _interrupted(tmp_path, tiny_model_dir)
    res = train(tiny_config(tmp_path, tiny_model_dir, "train.save_steps=2", "train.learning_rate=0.05",
                            "train.resume=force"))
    assert res.status == "succeeded"
    rows = [json.loads(x) for x in (res.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert min(r["step"] for r in rows if r["step"] > 2) == 3  # continued after checkpoint-2


def test_failure_in_trainer_setup_marks_the_run_failed(tmp_path, tiny_model_dir, monkeypatch):
    import tuneforge.train.runner as runner

    def boom(*a, **k):
        raise RuntimeError("bad arguments")

    monkeypatch.setattr(runner, "training_arguments", boom)
    with pytest.raises(RuntimeError, match="bad arguments"):
        train(tiny_config(tmp_path, tiny_model_dir))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "bad arguments" in info["error"]
    from tuneforge.registry.queries import get_run
    from tuneforge.registry.store import open_store

    assert get_run(open_store(), info["run_id"]).status == "failed"


def test_crash_resume_continues_token_counts_and_logs_each_step_once(tmp_path, tiny_model_dir):
    straight = train(tiny_config(tmp_path / "a", tiny_model_dir, "train.save_steps=2"))
    cfg = tiny_config(tmp_path / "b", tiny_model_dir, "train.save_steps=2")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, extra_callbacks=[CrashAt(3)])  # checkpoint-2 exists, step 3 was logged
    resumed = train(cfg)
    assert resumed.status == "succeeded"
    rows = [json.loads(x) for x in (resumed.output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 9))  # 16 rows / batch 4 × 2 epochs
    assert resumed.metrics["real_tokens"] == straight.metrics["real_tokens"]
    assert resumed.metrics["padding_fraction"] == straight.metrics["padding_fraction"]
    by_step = {r["step"]: r["real_tokens"] for r in rows if "loss" in r}
    assert by_step == {r["step"]: r["real_tokens"] for r in
                       (json.loads(x) for x in (straight.output_dir / "metrics.jsonl").read_text().splitlines())
                       if "loss" in r}
