"""The worker that trains one job: `python -m tuneforge.jobs.worker JOB_ID --storage DIR` (the registry from
$TUNEFORGE_REGISTRY_URL). It runs `train.runner.train`, the runner `tuneforge train` uses, in the job's run folder.

While it trains it heartbeats, turns every training log into a `metrics` event, records every checkpoint (each is a
servable model id), and stops after the current step when the job is asked to pause or cancel. It writes the job's
final state itself: succeeded (with fine_tuned_model, trained_tokens and a metrics CSV in result_files), paused,
cancelled, or failed with {code, message, param}. A worker killed outright writes nothing; the scheduler notices
(jobs.scheduler) and restarts the job from its last checkpoint, so a second start of the same job resumes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

from tuneforge.jobs import store as js
from tuneforge.jobs.files import new_id
from tuneforge.jobs.spec import checkpoint_name, model_name
from tuneforge.registry.records import utcnow
from tuneforge.registry.store import Store, open_store
from tuneforge.utils.errors import ConfigError, DataError, TuneforgeError

HEARTBEAT_S = 2.0
_METRIC_KEYS = {"loss": "train_loss", "mean_token_accuracy": "train_mean_token_accuracy", "eval_loss": "valid_loss",
                "eval_mean_token_accuracy": "valid_mean_token_accuracy", "learning_rate": "learning_rate",
                "epoch": "epoch", "rewards/margins": "reward_margin", "reward": "reward"}


class Heartbeat:
    """A thread that stamps the job alive every HEARTBEAT_S and picks up a pause or cancel request."""

    def __init__(self, store: Store, job_id: str):
        self.store, self.job_id = store, job_id
        self.requested: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuneforge-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self) -> None:
        job = js.update_job(self.store, self.job_id, heartbeat_at=utcnow())
        self.requested = job.requested

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a busy registry must not kill training; the next beat retries
                pass


class JobCallback(TrainerCallback):
    """Training → the job's events, checkpoints, estimated finish; a requested pause or cancel → stop."""

    def __init__(self, store: Store, job, heartbeat: Heartbeat):
        self.store, self.job, self.heartbeat = store, job, heartbeat
        self.model = model_name(job.model, job.suffix, job.id)
        self.last: dict = {}
        self._t0 = time.time()
        self._step0 = 0

    def on_train_begin(self, args, state, control, **kw):
        self._t0, self._step0 = time.time(), state.global_step
        resolved = dict(self.job.resolved or {})
        resolved["hyperparameters"] = _resolved_hyperparameters(Path(self.job.run_dir), self.job)
        js.update_job(self.store, self.job.id, resolved=resolved)

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        data = {_METRIC_KEYS[k]: v for k, v in logs.items() if k in _METRIC_KEYS and isinstance(v, (int, float))}
        if not data or not ({"train_loss", "valid_loss"} & data.keys() or "reward" in data):
            return
        data.update(step=state.global_step, total_steps=state.max_steps)
        self.last.update(data)
        shown = ", ".join(f"{k.replace('_', ' ')}={v:.4f}" for k, v in data.items()
                          if k in ("train_loss", "valid_loss", "reward"))
        js.add_event(self.store, self.job.id, f"Step {state.global_step}/{state.max_steps}: {shown}",
                     type="metrics", data=data)
        done = state.global_step - self._step0
        if done > 0:
            left = (time.time() - self._t0) / done * (state.max_steps - state.global_step)
            js.update_job(self.store, self.job.id, estimated_finish=int(time.time() + left))

    def on_save(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        step = state.global_step
        path = Path(args.output_dir) / f"checkpoint-{step}"
        metrics = {k: v for k, v in self.last.items() if k not in ("total_steps", "learning_rate", "epoch")}
        js.add_checkpoint(self.store, self.job.id, step, str(path), checkpoint_name(self.model, step),
                          {**metrics, "step": step})

    def on_step_end(self, args, state, control, **kw):
        if self.heartbeat.requested in ("pause", "cancel"):
            control.should_training_stop = True
            control.should_save = self.heartbeat.requested == "pause"
        return control


def _resolved_hyperparameters(run_dir: Path, job) -> dict:
    """n_epochs, batch_size and learning_rate_multiplier as the run resolved them (its saved config.yaml)."""
    import yaml

    hp = {"n_epochs": None, "batch_size": None, "learning_rate_multiplier": None}
    try:
        train = (yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}).get("train", {})
    except (OSError, ValueError):
        return hp
    method = job.method or {}
    asked = ((method.get(method.get("type")) or {}).get("hyperparameters")) or {}
    mult = asked.get("learning_rate_multiplier")
    return {"n_epochs": train.get("epochs"), "batch_size": train.get("batch_size"),
            "learning_rate_multiplier": mult if isinstance(mult, (int, float)) else 1.0,
            "learning_rate": train.get("learning_rate")}


