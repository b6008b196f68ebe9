"""Read side of the registry: resolve ids, list / show runs, metric series, delete. Returns plain dataclasses.

Reading is also where crashed runs are found: a `running` run whose owner process is gone from this host is marked
`interrupted` before it is shown (runs owned by another host are left as they are; we cannot see its processes).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, selectinload

from tuneforge.registry.liveness import owner_state
from tuneforge.registry.records import Artifact, EvalResult, Metric, Run, RunDataset, RunTag, utcnow
from tuneforge.registry.store import RegistryError, Store


@dataclass
class RunView:
    id: str
    kind: str
    status: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    base_model: str | None
    base_model_identity: str | None
    stage: str | None
    method: str | None
    output_dir: str | None
    parent_run_id: str | None
    group_id: str | None
    error: str | None
    pid: int | None
    hostname: str | None
    tags: list[str] = field(default_factory=list)
    datasets: list[dict] = field(default_factory=list)
    config: dict | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at or (utcnow() if self.status == "running" else self.heartbeat_at)
        return None if end is None else max(0.0, (end - self.started_at).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, dt.datetime):
                d[k] = v.isoformat()
        d["duration_s"] = self.duration_s
        return d


def _view(r: Run, with_config: bool = False) -> RunView:
    return RunView(
        id=r.id, kind=r.kind, status=r.status, created_at=r.created_at, started_at=r.started_at,
        ended_at=r.ended_at, heartbeat_at=r.heartbeat_at, base_model=r.base_model,
        base_model_identity=r.base_model_identity, stage=r.stage, method=r.method, output_dir=r.output_dir,
        parent_run_id=r.parent_run_id, group_id=r.group_id, error=r.error, pid=r.pid, hostname=r.hostname,
        tags=sorted(t.tag for t in r.tags),
        datasets=[{"name": d.name, "fingerprint": d.fingerprint, "n_records": d.n_records, "role": d.role}
                  for d in sorted(r.datasets, key=lambda d: (d.role, d.name or ""))],
        config=r.config if with_config else None)


def reap_dead_runs(store: Store) -> list[str]:
    """Mark `running` runs whose owner process died on this host as `interrupted`; returns their ids."""
    with store.session() as s:
        rows = s.execute(select(Run.id, Run.pid, Run.hostname, Run.proc_start, Run.heartbeat_at).where(
            Run.status == "running", Run.hostname == socket.gethostname())).all()
    dead = [r for r in rows if owner_state(r.pid, r.hostname, r.proc_start) == "dead"]
    for r in dead:
        msg = f"owner process {r.pid} on {r.hostname} exited without finishing the run"
        store.write(lambda s, r=r, msg=msg: s.execute(
            update(Run).where(Run.id == r.id, Run.status == "running").values(
                status="interrupted", ended_at=r.heartbeat_at or utcnow(), error=msg)))
    return [r.id for r in dead]


def resolve_run_id(store: Store, id_or_prefix: str) -> str:
    """The full id for an id, a unique id prefix, or a run folder (its run.json); a clear error when none or several
    match."""
    prefix = id_or_prefix.strip()
    if not prefix:
        raise RegistryError("empty run id")
    folder_id = _run_folder_id(prefix)
    if folder_id:
        return resolve_run_id(store, folder_id)
    with store.session() as s:
        if s.get(Run, prefix) is not None:
            return prefix
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        ids = s.scalars(select(Run.id).where(Run.id.like(like, escape="\\")).limit(6)).all()
    if not ids:
        raise RegistryError(f"no run {prefix!r} in the registry at {store.display_url}",
                            hint="`tuneforge runs list` shows the recorded runs")
    if len(ids) > 1:
        raise RegistryError(f"run id prefix {prefix!r} is ambiguous: {', '.join(ids[:5])}...",
                            hint="type more characters of the id")
    return ids[0]


def _run_folder_id(path: str) -> str | None:
    """The run id a run folder's run.json records (None when `path` is no such folder)."""
    run_file = Path(path) / "run.json"
    if not run_file.is_file():
        return None
    try:
        return json.loads(run_file.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        return None


def list_runs(store: Store, *, status: str | None = None, base_model: str | None = None,
              dataset: str | None = None, tag: list[str] | None = None, kind: str | None = None,
              group: str | None = None, limit: int | None = None) -> list[RunView]:
    """Runs newest first. `dataset` matches a fingerprint prefix or an exact dataset name; every `tag` must match."""
    reap_dead_runs(store)
    q = select(Run).options(selectinload(Run.tags), selectinload(Run.datasets)).order_by(Run.created_at.desc())
    if status:
        q = q.where(Run.status == status)
    if base_model:
        q = q.where(or_(Run.base_model == base_model, Run.base_model_identity == base_model))
    if kind:
        q = q.where(Run.kind == kind)
    if group:
        q = q.where(Run.group_id == group)
    if dataset:
        q = q.where(Run.id.in_(select(RunDataset.run_id).where(
            or_(RunDataset.fingerprint.startswith(dataset, autoescape=True), RunDataset.name == dataset))))
    for t in tag or []:
        q = q.where(Run.id.in_(select(RunTag.run_id).where(RunTag.tag == t)))
    if limit:
        q = q.limit(limit)
    with store.session() as s:
        return [_view(r) for r in s.scalars(q).all()]


def get_run(store: Store, id_or_prefix: str) -> RunView:
    rid = resolve_run_id(store, id_or_prefix)
    reap_dead_runs(store)
    with store.session() as s:
        run = s.get(Run, rid, options=[selectinload(Run.tags), selectinload(Run.datasets)])
        return _view(run, with_config=True)


def metric_series(store: Store, run_id: str, keys: list[str] | None = None) -> dict[str, list[tuple]]:
    """key -> [(step, epoch, value, logged_at)] in step order."""
    q = select(Metric).where(Metric.run_id == run_id).order_by(Metric.key, Metric.step, Metric.id)
    if keys:
        q = q.where(Metric.key.in_(keys))
    out: dict[str, list[tuple]] = defaultdict(list)
    with store.session() as s:
        for m in s.scalars(q):
            out[m.key].append((m.step, m.epoch, m.value, m.logged_at))
    return dict(out)


def final_metrics(store: Store, run_id: str) -> dict[str, float | None]:
    """The last logged value of every metric key (highest step; latest write wins on ties)."""
    return {k: rows[-1][2] for k, rows in metric_series(store, run_id).items()}


def evals(store: Store, run_id: str) -> list[dict]:
    with store.session() as s:
        rows = s.scalars(select(EvalResult).where(EvalResult.run_id == run_id).order_by(EvalResult.id)).all()
        return [{"name": e.name, "metrics": e.metrics, "created_at": e.created_at.isoformat()} for e in rows]


def artifacts(store: Store, run_id: str) -> list[dict]:
    with store.session() as s:
        rows = s.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)).all()
        return [{"kind": a.kind, "path": a.path, "size_bytes": a.size_bytes,
                 "created_at": a.created_at.isoformat()} for a in rows]


def children(store: Store, run_id: str) -> list[str]:
    with store.session() as s:
        return list(s.scalars(select(Run.id).where(Run.parent_run_id == run_id).order_by(Run.created_at)))


def delete_run(store: Store, run_id: str) -> None:
    """Delete a run's records (metrics, evals, artifacts rows, tags, dataset links). Files are not touched here;
    child runs keep existing with their parent link cleared."""
    def _do(s: Session) -> None:
        s.execute(update(Run).where(Run.parent_run_id == run_id).values(parent_run_id=None))
        for table in (Metric, EvalResult, Artifact, RunTag, RunDataset):
            s.execute(delete(table).where(table.run_id == run_id))
        s.execute(delete(Run).where(Run.id == run_id))

    store.write(_do)
