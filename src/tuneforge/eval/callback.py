"""Classification metrics during training: computed on the validation rows at the end of each epoch (or every N
steps) and logged with the training metrics under the ``eval_cls/`` prefix (metrics JSONL, TensorBoard, registry).

Hugging Face passes no trainer to callbacks, so logging goes through the trainer given to `attach(trainer)`; when
none was attached, the callback finds the Trainer whose loop is calling it. It only runs on the main process, puts
the model in eval mode for the measurement and restores training mode afterwards.
"""

from __future__ import annotations

import inspect

from transformers import TrainerCallback

from tuneforge.eval.metrics import scalar_metrics
from tuneforge.eval.task_eval import classify
from tuneforge.eval.taskdata import check_labels
from tuneforge.utils.console import console

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
    """`every="epoch"` or an int number of optimizer steps. `records` are chat Records with label answers."""

    def __init__(self, records, labels: list[str], mode: str = "score", every: str | int = "epoch", *,
                 batch_size: int = 8, max_new_tokens: int = 16):
        check_labels(records, list(labels))  # bad rows fail before training starts
        if every != "epoch" and not (isinstance(every, int) and every > 0):
            raise ValueError(f"every must be 'epoch' or a positive step count, got {every!r}")
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

    def _run(self, args, state, kw) -> None:
        if not state.is_world_process_zero:
            return
        model = kw.get("model")
        tok = kw.get("processing_class") or kw.get("tokenizer")
        if model is None or tok is None:
            console.print("[yellow]eval.classification skipped: the trainer passed no model/tokenizer[/yellow]")
            return
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
        console.print(f"[cyan]eval_cls[/cyan] epoch {state.epoch or 0:.2f}: accuracy {metrics[PREFIX + 'accuracy']:.3f}"
                      f", macro F1 {metrics[PREFIX + 'macro_f1']:.3f}, unparseable "
                      f"{int(metrics[PREFIX + 'n_unparseable'])}/{int(metrics[PREFIX + 'n'])}")
        trainer = self.trainer or _calling_trainer()
        if trainer is not None:
            trainer.log(metrics)  # reaches every callback's on_log: metrics JSONL, TensorBoard, registry
        else:
            state.log_history.append({**metrics, "step": state.global_step, "epoch": state.epoch})