def _metrics_csv(run_dir: Path) -> str:
    """metrics.jsonl → CSV (step, train_loss, valid_loss, ...), OpenAI's step_metrics.csv result file."""
    rows = []
    path = run_dir / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        row = json.loads(line)
        rows.append({"step": row.get("step"), **{_METRIC_KEYS[k]: v for k, v in row.items() if k in _METRIC_KEYS}})
    columns = ["step"] + sorted({k for r in rows for k in r} - {"step"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _result_file(store: Store, job, storage: Path) -> str:
    from tuneforge.jobs.files import save_stream

    file_id = new_id("file")
    data = _metrics_csv(Path(job.run_dir)).encode()
    saved = save_stream([data], storage / "files", file_id, ".csv", limit=1 << 40)
    js.add_file(store, id=file_id, project=job.project, filename="step_metrics.csv", purpose="fine-tune-results",
                bytes=saved.bytes, sha256=saved.sha256, path=str(saved.path.relative_to(storage)),
                status="processed", data_format="csv", n_rows=data.count(b"\n") - 1)
    return file_id


def _error(err: BaseException) -> dict:
    if isinstance(err, DataError):
        return {"code": "invalid_training_file", "message": str(err), "param": "training_file"}
    if isinstance(err, ConfigError):
        return {"code": "invalid_hyperparameters", "message": str(err), "param": "method"}
    if isinstance(err, TuneforgeError):
        return {"code": "training_failed", "message": str(err), "param": None}
    return {"code": "server_error", "message": f"training failed: {type(err).__name__}: {err}", "param": None}


def _finish(store: Store, job, status: str, message: str, level: str = "info", **fields) -> None:
    """Write the job's end unless a client cancelled it meanwhile (cancelled is final)."""
    current = js.get_job(store, None, job.id)
    if current.status == "cancelled":
        status, message = "cancelled", "Fine-tuning job cancelled: training stopped"
        fields = {}
    final = status in ("succeeded", "failed", "cancelled")
    js.update_job(store, job.id, status=status, requested=None, estimated_finish=None,
                  finished_at=utcnow() if final and current.finished_at is None else current.finished_at, **fields)
    js.add_event(store, job.id, message, level=level)


def run_job(store: Store, job_id: str, storage: Path) -> str:
    """Train the job to its end; returns the status written."""
    from tuneforge.eval.callback import classification_callbacks
    from tuneforge.jobs.spec import validate_config
    from tuneforge.train.output import checkpoint_step, latest_checkpoint
    from tuneforge.train.runner import train

    job = js.get_job(store, None, job_id)
    if job.status not in js.ACTIVE:
        return job.status  # cancelled (or paused) between launch and start
    ckpt = latest_checkpoint(Path(job.run_dir))
    config, parent = job.resolved["config"], None
    continues = job.resolved.get("continues")  # a job continuing an ended one from its checkpoint (spec.continuation)
    if continues and ckpt is not None:  # restarted after saving its own checkpoint: resume from that one
        config = {**config, "train": {**config["train"], "resume": "auto"}}
    elif continues:
        parent = job.resolved.get("parent_run_id")
    js.add_event(store, job.id, f"Resuming from checkpoint step {checkpoint_step(ckpt)}" if ckpt
                 else f"Training started from {continues['job']}'s checkpoint step {continues['step']}" if continues
                 else "Training started")
    with Heartbeat(store, job.id) as beat:
        beat.beat()
        callback = JobCallback(store, job, beat)
        try:
            cfg = validate_config(config)
            result = train(cfg, extra_callbacks=[callback], eval_callbacks=classification_callbacks,
                           parent_run_id=parent)
        except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - every failure is the job's, with a reason
            _finish(store, job, "failed", f"Fine-tuning job failed: {err}", level="error", error=_error(err))
            return "failed"
    if result.status == "succeeded":
        _finish(store, job, "succeeded", f"The job has successfully completed; new fine-tuned model: "
                                         f"{callback.model}", fine_tuned_model=callback.model,
                trained_tokens=int(result.metrics.get("real_tokens") or 0), run_id=result.run_id,
                result_files=[_result_file(store, job, storage)])
        return "succeeded"
    if beat.requested == "pause":
        step = checkpoint_step(latest_checkpoint(Path(job.run_dir)) or Path("checkpoint-0"))
        _finish(store, job, "paused", f"Fine-tuning job paused at step {step}; resume continues from there")
        return "paused"
    if beat.requested == "cancel":
        _finish(store, job, "cancelled", "Fine-tuning job cancelled: training stopped")
        return "cancelled"
    # stopped by a signal nobody asked for (the machine shutting down): queue it again, it resumes from here
    _finish(store, job, "queued", "Training was interrupted; the job is queued to resume from its last checkpoint",
            level="warn")
    return "queued"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneforge.jobs.worker", description=__doc__.split("\n")[0])
    parser.add_argument("job_id")
    parser.add_argument("--storage", required=True, help="the server's storage folder")
    args = parser.parse_args(argv)
    store = open_store(os.environ.get("TUNEFORGE_REGISTRY_URL") or None)
    status = run_job(store, args.job_id, Path(args.storage))
    return 0 if status in ("succeeded", "paused", "cancelled", "queued") else 1


if __name__ == "__main__":
    raise SystemExit(main())
