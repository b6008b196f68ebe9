"""Config keys of the training loop: lr_scheduler choices, load_best / early stopping checks, eval and save
schedules, report_to and its tensorboard shorthand, resume=force."""

from __future__ import annotations

import pytest

from tuneforge.config.auto import greater_is_better, resolve_schedule
from tuneforge.config.load import load_config
from tuneforge.config.schema import LR_SCHEDULERS, TrainSection
from tuneforge.utils.errors import ConfigError

BASE = ["data.train=d.jsonl"]


def _cfg(*over):
    return load_config(None, BASE + list(over))


def test_scheduler_choices_are_transformers_own():
    from transformers.trainer_utils import SchedulerType

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


def test_unknown_scheduler_fails_at_config_time_with_did_you_mean():
    with pytest.raises(ConfigError) as err:
        _cfg("train.lr_scheduler=cosin")
    assert "train.lr_scheduler" in str(err.value) and "did you mean 'cosine'" in str(err.value)
    assert _cfg("train.lr_scheduler=linear").train.lr_scheduler == "linear"


@pytest.mark.parametrize("over, needle", [
    (["train.load_best=eval_loss"], "needs validation data"),
    (["data.val_size=0.2", "train.load_best=eval_cls/accuracy"], "needs eval.classification"),
    (["data.val_size=0.2", "train.load_best=null", "train.early_stopping_patience=2"], "needs train.load_best"),
    (["train.early_stopping_patience=0"], "'auto' or null"),
    (["data.val_size=0.2", "train.load_best=eval_loss", "train.save_steps=3", "train.eval_steps=2"],
     "not a multiple"),
])
def test_load_best_checks_name_the_key(over, needle):
    with pytest.raises(ConfigError) as err:
        _cfg(*over)
    assert needle in str(err.value) and "train." in str(err.value)


def test_load_best_names_a_metric_the_stage_logs():
    from tuneforge.config.schema import check_load_best
    from tuneforge.stages import STAGES

    cfg = _cfg("data.val_size=0.2", "train.load_best=eval_los")  # the config alone does not know the stage's metrics
    with pytest.raises(ValueError, match="did you mean 'eval_loss'"):
        check_load_best(cfg, metrics=STAGES["sft"].metrics)


def test_load_best_accepts_existing_metrics():
    assert _cfg("data.val_size=0.2", "train.load_best=eval_loss").train.load_best == "eval_loss"
    cfg = _cfg("data.eval=dev.jsonl", "eval.classification={labels: [a, b]}", "train.load_best=eval_cls/macro_f1",
               "train.early_stopping_patience=3")
    assert cfg.train.early_stopping_patience == 3


def test_direction_is_inferred_from_the_metric():
    assert not greater_is_better("eval_loss") and not greater_is_better("eval_cls/n_unparseable")
    assert greater_is_better("eval_cls/accuracy") and greater_is_better("eval_cls/macro_f1")


def test_schedules_line_up_when_load_best_is_on():
    s = resolve_schedule(TrainSection(eval_steps=5, load_best="eval_loss"), has_validation=True)
    assert (s.eval_steps, s.save_steps) == (5, 5) and "save_steps=5" in s.notes[0]
    s = resolve_schedule(TrainSection(save_steps=4, load_best="eval_loss"), has_validation=True)
    assert (s.eval_steps, s.save_steps) == (4, 4) and "eval_steps=4" in s.notes[0]
    s = resolve_schedule(TrainSection(eval_steps=5, load_best=None), has_validation=True)
    assert (s.eval_steps, s.save_steps, s.notes) == (5, 0, []) and s.evaluate and s.load_best is None
    assert not resolve_schedule(TrainSection(eval_steps=5), has_validation=False).evaluate


