"""Resolve `auto` training values from dataset size, method and device, and say what was chosen.

Rules (documented in README "Auto values"):
- epochs: 3 by default; small sets get more epochs so the model sees at least ~100 examples (at most 25 epochs);
  large sets get fewer so it sees at most ~25,000 examples (at least 1 epoch). This is the rule the OpenAI
  fine-tuning API documents for its `n_epochs: auto`. Short answers (a label: at most 8 trained tokens per example
  on average) need fewer passes: epochs are cut so the model sees about 2,000 examples, but never below 1 (measured
  on sentiment_en / sentiment_zh, 4,000 rows: one epoch reached the accuracy of three epochs with early stopping,
  in a third of the steps).
- batch_size: about 0.2% of the training rows, rounded to a power of two, within [4, 16] (capped at 8 on CPU).
- learning_rate: the method's base rate (its `base_lr`: lora 2e-4, freeze 5e-5, full 2e-5, ...; `tuneforge methods`
  lists them) times sqrt(batch_size / 8), times the stage's factor. Adapter methods on a model under 1B parameters
  also get sqrt(1B / parameters), at most 3× (SmolLM2-135M: 2.7×; measured on sentiment_en / sentiment_zh with
  LoRA r16, 4,000 rows, one epoch: 5e-4 beat 2e-4 on both, by half a point); from 1B parameters up the rate is
  the base rate.
- gradient_checkpointing: off on CPU (it trades compute for memory, and CPU runs are compute bound); on a GPU for
  methods that train the base weights themselves (full, freeze, bitfit).
- precision: fp32 on CPU; bf16 on GPUs that support it, else fp16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_TARGET_EPOCHS = 3
_MIN_EXAMPLES, _MAX_EXAMPLES = 100, 25_000
_MIN_EPOCHS, _MAX_EPOCHS = 1, 25
_SHORT_ANSWER_TOKENS = 8  # trained tokens per example at most: a label and its end-of-turn
_SHORT_ANSWER_EXAMPLES = 2000  # examples seen that are enough to learn a labelling


@dataclass
class Resolved:
    epochs: float
    batch_size: int
    learning_rate: float
    gradient_checkpointing: bool
    precision: str
    chosen: dict  # key → human-readable reason, for values that were `auto`


def auto_epochs(n_rows: int, answer_tokens: float | None = None) -> int:
    """`answer_tokens`: trained tokens per example on average (None: unknown, the rule by rows alone)."""
    n = max(n_rows, 1)
    if n * _TARGET_EPOCHS < _MIN_EXAMPLES:
        epochs = min(_MAX_EPOCHS, max(_TARGET_EPOCHS, _MIN_EXAMPLES // n))
    elif n * _TARGET_EPOCHS > _MAX_EXAMPLES:
        epochs = max(_MIN_EPOCHS, _MAX_EXAMPLES // n)
    else:
        epochs = _TARGET_EPOCHS
    if answer_tokens is not None and answer_tokens <= _SHORT_ANSWER_TOKENS:
        epochs = min(epochs, max(_MIN_EPOCHS, math.ceil(_SHORT_ANSWER_EXAMPLES / n)))
    return epochs


def auto_batch_size(n_rows: int, device: str) -> int:
    raw = max(n_rows * 0.002, 1)
    bs = 2 ** round(math.log2(raw))
    return int(min(max(bs, 4), 8 if device == "cpu" else 16))


_SIZE_REFERENCE = 1e9  # parameters from which an adapter method's base rate applies as it is
_MAX_SIZE_FACTOR = 3.0


def size_factor(n_params: int | None) -> float:
    """An adapter method's rate factor for a model of `n_params` parameters (1 when unknown or ≥ 1B)."""
    if not n_params:
        return 1.0
    return min(_MAX_SIZE_FACTOR, max(1.0, math.sqrt(_SIZE_REFERENCE / n_params)))


def auto_learning_rate(base_lr: float, batch_size: int, factor: float = 1.0) -> float:
    return base_lr * math.sqrt(batch_size / 8) * factor


