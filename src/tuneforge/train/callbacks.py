"""Trainer callbacks: progress bar with ETA, metrics JSONL + TensorBoard, graceful SIGINT/SIGTERM, registry events."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from tuneforge.utils.console import console


class TokenCounter:
    """Counts real (non-padding) tokens seen by this process; filled by TuneforgeTrainer.training_step."""

    def __init__(self):
        self.real_tokens = 0
        self.padded_tokens = 0


class ProgressCallback(TrainerCallback):
    """One rich progress bar: step, loss, learning rate, real tokens/s and ETA (main process only)."""

    def __init__(self, counter: TokenCounter):
        self.counter = counter
        self.progress: Progress | None = None
        self.task = None
        self.last: dict = {}
        self._t0 = 0.0
        self._tok0 = 0

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]train[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, refresh_per_second=2)
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")
        self._t0, self._tok0 = time.perf_counter(), self.counter.real_tokens

    def tokens_per_second(self) -> float:
        dt = time.perf_counter() - self._t0
        return (self.counter.real_tokens - self._tok0) / dt if dt > 0 else 0.0

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.last = logs

    def on_step_end(self, args, state, control, **kw):
        if self.progress is None:
            return
        info = ""
        if self.last:
            info = f"loss {self.last.get('loss', float('nan')):.4f}  lr {self.last.get('learning_rate', 0):.2e}  "
        info += f"{self.tokens_per_second() * args.world_size:,.0f} tok/s"
        self.progress.update(self.task, completed=state.global_step, info=info)

    def on_train_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class MetricsCallback(TrainerCallback):
    """Appends every log to metrics.jsonl (with real tokens seen) and TensorBoard; forwards to the registry."""

    def __init__(self, out_dir: Path, counter: TokenCounter, recorder=None, tensorboard: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.counter = counter
        self.recorder = recorder
        self.tb_dir = Path(out_dir) / "tensorboard" if tensorboard else None
        self.writer = None
        self._t0 = time.perf_counter()

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero and self.tb_dir is not None and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.tb_dir))
            except ImportError:  # tensorboard is optional at run time
                self.writer = None

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs,
               "real_tokens": self.counter.real_tokens * args.world_size,
               "elapsed_s": round(time.perf_counter() - self._t0, 3)}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        if self.writer is not None:
            for k, v in numeric.items():
                self.writer.add_scalar(k if "/" in k else f"train/{k}", v, state.global_step)
        if self.recorder is not None:
            self.recorder.log_metrics(state.global_step, numeric, epoch=state.epoch)

    def on_save(self, args, state, control, **kw):
        if self.recorder is not None and state.is_world_process_zero:
            self.recorder.add_artifact("checkpoint", str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

    def on_train_end(self, args, state, control, **kw):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


class StopCallback(TrainerCallback):
    """Turns SIGINT/SIGTERM into "save a checkpoint, then stop" at the end of the current step.

    A second signal while saving is ignored for SIGTERM and re-raised as KeyboardInterrupt for SIGINT, so an
    impatient user can still abort.
    """

    def __init__(self):
        self.requested: str | None = None
        self._old = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def uninstall(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        console.print(f"\n[yellow]{self.requested}: saving a checkpoint after this step, then stopping "
                      f"(resume later with the same command)…[/yellow]")

    def on_step_end(self, args, state, control, **kw):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control
