"""Classification metrics during training, logged with the training metrics under the ``eval_cls/`` prefix
(metrics JSONL, trackers, registry).

`every="evaluate"` measures whenever the Trainer evaluates (the run's eval schedule, train.eval_steps) and adds the
metrics to that evaluation's results, so train.load_best and early stopping can use them; every rank measures then,
so all ranks agree on the best step. `every="epoch"` or a step count measures on its own schedule (used when the
run has no validation rows, so the Trainer never evaluates), on the main process only.

Hugging Face passes no trainer to callbacks, so logging goes through the trainer given to `attach(trainer)`; when
none was attached, the callback finds the Trainer whose loop is calling it. The model is put in eval mode for the
measurement and training mode is restored afterwards. The training runner does not import this module: the CLI
passes `classification_callbacks` to `train(..., eval_callbacks=...)`.
"""

from __future__ import annotations

import inspect

from transformers import TrainerCallback

from tuneforge.eval.metrics import scalar_metrics
from tuneforge.eval.task_eval import classify
from tuneforge.eval.taskdata import check_labels
from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError

PREFIX = "eval_cls/"


def _calling_trainer():
    from transformers import Trainer

    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


class ClassificationEvalCallback(TrainerCallback):
    """`every="evaluate"`, `"epoch"` or an int number of optimizer steps. `records`: chat Records with label answers."""

    def __init__(self, records, labels: list[str], mode: str = "score", every: str | int = "epoch", *,
                 batch_size: int = 8, max_new_tokens: int = 16):
        check_labels(records, list(labels))  # bad rows fail before training starts
        if every not in ("epoch", "evaluate") and not (isinstance(every, int) and every > 0):
            raise ValueError(f"every must be 'evaluate', 'epoch' or a positive step count, got {every!r}")
        self.records, self.labels, self.mode, self.every = records, list(labels), mode, every
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.trainer = None
        self.history: list[dict] = []

    def attach(self, trainer) -> "ClassificationEvalCallback":
        """Add this callback to `trainer` and log through it."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    def on_epoch_end(self, args, state, control, **kw):
        if self.every == "epoch":
            self._run(args, state, kw)

    def on_step_end(self, args, state, control, **kw):
        if isinstance(self.every, int) and state.global_step % self.every == 0:
            self._run(args, state, kw)

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if self.every == "evaluate":
            found = self._run(args, state, kw, every_rank=True)
            if found and metrics is not None:
                metrics.update(found)  # the Trainer picks the best checkpoint / stops early from this dict

    def _run(self, args, state, kw, every_rank: bool = False) -> dict | None:
        if not (every_rank or state.is_world_process_zero):
            return None
        model = kw.get("model")
        tok = kw.get("processing_class") or kw.get("tokenizer")
        if model is None or tok is None:
            console.print("[yellow]eval.classification skipped: the trainer passed no model/tokenizer[/yellow]")
            return None
        was_training = model.training
        model.eval()
        try:
            result = classify(model, tok, self.records, self.labels, self.mode, batch_size=self.batch_size,
                              max_new_tokens=self.max_new_tokens)
        finally:
            if was_training:
                model.train()
        metrics = scalar_metrics({k: v for k, v in result["metrics"].items() if not k.endswith("_stderr")}, PREFIX)
        self.history.append({"step": state.global_step, "epoch": state.epoch, **metrics})
        if not state.is_world_process_zero:
            return metrics
        console.print(f"[cyan]eval_cls[/cyan] epoch {state.epoch or 0:.2f}: accuracy {metrics[PREFIX + 'accuracy']:.3f}"
                      f", macro F1 {metrics[PREFIX + 'macro_f1']:.3f}, unparseable "
                      f"{int(metrics[PREFIX + 'n_unparseable'])}/{int(metrics[PREFIX + 'n'])}")
        trainer = self.trainer or _calling_trainer()
        if trainer is not None:
            trainer.log(metrics)  # reaches every callback's on_log: metrics JSONL, trackers and the registry
        else:
            state.log_history.append({**metrics, "step": state.global_step, "epoch": state.epoch})
        return metrics


def classification_callbacks(cfg, val_records: list, every: str | int) -> list[ClassificationEvalCallback]:
    """The eval.classification callback of a run (none when it is not configured), built before any weight loads
    so bad labels fail early. Rows: eval.classification.data, else the run's validation rows."""
    cls_cfg = cfg.eval.classification
    if cls_cfg is None:
        return []
    records = val_records
    if cls_cfg.data:
        from tuneforge.data.catalog import load_dataset

        records = load_dataset({"path": cls_cfg.data}, on_error=cfg.data.on_error).records
    if not records:
        raise ConfigError("eval.classification needs validation rows",
                          hint="set data.val_size, data.eval or eval.classification.data")
    if cls_cfg.max_samples:
        records = records[: cls_cfg.max_samples]
    return [ClassificationEvalCallback(records, cls_cfg.labels, cls_cfg.mode, every=every)]