def resolve_auto(train, method, n_rows: int, device: str, has_cuda_bf16: bool = False, *,
                 lr_scale: float = 1.0, answer_tokens: float | None = None,
                 model_params: int | None = None) -> Resolved:
    """Fill every `auto` of a TrainSection; returns values plus the reasons for those that were auto. `method`: the
    configured tuneforge.methods.Method (its name, base_lr and frozen_base); `lr_scale`: the stage's factor on the
    method's base rate (preference stages train at a lower rate than SFT); `answer_tokens`: trained tokens per
    training example, when the stage counts them; `model_params`: the model's size, when known."""
    chosen: dict[str, str] = {}
    epochs = train.epochs
    if epochs == "auto":
        epochs = auto_epochs(n_rows, answer_tokens)
        short = answer_tokens is not None and answer_tokens <= _SHORT_ANSWER_TOKENS
        chosen["epochs"] = (f"{epochs} ({n_rows} rows with short answers, {answer_tokens:.1f} trained tokens each: "
                            f"about {_SHORT_ANSWER_EXAMPLES:,} examples seen)" if short and epochs < auto_epochs(n_rows)
                            else f"{epochs} ({n_rows} rows; aim for 100–25,000 examples seen)")
    bs = train.batch_size
    if bs == "auto":
        bs = auto_batch_size(n_rows, device)
        chosen["batch_size"] = f"{bs} (~0.2% of {n_rows} rows, within [4, {8 if device == 'cpu' else 16}])"
    lr = train.learning_rate
    if lr == "auto":
        size = size_factor(model_params) if method.frozen_base else 1.0
        lr = auto_learning_rate(method.base_lr, bs, size) * lr_scale
        stage = f" × stage {lr_scale:g}" if lr_scale != 1 else ""
        small = f" × {size:.2f} for {model_params / 1e6:.0f}M parameters" if size != 1 else ""
        chosen["learning_rate"] = f"{lr:.2e} ({method.name} base {method.base_lr:.0e} × sqrt({bs}/8){small}{stage})"
    if train.learning_rate_multiplier != 1:
        given = chosen.get("learning_rate", f"{lr:.2e} (given)")
        lr *= train.learning_rate_multiplier
        chosen["learning_rate"] = f"{lr:.2e} = {given} × multiplier {train.learning_rate_multiplier:g}"
    gc = train.gradient_checkpointing
    if gc == "auto":
        gc = device.startswith("cuda") and not method.frozen_base
        chosen["gradient_checkpointing"] = f"{gc} ({'GPU, base weights train' if gc else 'compute-bound device/method'})"
    prec = train.precision
    if prec == "auto":
        prec = "fp32" if not device.startswith("cuda") else ("bf16" if has_cuda_bf16 else "fp16")
        chosen["precision"] = f"{prec} ({device})"
    return Resolved(float(epochs), int(bs), float(lr), bool(gc), prec, chosen)


@dataclass
class Schedule:
    """When the run evaluates and checkpoints. Steps of 0 mean "at each epoch end"."""

    evaluate: bool  # validation rows exist: eval loss (and eval.classification) on the eval schedule
    eval_steps: int
    save_steps: int
    load_best: str | None
    greater_is_better: bool | None
    notes: list[str]  # values derived from others, shown in the printed plan
    patience: int | None = None  # early stopping: evaluations without a better load_best metric
    threshold: float = 0.0  # the smallest change of the load_best metric that counts as better
    chosen: dict = field(default_factory=dict)  # key → reason, for the schedule values that were `auto`


_EVALS_PER_EPOCH = 4
_EVAL_SHARE = 0.2  # evaluations may cost at most this share of the training compute
_AUTO_PATIENCE = 2


def greater_is_better(metric: str) -> bool:
    """Losses and unparseable counts are better lower; accuracy, F1, precision, recall higher."""
    name = metric.rsplit("/", 1)[-1]
    return not ("loss" in name or name.startswith("n_unparseable"))