def test_auto_schedule_keeps_the_best_and_stops_when_validation_stops_improving():
    s = resolve_schedule(TrainSection(), has_validation=True, steps_per_epoch=500, total_steps=1500)
    assert (s.load_best, s.greater_is_better, s.eval_steps, s.save_steps, s.patience) == \
        ("eval_loss", False, 125, 125, 2)
    assert set(s.chosen) == {"load_best", "eval_steps", "early_stopping_patience"}
    s = resolve_schedule(TrainSection(), has_validation=True, has_classification=True, steps_per_epoch=500,
                         total_steps=1500)
    assert (s.load_best, s.greater_is_better) == ("eval_cls/macro_f1", True)
    short = resolve_schedule(TrainSection(max_steps=8), has_validation=True, steps_per_epoch=500, total_steps=8)
    assert short.eval_steps == 2  # at least four evaluations in a run shorter than an epoch
    # an evaluation as costly as 50 training steps: spaced so that evaluating stays under a fifth of training
    costly = resolve_schedule(TrainSection(), has_validation=True, steps_per_epoch=500, total_steps=1500,
                              eval_cost_steps=50)
    assert costly.eval_steps == 250 and costly.save_steps == 250
    assert costly.patience == 1  # half an epoch without a better value: one evaluation this far apart
    assert resolve_schedule(TrainSection(), has_validation=True, steps_per_epoch=500, total_steps=100,
                            eval_cost_steps=50).eval_steps == 100  # never later than the run's last step


def test_auto_threshold_ignores_changes_within_the_noise_of_the_scored_rows():
    cls = resolve_schedule(TrainSection(), has_validation=True, has_classification=True, steps_per_epoch=500,
                           total_steps=1500, scored_rows=200)
    assert cls.threshold == round(0.5 / 200 ** 0.5, 4) and "early_stopping_threshold" in cls.chosen
    loss = resolve_schedule(TrainSection(), has_validation=True, steps_per_epoch=500, total_steps=1500,
                            scored_rows=200)
    assert loss.threshold == 0.0  # eval_loss is averaged over every validation token
    fixed = resolve_schedule(TrainSection(early_stopping_threshold=0.01), has_validation=True,
                             has_classification=True, steps_per_epoch=500, total_steps=1500, scored_rows=200)
    assert fixed.threshold == 0.01


def test_auto_schedule_yields_to_explicit_values_and_to_missing_validation():
    none = resolve_schedule(TrainSection(), has_validation=False, steps_per_epoch=500, total_steps=1500)
    assert (none.evaluate, none.load_best, none.patience, none.eval_steps, none.chosen) == (False, None, None, 0, {})
    last = resolve_schedule(TrainSection(load_best=None), has_validation=True, steps_per_epoch=500, total_steps=500)
    assert (last.load_best, last.patience, last.eval_steps) == (None, None, 0)  # each epoch, keep the last
    patient = resolve_schedule(TrainSection(early_stopping_patience=None), has_validation=True,
                               steps_per_epoch=40, total_steps=120)
    assert (patient.load_best, patient.patience, patient.eval_steps) == ("eval_loss", None, 10)
    saved = resolve_schedule(TrainSection(save_steps=50), has_validation=True, steps_per_epoch=500, total_steps=500)
    assert (saved.eval_steps, saved.save_steps) == (50, 50)  # auto eval follows an explicit checkpoint schedule


def test_report_to_and_tensorboard_shorthand():
    assert _cfg().output.report_to == ["tensorboard"]
    assert _cfg("output.tensorboard=false").output.report_to == []
    assert _cfg("output.report_to=[wandb]", "output.tensorboard=true").output.report_to == ["wandb", "tensorboard"]
    with pytest.raises(ConfigError, match="output.report_to"):
        _cfg("output.report_to=[tensorbord]")
    with pytest.raises(ConfigError, match="contradicts output.report_to"):
        _cfg("output.report_to=[tensorboard]", "output.tensorboard=false")


def test_resume_force_is_a_choice():
    assert _cfg("train.resume=force").train.resume == "force"
