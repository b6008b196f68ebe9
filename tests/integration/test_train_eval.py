"""Evaluation during training: eval loss and eval.classification on one schedule, the best checkpoint kept,
early stopping, and the trackers fed by the Trainer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import tiny_config
from tuneforge.eval.callback import classification_callbacks
from tuneforge.train.runner import train
from tuneforge.utils.errors import ConfigError


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _yes_no_data(path, n=16):
    rows = [{"instruction": f"Is {i} even? Answer yes or no.", "output": "yes" if i % 2 == 0 else "no"}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_val_size_is_evaluated_every_eval_steps(tmp_path, tiny_model_dir):
    # 16 rows, 4 held out → 12 train rows, batch 4 → 3 steps per epoch, 6 steps in all
    res = train(tiny_config(tmp_path, tiny_model_dir, "data.val_size=4", "train.eval_steps=2",
                            "train.load_best=null"))
    evals = [r for r in _rows(res.output_dir) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert res.metrics["eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["metrics"]["eval_loss"] == pytest.approx(evals[-1]["eval_loss"]) and info["best"] is None


def test_eval_at_epoch_end_without_load_best_and_final_metrics_describe_the_last_step(tmp_path, tiny_model_dir):
    res = train(tiny_config(tmp_path, tiny_model_dir, "data.val_size=4", "train.max_steps=4", "train.load_best=null"))
    steps = [r["step"] for r in _rows(res.output_dir) if "eval_loss" in r]
    assert steps == [3, 4]  # end of epoch 1, then once more for the final model (step 4, mid-epoch)
    assert "eval_loss" in res.metrics


def test_load_best_keeps_the_best_checkpoint_as_the_adapter(tmp_path, tiny_model_dir):
    # a learning rate this large makes the eval loss move a lot, so "best" is rarely simply the last step
    res = train(tiny_config(tmp_path, tiny_model_dir, "data.val_size=4", "train.eval_steps=1",
                            "train.learning_rate=0.3", "train.load_best=eval_loss", "train.save_total_limit=1"))
    evals = {r["step"]: r["eval_loss"] for r in _rows(res.output_dir) if "eval_loss" in r}
    best_step = min(evals, key=evals.get)
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["best"]["metric"] == "eval_loss" and info["best"]["step"] == best_step
    assert info["best"]["value"] == pytest.approx(evals[best_step])
    assert res.metrics["eval_loss"] == pytest.approx(evals[best_step])
    ckpt = load_file(str(res.output_dir / "checkpoints" / f"checkpoint-{best_step}" / "adapter_model.safetensors"))
    final = load_file(str(res.final_dir / "adapter_model.safetensors"))
    for k in final:
        torch.testing.assert_close(final[k], ckpt[k], rtol=0, atol=0, msg=k)


def test_classification_rides_the_eval_schedule_and_can_pick_the_best(tmp_path, tiny_model_dir):
    data = _yes_no_data(tmp_path / "yn.jsonl")
    cfg = tiny_config(tmp_path, tiny_model_dir, "data.val_size=4", "train.eval_steps=2",
                      "eval.classification={labels: ['yes', 'no'], mode: score}", "train.load_best=eval_cls/accuracy",
                      "train.early_stopping_patience=null", data=data)
    res = train(cfg, eval_callbacks=classification_callbacks)
    rows = _rows(res.output_dir)
    assert [r["step"] for r in rows if "eval_cls/accuracy" in r] == [2, 4, 6]
    assert [r["step"] for r in rows if "eval_loss" in r] == [2, 4, 6]
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["best"]["metric"] == "eval_cls/accuracy" and info["best"]["step"] in (2, 4, 6)
    assert 0 <= res.metrics["eval_cls/accuracy"] <= 1


def test_classification_without_an_evaluator_is_an_error_before_model_load(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("tuneforge.models.load.load_model", lambda *a, **k: pytest.fail("model loaded"))
    cfg = tiny_config(tmp_path, tiny_model_dir, "data.val_size=4", "eval.classification={labels: [a, b]}")
    with pytest.raises(ConfigError, match="eval_callbacks"):
        train(cfg)


def test_early_stopping_ends_a_run_that_stops_improving(tmp_path, tiny_model_dir):
    res = train(tiny_config(tmp_path, tiny_model_dir, "data.val_size=4", "train.eval_steps=1", "train.epochs=20",
                            "train.learning_rate=1.0", "train.load_best=eval_loss",
                            "train.early_stopping_patience=1"))
    info = json.loads((res.output_dir / "run.json").read_text())
    assert res.status == "succeeded" and info["status"] == "succeeded"
    last = max(r["step"] for r in _rows(res.output_dir))
    assert last < 60  # 20 epochs × 3 steps: stopped well before


def test_auto_keeps_the_best_evaluation_and_stops_when_it_stops_improving(tmp_path, tiny_model_dir):
    # defaults only (load_best, eval_steps, early_stopping_patience all auto); a learning rate this large makes the
    # eval loss rise after its fourth step, and 20 epochs × 3 steps would take 60 steps without early stopping
    res = train(tiny_config(tmp_path, tiny_model_dir, "data.val_size=4", "train.epochs=20",
                            "train.learning_rate=0.1"))
    info = json.loads((res.output_dir / "run.json").read_text())
    assert {"load_best", "eval_steps", "early_stopping_patience"} <= set(info["auto"])
    evals = {r["step"]: r["eval_loss"] for r in _rows(res.output_dir) if "eval_loss" in r}
    # 3 steps per epoch; 4 validation rows against 12 training rows: an evaluation costs ~0.4 steps, so one every
    # step would spend more than a fifth of the compute on evaluating → every 2 steps
    assert list(evals)[:2] == [2, 4]
    best_step = min(evals, key=evals.get)
    assert info["best"]["metric"] == "eval_loss" and info["best"]["step"] == best_step
    assert max(evals) == best_step + 2  # half an epoch (one evaluation) without a better loss, then stop
    assert res.status == "succeeded" and max(evals) < 60
    saved = (res.output_dir / "config.yaml").read_text()
    assert "load_best: eval_loss" in saved and "early_stopping_patience: 1" in saved and "eval_steps: 2" in saved


def test_load_best_without_validation_fails_before_model_load(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("tuneforge.models.load.load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match="train.load_best"):
        train(tiny_config(tmp_path, tiny_model_dir, "train.load_best=eval_loss"))


def test_report_to_tensorboard_writes_event_files(tmp_path, tiny_model_dir):
    # tiny_config turns TensorBoard off with the older shorthand output.tensorboard=false; turn it back on
    res = train(tiny_config(tmp_path, tiny_model_dir, "output.tensorboard=true", "train.max_steps=2",
                            "data.val_size=4", "train.eval_steps=1"))
    events = list((res.output_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(res.output_dir / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "eval/loss"} <= set(acc.Tags()["scalars"])
