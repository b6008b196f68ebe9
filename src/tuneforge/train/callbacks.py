"""Trainer callbacks: progress bar with ETA, metrics JSONL + registry events, graceful SIGINT/SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from tuneforge.stages.trainer import TokenCounter  # noqa: F401  (re-exported)
from tuneforge.utils.console import console
from tuneforge.utils.io import atomic_write_text


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
        shown = [k for k in ("eval_reward", "eval_loss") if k in (logs or {})]  # RL stages: the reward first
        if shown and self.progress is not None:
            self.progress.console.print(f"[cyan]eval[/cyan] step {state.global_step}: {shown[0]} "
                                        f"{logs[shown[0]]:.4f}")

    def on_step_end(self, args, state, control, **kw):
        if self.progress is None:
            return
        info = ""
        if self.last:
            info = f"loss {self.last.get('loss', float('nan')):.4f}  lr {self.last.get('learning_rate', 0):.2e}  "
            if "reward" in self.last:  # RL stages: the reward is what moves
                info += f"reward {self.last['reward']:.3f}  "
        info += f"{self.tokens_per_second() * args.world_size:,.0f} tok/s"
        self.progress.update(self.task, completed=state.global_step, info=info)

    def on_train_end(self, args, state, control, **kw):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class MetricsCallback(TrainerCallback):
    """Appends every log to metrics.jsonl (with real tokens seen) and forwards it to the registry, the run's source
    of truth. Experiment trackers (TensorBoard, W&B, ...) are fed by the Trainer itself (output.report_to)."""

    def __init__(self, out_dir: Path, counter: TokenCounter, recorder=None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.counter = counter
        self.recorder = recorder
        self._t0 = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs,
               "real_tokens": self.counter.real_tokens * args.world_size,
               "elapsed_s": round(time.perf_counter() - self._t0, 3)}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.recorder is not None:
            numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            self.recorder.log_metrics(state.global_step, numeric, epoch=state.epoch)

    def on_save(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.counter.save(ckpt)
        if self.recorder is not None:
            self.recorder.add_artifact("checkpoint", str(ckpt))


def drop_rows_after(metrics_file: Path, step: int) -> int:
    """Remove metrics rows logged after `step` (a resumed run redoes those steps); returns how many went."""
    if not metrics_file.is_file():
        return 0
    lines = [x for x in metrics_file.read_text(encoding="utf-8").splitlines() if x.strip()]
    kept = [x for x in lines if json.loads(x).get("step", 0) <= step]
    if len(kept) != len(lines):
        atomic_write_text(metrics_file, "".join(x + "\n" for x in kept))
    return len(lines) - len(kept)


class StopCallback(TrainerCallback):
    """Turns SIGINT/SIGTERM into "save a checkpoint, then stop" at the end of the current step.

    A second signal while saving is ignored for SIGTERM and re-raised as KeyboardInterrupt for SIGINT, so an
    impatient user can still abort. Under torchrun a signal to any one rank stops all ranks at the same step.
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
        # Decide from the shared flag only: a signal landing after the all-reduce must wait for the next step, or this
        # rank would stop alone while the others run on into the next collective.
        if self._any_rank_requested(args.device):
            self.requested = self.requested or "stop requested on another process"
            control.should_save = True
            control.should_training_stop = True
        return control

    def _any_rank_requested(self, device) -> bool:
        """Under torchrun a signal may reach one process only: every rank shares its flag after each step (MAX),
        so all of them save the same checkpoint and stop together instead of the others waiting forever."""
        import torch
        import torch.distributed as td

        if not (td.is_available() and td.is_initialized()):
            return bool(self.requested)
        flag = torch.tensor([1 if self.requested else 0], dtype=torch.int32, device=device)
        td.all_reduce(flag, op=td.ReduceOp.MAX)
        return bool(flag.item())
