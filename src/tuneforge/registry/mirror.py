"""Optional mirroring of a run to TensorBoard or MLflow, for people who already use them.

The embedded registry stays the source of truth: a mirror receives the same calls as `RunRecorder`, and a mirror
that fails prints one warning and is dropped. Choose mirrors with `RunRecorder.start(mirror=...)` or
`$TUNEFORGE_MIRROR` (comma-separated: `tensorboard`, `mlflow`).

- tensorboard: event files in `$TUNEFORGE_TENSORBOARD_DIR/<run_id>`, else `<output_dir>/tensorboard`, else
  `$TUNEFORGE_HOME/tensorboard/<run_id>`. Written with the `tensorboard` package alone (no torch needed).
- mlflow: needs `pip install mlflow`; uses MLflow's own settings (`MLFLOW_TRACKING_URI`, experiment from
  `$MLFLOW_EXPERIMENT_NAME`, default "tuneforge"). The MLflow run is tagged `tuneforge.run_id`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

from tuneforge.utils.console import console
from tuneforge.utils.paths import tuneforge_home

ENV_MIRROR = "TUNEFORGE_MIRROR"


class Mirror:
    """Base: every hook is optional; `call` turns exceptions into a warning and returns False."""

    name = "mirror"

    def call(self, hook: str, *args: Any) -> bool:
        try:
            getattr(self, hook)(*args)
            return True
        except Exception as err:  # noqa: BLE001 - a mirror never stops a run
            console.print(f"[yellow]warning:[/yellow] {self.name} mirror: {hook} failed ({err}); mirror turned off")
            return False

    def log_metrics(self, step: int, metrics: dict, epoch: float | None) -> None: ...
    def add_artifact(self, kind: str, path) -> None: ...
    def add_eval(self, name: str, metrics: dict) -> None: ...
    def finish(self, status: str) -> None: ...


def _scalars(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v.item() if hasattr(v, "item") else v)
        except (TypeError, ValueError):
            continue
    return out


class TensorBoardMirror(Mirror):
    name = "tensorboard"

    def __init__(self, run_id: str, output_dir: str | os.PathLike | None):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        env = os.environ.get("TUNEFORGE_TENSORBOARD_DIR")
        if env:
            logdir = Path(env) / run_id
        elif output_dir:
            logdir = Path(output_dir) / "tensorboard"
        else:
            logdir = tuneforge_home() / "tensorboard" / run_id
        logdir.mkdir(parents=True, exist_ok=True)
        self.logdir = logdir
        self.writer = EventFileWriter(str(logdir), flush_secs=10)

    def _write(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=prefix + k, simple_value=v)
                                             for k, v in values.items()])
        self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def log_metrics(self, step, metrics, epoch):
        values = _scalars(metrics)
        if epoch is not None:
            values["epoch"] = float(epoch)
        self._write(step, values, "train/")

    def add_eval(self, name, metrics):
        self._write(0, _scalars(metrics), f"eval/{name}/")

    def finish(self, status):
        self.writer.flush()
        self.writer.close()


class MLflowMirror(Mirror):
    name = "mlflow"

    def __init__(self, run_id: str, config: dict | None, kind: str):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "tuneforge")
        exp = mlflow.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(exp_name)
        run = self.client.create_run(exp_id, run_name=run_id, tags={"tuneforge.run_id": run_id, "tuneforge.kind": kind})
        self.mlflow_run = run.info.run_id
        params = {k: str(v)[:500] for k, v in _flatten(config or {}).items()}
        items = list(params.items())
        for i in range(0, len(items), 100):
            for k, v in items[i:i + 100]:
                self.client.log_param(self.mlflow_run, k[:250], v)

    def log_metrics(self, step, metrics, epoch):
        ts = int(time.time() * 1000)
        for k, v in _scalars(metrics).items():
            self.client.log_metric(self.mlflow_run, k, v, timestamp=ts, step=int(step))

    def add_artifact(self, kind, path):
        self.client.set_tag(self.mlflow_run, f"tuneforge.artifact.{kind}", str(path))

    def add_eval(self, name, metrics):
        for k, v in _scalars(metrics).items():
            self.client.log_metric(self.mlflow_run, f"eval/{name}/{k}", v)

    def finish(self, status):
        mapping = {"succeeded": "FINISHED", "failed": "FAILED"}
        self.client.set_terminated(self.mlflow_run, status=mapping.get(status, "KILLED"))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def open_mirrors(spec: str | Sequence[str] | None, *, run_id: str, output_dir=None, config: dict | None = None,
                 kind: str = "train") -> list[Mirror]:
    """Build the requested mirrors; one that cannot start prints a warning and is skipped."""
    if spec is None:
        spec = os.environ.get(ENV_MIRROR, "")
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec) if n and n.strip()]
    mirrors: list[Mirror] = []
    for name in dict.fromkeys(names):
        try:
            if name in ("tensorboard", "tb"):
                mirrors.append(TensorBoardMirror(run_id, output_dir))
            elif name == "mlflow":
                mirrors.append(MLflowMirror(run_id, config, kind))
            else:
                console.print(f"[yellow]warning:[/yellow] unknown registry mirror {name!r} "
                              "(known: tensorboard, mlflow); ignored")
        except Exception as err:  # noqa: BLE001
            hint = " (pip install mlflow)" if isinstance(err, ImportError) else ""
            console.print(f"[yellow]warning:[/yellow] {name} mirror unavailable: {err}{hint}")
    return mirrors
