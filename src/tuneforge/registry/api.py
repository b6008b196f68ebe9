"""`RunRecorder`: the only registry entry point for the training, eval and export runners.

It never raises into its caller. If the registry cannot be opened or a write fails, one warning is printed and every
later call is a no-op, so a broken registry never costs a training run. Set TUNEFORGE_NO_REGISTRY=1 to switch
recording off. Optional mirrors (TensorBoard, MLflow) receive the same calls; see `mirror.py`.

    rec = RunRecorder.start(kind="train", config=cfg, base_model="smollm2-135m-instruct", base_model_identity=sha,
                            stage="sft", method="lora", datasets=[("alpaca_en_demo", fp, 999)], output_dir=out)
    rec.log_metrics(10, {"loss": 1.23, "learning_rate": 2e-4}, epoch=0.1)
    rec.add_artifact("adapter", out / "adapter")
    rec.finish("succeeded")                       # waits until every record above is written
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable, Sequence

from tuneforge.registry import recording
from tuneforge.registry.mirror import Mirror, open_mirrors
from tuneforge.registry.store import Store, open_store
from tuneforge.registry.writer import BackgroundWriter
from tuneforge.utils.console import console


def _warn(what: str, err: BaseException) -> None:
    msg = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
    console.print(f"[yellow]warning:[/yellow] run registry: {what} failed ({msg}); "
                  "recording is off for the rest of this run")


class RunRecorder:
    """Records one run. Build it with `RunRecorder.start(...)`; `run_id` is None when recording is off.

    `log_metrics`, `add_artifact` and `add_eval` only queue the write and return at once; a background thread
    (`writer.py`) performs the writes in call order, consecutive metric steps in one transaction. `finish()` and
    `flush()` wait for the queue; pending writes are also flushed when the interpreter exits.
    """

    def __init__(self, store: Store | None, run_id: str | None, mirrors: list[Mirror] | None = None):
        self.store, self.run_id = store, run_id
        self.mirrors = mirrors or []
        self.finished = False
        self._writer = BackgroundWriter()
        self._batch_lock = threading.Lock()
        self._batch: list | None = None

    @property
    def active(self) -> bool:
        return self.store is not None and self.run_id is not None

    @staticmethod
    def disabled() -> bool:
        """True when TUNEFORGE_NO_REGISTRY switches recording off."""
        return os.environ.get("TUNEFORGE_NO_REGISTRY", "").strip() not in ("", "0", "false")

    @classmethod
    def start(cls, kind: str, config: dict | None = None, base_model: str | None = None,
              base_model_identity: str | None = None, stage: str | None = None, method: str | None = None,
              datasets: Iterable[Sequence] = (), output_dir: str | os.PathLike | None = None,
              parent_run_id: str | None = None, tags: Iterable[str] = (), *, group_id: str | None = None,
              url: str | None = None, mirror: str | Sequence[str] | None = None) -> "RunRecorder":
        """Open the registry and insert a `running` run. `datasets`: (name, fingerprint, n_records[, role])."""
        if cls.disabled():
            return cls(None, None)
        try:
            store = open_store(url)
            run_id = recording.create_run(
                store, kind=kind, config=config, base_model=base_model, base_model_identity=base_model_identity,
                stage=stage, method=method, datasets=list(datasets), output_dir=str(output_dir or "") or None,
                parent_run_id=parent_run_id, tags=list(tags), group_id=group_id)
        except Exception as err:  # noqa: BLE001 - the registry must never stop a run
            _warn("starting the run record", err)
            return cls(None, None)
        mirrors = open_mirrors(mirror, run_id=run_id, output_dir=output_dir, config=config, kind=kind)
        return cls(store, run_id, mirrors)

    def _store_call(self, what: str, fn, *args: Any) -> None:
        """Runs on the writer thread: one registry write; a failure warns once and turns recording off."""
        if not self.active:
            return
        try:
            fn(self.store, self.run_id, *args)
        except Exception as err:  # noqa: BLE001
            _warn(what, err)
            self.store = None

    def _mirror(self, name: str, *args: Any) -> None:
        for m in list(self.mirrors):
            if not m.call(name, *args):
                self.mirrors.remove(m)

    def _enqueue(self, what: str, fn, store_args: tuple, hook: str, mirror_args: tuple) -> None:
        if not (self.active or self.mirrors):
            return
        with self._batch_lock:
            self._batch = None  # metrics logged after this call go into a later transaction: order is kept
            self._writer.submit(lambda: (self._store_call(what, fn, *store_args), self._mirror(hook, *mirror_args)))

    def log_metrics(self, step: int, metrics: dict, epoch: float | None = None) -> None:
        if not (self.active or self.mirrors):
            return
        try:
            rows = recording.metric_rows(self.run_id, step, metrics, epoch) if self.active else []
        except Exception as err:  # noqa: BLE001 - e.g. a step that is not a number
            _warn("logging metrics", err)
            self.store, rows = None, []
        with self._batch_lock:
            batch = self._batch
            if batch is None:
                batch = self._batch = []
                self._writer.submit(lambda: self._write_metric_batch(batch))
            batch.append((rows, step, dict(metrics), epoch))

    def _write_metric_batch(self, batch: list) -> None:
        with self._batch_lock:
            if self._batch is batch:
                self._batch = None
            items = list(batch)
        self._store_call("logging metrics", recording.insert_metric_rows, [r for it in items for r in it[0]])
        for _rows, step, metrics, epoch in items:
            self._mirror("log_metrics", step, metrics, epoch)

    def add_artifact(self, kind: str, path: str | os.PathLike) -> None:
        if isinstance(path, (str, os.PathLike)):
            path = os.path.abspath(os.path.expanduser(path))  # relative to the working directory of this call
        self._enqueue("recording an artifact", recording.add_artifact, (kind, path), "add_artifact", (kind, path))

    def add_eval(self, name: str, metrics: dict) -> None:
        metrics = dict(metrics)
        self._enqueue("recording eval results", recording.add_eval, (name, metrics), "add_eval", (name, metrics))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record asked for so far is written; False when `timeout` passed first."""
        return self._writer.flush(timeout)

    def close(self) -> None:
        """Flush and stop the writer thread without finishing the run (for a recorder attached to an old run)."""
        self._writer.close()

    def finish(self, status: str = "succeeded", error: str | None = None) -> None:
        """Close the run (idempotent: only the first call counts); waits until every record is written."""
        if self.finished:
            return
        self.finished = True
        self._enqueue("finishing the run record", recording.finish_run, (status, error), "finish", (status,))
        self._writer.close()

    def __enter__(self) -> "RunRecorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("succeeded")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("interrupted", "KeyboardInterrupt")
        else:
            self.finish("failed", f"{exc_type.__name__}: {exc}")