def resolve_schedule(train, has_validation: bool, *, has_classification: bool = False,
                     steps_per_epoch: int = 0, total_steps: int = 0, auto_metric: str = "eval_loss",
                     eval_cost_steps: float = 0.0, scored_rows: int = 0) -> Schedule:
    """Evaluation, checkpoint, best-model and early-stopping schedule.

    `auto` (the defaults) with validation rows: keep the best checkpoint by eval_cls/macro_f1 (eval.classification)
    or the stage's `auto_metric` (eval_loss for pt/sft), evaluate four times per epoch (at least four times in a run
    shorter than an epoch) but never so often that evaluating costs more than a fifth of the training compute
    (`eval_cost_steps`: one evaluation's cost in training steps), and stop after about half an epoch (at least one
    evaluation) without a better value, where "better" for an eval_cls metric means by more than its noise
    (0.5/sqrt(`scored_rows`), about one standard error of a proportion); the epoch count is then an upper bound. Without validation rows nothing is evaluated. With
    train.load_best the schedules must line up (the best evaluated step needs a checkpoint), so an unset one (0)
    follows the other; config validation rejects save_steps that are no multiple of eval_steps.
    """
    ev, sv, notes, chosen = train.eval_steps, train.save_steps, [], {}
    best = train.load_best if has_validation else None
    if best == "auto":
        best = "eval_cls/macro_f1" if has_classification else auto_metric
        chosen["load_best"] = f"{best} (validation rows{' + eval.classification' if has_classification else ''})"
    if ev == "auto":
        ev = _auto_eval_steps(steps_per_epoch, total_steps, eval_cost_steps) if best and not sv else 0
        if best and not sv:
            chosen["eval_steps"] = (f"{ev} (up to {_EVALS_PER_EPOCH} evaluations per epoch of {steps_per_epoch} steps; "
                                    f"one costs about {eval_cost_steps:.0f} steps, kept under "
                                    f"{_EVAL_SHARE:.0%} of training)")
    if best and bool(ev) != bool(sv):
        if sv:
            ev = sv
            notes.append(f"eval_steps={ev} (follows save_steps: train.load_best needs a checkpoint per evaluation)")
        else:
            sv = ev
            notes.append(f"save_steps={sv} (follows eval_steps: train.load_best needs a checkpoint per evaluation)")
    patience = train.early_stopping_patience if best else None
    if patience == "auto":
        patience = _auto_patience(steps_per_epoch, ev)
        chosen["early_stopping_patience"] = f"{patience} evaluations without a better {best}"
    threshold = train.early_stopping_threshold if best else 0.0
    if threshold == "auto":
        threshold = round(0.5 / math.sqrt(scored_rows), 4) if best.startswith("eval_cls/") and scored_rows else 0.0
        if threshold:
            chosen["early_stopping_threshold"] = (f"{threshold} (0.5/sqrt({scored_rows} rows scored): less is noise; "
                                                  f"a later checkpoint this close to the best is kept)")
    return Schedule(has_validation, ev, sv, best, greater_is_better(best) if best else None, notes, patience,
                    float(threshold), chosen)


def _auto_patience(steps_per_epoch: int, eval_steps: int) -> int:
    """Evaluations in about half an epoch (at least one; two with four evaluations per epoch)."""
    if not eval_steps or not steps_per_epoch:
        return _AUTO_PATIENCE
    return max(1, round(steps_per_epoch / 2 / eval_steps))


def _auto_eval_steps(steps_per_epoch: int, total_steps: int, eval_cost_steps: float = 0.0) -> int:
    """Four evaluations per epoch (four in a run shorter than one epoch), spaced so that evaluating costs at most
    _EVAL_SHARE of the training between two evaluations; at most the run's length."""
    per_epoch = math.ceil(max(steps_per_epoch, 1) / _EVALS_PER_EPOCH)
    in_run = math.ceil(max(total_steps, 1) / _EVALS_PER_EPOCH) if total_steps else per_epoch
    affordable = math.ceil(eval_cost_steps / _EVAL_SHARE)
    ev = max(1, affordable, min(per_epoch, in_run))
    return min(ev, total_steps) if total_steps else ev
