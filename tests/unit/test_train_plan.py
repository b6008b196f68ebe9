"""The printed plan shows the eval/save schedule, with values derived from others and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config.auto import resolve_auto, resolve_schedule
from tuneforge.config.load import load_config
from tuneforge.methods import METHODS
from tuneforge.models.load import load_tokenizer
from tuneforge.models.source import resolve_model
from tuneforge.stages import stage_and_params
from tuneforge.train.data_prep import prepare_data
from tuneforge.train.report import print_plan


def _cfg(tmp_path, model_dir, *over):
    rows = [{"instruction": "q", "output": "short"}] * 8
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return load_config(None, [f"model.name={model_dir}", "model.template=chatml", f"data.train={f}",
                              "data.cutoff_len=32", *over])


def test_plan_shows_the_derived_schedule(tmp_path, tiny_model_dir, capsys):
    cfg = _cfg(tmp_path, tiny_model_dir, "data.val_size=2", "train.eval_steps=5", "train.load_best=eval_loss")
    tok = load_tokenizer(resolve_model(str(tiny_model_dir)))
    from tuneforge.data.templates import ensure_chat_template

    ensure_chat_template(tok, "chatml")
    data = prepare_data(cfg, tok, *stage_and_params(cfg))
    schedule = resolve_schedule(cfg.train, has_validation=bool(data.val))
    print_plan(cfg, data, resolve_auto(cfg.train, METHODS["lora"], data.n_train_rows, "cpu"), "cpu", Path("out"), None,
               schedule)
    shown = " ".join(capsys.readouterr().err.split())
    assert "validation" in shown and "eval loss every 5 steps" in shown
    assert "save_steps=5 (follows eval_steps" in shown and "eval_loss (lower is better)" in shown


def test_a_later_checkpoint_within_the_noise_of_the_best_is_kept():
    from types import SimpleNamespace

    from tuneforge.train.trainer import keep_later_within_noise

    trainer = SimpleNamespace(args=SimpleNamespace(metric_for_best_model="eval_cls/macro_f1", greater_is_better=True),
                              state=SimpleNamespace(best_metric=None, best_global_step=None, global_step=0))
    keep_later_within_noise(trainer, 0.035)
    for step, f1 in [(269, 0.875), (500, 0.870)]:  # the en_auto run: 0.005 apart on 200 scored rows
        trainer.state.global_step = step
        trainer._determine_best_metric({"eval_cls/macro_f1": f1})
    assert trainer.state.best_global_step == 500 and trainer.state.best_metric == 0.875
    trainer.state.global_step = 700
    assert not trainer._determine_best_metric({"eval_cls/macro_f1": 0.80})  # clearly worse: not kept
    assert trainer.state.best_global_step == 500


def test_the_noise_threshold_applies_without_early_stopping():
    from tuneforge.config.schema import TrainSection

    schedule = resolve_schedule(TrainSection(early_stopping_patience=None), has_validation=True,
                                has_classification=True, steps_per_epoch=100, total_steps=100, scored_rows=200)
    assert schedule.patience is None and schedule.threshold == pytest.approx(0.0354, abs=1e-4)
