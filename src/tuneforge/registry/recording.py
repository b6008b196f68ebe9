"""Write side of the registry: create a run, log metrics / evals / artifacts, finish it.

Every function is one short transaction through `Store.write`. `RunRecorder` (api.py) is the friendly facade used by
the training and eval runners; these functions raise, the facade does not.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from tuneforge.registry.liveness import current_owner
from tuneforge.registry.records import (FINAL_STATUSES, Artifact, Dataset, EvalResult, Metric, Run, RunDataset,
                                        RunTag, utcnow)
from tuneforge.registry.store import RegistryError, Store


def new_run_id() -> str:
    return secrets.token_hex(6)


def jsonable(obj: Any) -> Any:
    """A JSON-safe deep copy (paths, enums, dataclasses... become strings; NaN/inf become strings too)."""
    def _default(o):
        if hasattr(o, "model_dump"):
            return o.model_dump()
        if isinstance(o, (set, tuple)):
            return list(o)
        return str(o)

    def _finite(o):
        if isinstance(o, float) and not math.isfinite(o):
            return str(o)
        if isinstance(o, dict):
            return {str(k): _finite(v) for k, v in o.items()}
        if isinstance(o, list):
            return [_finite(v) for v in o]
        return o

    return _finite(json.loads(json.dumps(obj, default=_default)))


def _insert_ignore(s: Session, table, values: dict) -> None:
    """INSERT that silently keeps an existing row with the same primary key (concurrent writers race here)."""
    dialect = s.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        mod = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
        s.execute(mod.insert(table).values(**values).on_conflict_do_nothing())
        return
    pk = {c.name: values[c.name] for c in table.primary_key.columns}
    if s.execute(select(table).filter_by(**pk)).first() is None:
        s.execute(insert(table).values(**values))


def _dataset_rows(datasets: Iterable[Sequence]) -> list[dict]:
    rows = []
    for d in datasets:
        name, fp, n = (list(d) + [None, None, None])[:3]
        role = d[3] if len(d) > 3 and d[3] else "train"
        if not fp:
            continue
        rows.append({"name": name, "fingerprint": str(fp), "n_records": n, "role": role})
    return rows


def create_run(store: Store, *, kind: str, config: dict | None = None, base_model: str | None = None,
               base_model_identity: str | None = None, stage: str | None = None, method: str | None = None,
               datasets: Iterable[Sequence] = (), output_dir: str | None = None, parent_run_id: str | None = None,
               tags: Iterable[str] = (), group_id: str | None = None, run_id: str | None = None) -> str:
    """Insert a `running` run owned by this process; returns its id.

    `datasets` holds (name, fingerprint, n_records[, role]) tuples; role defaults to "train".
    """
    rid = run_id or new_run_id()
    owner, now = current_owner(), utcnow()
    ds_rows = _dataset_rows(datasets)

    def _do(s: Session) -> str:
        if parent_run_id and s.get(Run, parent_run_id) is None:
            raise RegistryError(f"parent run {parent_run_id!r} is not in the registry")
        s.add(Run(id=rid, kind=kind, status="running", created_at=now, started_at=now, heartbeat_at=now,
                  pid=owner.pid, hostname=owner.hostname, proc_start=owner.proc_start,
                  config=jsonable(config or {}), base_model=base_model, base_model_identity=base_model_identity,
                  stage=stage, method=method, output_dir=str(output_dir) if output_dir else None,
                  parent_run_id=parent_run_id, group_id=group_id))
        s.flush()
        for tag in dict.fromkeys(t for t in tags if t):
            s.add(RunTag(run_id=rid, tag=str(tag)))
        seen = set()
        for d in ds_rows:
            _insert_ignore(s, Dataset.__table__, {"fingerprint": d["fingerprint"], "name": d["name"],
                                                  "n_records": d["n_records"], "created_at": now})
            if (d["fingerprint"], d["role"]) not in seen:
                seen.add((d["fingerprint"], d["role"]))
                s.add(RunDataset(run_id=rid, **d))
        return rid

    return store.write(_do)


def _as_float(v: Any) -> float | None | bool:
    """A metric value as float; NaN -> None; False when it is not a number (skipped)."""
    try:
        f = float(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return False
    return None if math.isnan(f) else f


def metric_rows(run_id: str, step: int, metrics: dict, epoch: float | None = None,
                logged_at: dt.datetime | None = None) -> list[dict]:
    """The rows `log_metrics` inserts for one step (non-numeric values are skipped, NaN becomes NULL)."""
    now = logged_at or utcnow()
    rows = []
    for key, v in metrics.items():
        f = _as_float(v)
        if f is not False:
            rows.append({"run_id": run_id, "step": int(step), "epoch": None if epoch is None else float(epoch),
                         "key": str(key), "value": f, "logged_at": now})
    return rows


def insert_metric_rows(store: Store, run_id: str, rows: list[dict]) -> int:
    """Insert rows built by `metric_rows` (any number of steps) in one transaction; refreshes the heartbeat."""
    now = utcnow()

    def _do(s: Session) -> int:
        if rows:
            s.execute(insert(Metric), rows)
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=now))
        return len(rows)

    return store.write(_do)


def log_metrics(store: Store, run_id: str, step: int, metrics: dict, epoch: float | None = None) -> int:
    """Record scalars for one step (non-numeric values are skipped); refreshes the run's heartbeat."""
    return insert_metric_rows(store, run_id, metric_rows(run_id, step, metrics, epoch))


def _size(path: Path) -> int | None:
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        pass
    return None


def add_artifact(store: Store, run_id: str, kind: str, path: str | os.PathLike) -> None:
    p = Path(path).expanduser().resolve()
    store.write(lambda s: s.add(Artifact(run_id=run_id, kind=kind, path=str(p), size_bytes=_size(p),
                                         created_at=utcnow())))


def add_eval(store: Store, run_id: str, name: str, metrics: dict) -> None:
    store.write(lambda s: s.add(EvalResult(run_id=run_id, name=name, metrics=jsonable(metrics),
                                           created_at=utcnow())))


def finish_run(store: Store, run_id: str, status: str = "succeeded", error: str | None = None) -> None:
    if status not in FINAL_STATUSES:
        raise RegistryError(f"unknown final status {status!r}", hint=f"use one of {', '.join(FINAL_STATUSES)}")
    now = utcnow()
    store.write(lambda s: s.execute(update(Run).where(Run.id == run_id).values(
        status=status, ended_at=now, heartbeat_at=now, error=error)))
