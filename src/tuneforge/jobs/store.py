"""Files, jobs, events and checkpoints in the registry, and the job state machine.

    validating_files → queued → running → succeeded | failed | cancelled
                                running → pausing → paused → (resume) queued;   queued → paused
                       any state but a final one → cancelled

Every read takes the caller's project, so another project's ids are simply not found. Writes are short
transactions (`Store.write`), safe from the web server's threads, the scheduler and the workers at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from tuneforge.registry.records import utcnow
from tuneforge.registry.serving import JOB_FINAL, FineTuningJob, JobCheckpoint, JobEvent, StoredFile
from tuneforge.registry.store import Store
from tuneforge.utils.errors import TuneforgeError

ACTIVE = ("running", "pausing")  # a worker owns the job


class JobConflict(TuneforgeError):
    """The job's state does not allow this action (answered with 409 and the reason)."""


class NotFound(TuneforgeError):
    """No such id in the caller's project (answered with 404)."""


def _read(store: Store, fn):
    """fn(session) in a read session; the rows it returns stay readable afterwards (detached with their values)."""
    with store.session() as s:
        result = fn(s)
        s.expunge_all()  # before the session's closing rollback, which would expire them
    return result


def epoch(t: dt.datetime | None) -> int | None:
    return int(t.timestamp()) if t is not None else None


# --- files -------------------------------------------------------------------------------------------------------------


def add_file(store: Store, **fields) -> StoredFile:
    row = StoredFile(created_at=utcnow(), **fields)
    store.write(lambda s: s.add(row))
    return row


def get_file(store: Store, project: str, file_id: str) -> StoredFile:
    row = _read(store, lambda s: s.get(StoredFile, file_id))
    if row is None or row.project != project:
        raise NotFound(f"No such File object: {file_id}")
    return row


def list_files(store: Store, project: str, *, purpose: str | None = None, after: str | None = None,
               limit: int = 10000, order: str = "desc") -> tuple[list[StoredFile], bool]:
    q = select(StoredFile).where(StoredFile.project == project)
    if purpose:
        q = q.where(StoredFile.purpose == purpose)
    rows = _read(store, lambda s: list(s.scalars(q)))
    rows.sort(key=lambda r: (r.created_at, r.id), reverse=order == "desc")
    return _page(rows, after, limit)


def _page(rows: list, after: str | None, limit: int) -> tuple[list, bool]:
    """Cursor pagination: the rows after the one whose id is `after`, at most `limit`, and whether more follow."""
    if after is not None:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else []
    return rows[:limit], len(rows) > limit


def delete_file(store: Store, project: str, file_id: str) -> StoredFile:
    """Remove the record (the caller removes the bytes). A file an unfinished job trains on stays (409)."""
    row = get_file(store, project, file_id)

    def go(s):
        users = s.scalars(select(FineTuningJob.id).where(
            FineTuningJob.project == project, FineTuningJob.status.not_in(JOB_FINAL),
            (FineTuningJob.training_file == file_id) | (FineTuningJob.validation_file == file_id))).all()
        if users:
            raise JobConflict(f"{file_id} is used by the unfinished fine-tuning job {users[0]}; cancel it or wait "
                              f"until it ends, then delete the file")
        s.delete(s.get(StoredFile, file_id))

    store.write(go)
    return row


# --- jobs --------------------------------------------------------------------------------------------------------------


def add_job(store: Store, **fields) -> FineTuningJob:
    row = FineTuningJob(created_at=utcnow(), attempts=0, **fields)
    store.write(lambda s: s.add(row))
    return row


def get_job(store: Store, project: str | None, job_id: str) -> FineTuningJob:
    """The job; `project` None reads any project's (the scheduler and workers)."""
    row = _read(store, lambda s: s.get(FineTuningJob, job_id))
    if row is None or project is not None and row.project != project:
        raise NotFound(f"No such fine-tuning job: {job_id}")
    return row


def list_jobs(store: Store, project: str, *, after: str | None = None, limit: int = 20,
              metadata: dict[str, str] | None = None) -> tuple[list[FineTuningJob], bool]:
    rows = _read(store, lambda s: list(s.scalars(select(FineTuningJob).where(FineTuningJob.project == project))))
    if metadata:
        rows = [r for r in rows if all((r.meta or {}).get(k) == v for k, v in metadata.items())]
    rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return _page(rows, after, limit)


def jobs_in(store: Store, statuses: tuple[str, ...]) -> list[FineTuningJob]:
    rows = _read(store, lambda s: list(s.scalars(select(FineTuningJob).where(FineTuningJob.status.in_(statuses)))))
    return sorted(rows, key=lambda r: (r.created_at, r.id))


def jobs_with_workers(store: Store) -> list[FineTuningJob]:
    q = select(FineTuningJob).where((FineTuningJob.worker_pid.is_not(None)) | (FineTuningJob.worker_ref.is_not(None)))
    return _read(store, lambda s: list(s.scalars(q)))


def update_job(store: Store, job_id: str, **fields) -> FineTuningJob:
    def go(s):
        row = s.get(FineTuningJob, job_id)
        for key, value in fields.items():
            setattr(row, key, value)
        return row

    return store.write(go)


def transition(store: Store, project: str | None, job_id: str, action: str) -> FineTuningJob:
    """Apply a client's `cancel`, `pause` or `resume` (see the module docstring); JobConflict when the state does
    not allow it. A job a worker owns is asked (`requested`), and the worker acts at the end of its current step."""

    def go(s):
        row = s.get(FineTuningJob, job_id)
        if row is None or project is not None and row.project != project:
            raise NotFound(f"No such fine-tuning job: {job_id}")
        _ACTIONS[action](row)
        return row

    job = store.write(go)
    add_event(store, job_id, _MESSAGES[action, job.status])
    return job


def _cancel(row: FineTuningJob) -> None:
    if row.status in JOB_FINAL:
        raise JobConflict(f"the job has {row.status} already; there is nothing to cancel")
    if row.status in ACTIVE:
        row.requested = "cancel"
    row.status, row.finished_at, row.estimated_finish = "cancelled", utcnow(), None


def _pause(row: FineTuningJob) -> None:
    if row.status == "running":
        row.status, row.requested = "pausing", "pause"
    elif row.status == "queued":
        row.status = "paused"
    else:
        why = {"pausing": "it is pausing already", "paused": "it is paused already",
               "validating_files": "its files are still being validated"}.get(row.status, f"it has {row.status}")
        raise JobConflict(f"the job cannot be paused: {why}")


def _resume(row: FineTuningJob) -> None:
    if row.status != "paused":
        raise JobConflict(f"only a paused job can be resumed; this one is {row.status}"
                          + (" (it resumes once it has paused)" if row.status == "pausing" else "")
                          + ("; POST /tf/v1/runs/{run id}/resume continues it from its last checkpoint as a new job"
                             if row.status in ("failed", "cancelled") else ""))
    row.status, row.requested = "queued", None


_ACTIONS = {"cancel": _cancel, "pause": _pause, "resume": _resume}
_MESSAGES = {("cancel", "cancelled"): "Fine-tuning job cancelled",
             ("pause", "pausing"): "Pausing: the job saves a checkpoint after its current step",
             ("pause", "paused"): "Fine-tuning job paused before it started",
             ("resume", "queued"): "Fine-tuning job resumed: queued to continue from its last checkpoint"}


# --- events and checkpoints --------------------------------------------------------------------------------------------


def add_event(store: Store, job_id: str, message: str, *, level: str = "info", type: str = "message",
              data: dict[str, Any] | None = None) -> None:
    store.write(lambda s: s.add(JobEvent(job_id=job_id, message=message, level=level, type=type, data=data,
                                         created_at=utcnow())))


def list_events(store: Store, job_id: str, *, after: str | None = None, limit: int = 20) -> tuple[list, bool]:
    """Newest first; `after` is an event id (`ftevent-N`): the page continues with older events."""
    q = select(JobEvent).where(JobEvent.job_id == job_id)
    if after:
        q = q.where(JobEvent.id < _serial(after, "ftevent-"))
    rows = _read(store, lambda s: list(s.scalars(q.order_by(JobEvent.id.desc()).limit(limit + 1))))
    return rows[:limit], len(rows) > limit


def _serial(cursor: str, prefix: str) -> int:
    try:
        return int(cursor.removeprefix(prefix))
    except ValueError:
        raise NotFound(f"no such cursor {cursor!r}: pass the id of an item from an earlier page") from None


def add_checkpoint(store: Store, job_id: str, step: int, path: str, model_id: str, metrics: dict) -> None:
    store.write(lambda s: s.add(JobCheckpoint(job_id=job_id, step=step, path=path, model_id=model_id,
                                              metrics=metrics, created_at=utcnow())))


def list_checkpoints(store: Store, job_id: str, *, after: str | None = None, limit: int = 10) -> tuple[list, bool]:
    """Newest first, only those still on disk is the caller's business (see serve.routes_jobs)."""
    q = select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)
    if after:
        q = q.where(JobCheckpoint.id < _serial(after, "ftckpt-"))
    rows = _read(store, lambda s: list(s.scalars(q.order_by(JobCheckpoint.id.desc()).limit(limit + 1))))
    return rows[:limit], len(rows) > limit


def find_model(store: Store, project: str, model_id: str) -> tuple[FineTuningJob, JobCheckpoint | None] | None:
    """The succeeded job whose fine_tuned_model is `model_id`, or the checkpoint with that id, in `project`."""
    def go(s):
        job = s.scalars(select(FineTuningJob).where(FineTuningJob.fine_tuned_model == model_id,
                                                    FineTuningJob.project == project,
                                                    FineTuningJob.status == "succeeded")).first()
        if job is not None:
            return job, None
        found = s.execute(select(FineTuningJob, JobCheckpoint).join(
            JobCheckpoint, JobCheckpoint.job_id == FineTuningJob.id).where(
            JobCheckpoint.model_id == model_id, FineTuningJob.project == project)).first()
        return (found[0], found[1]) if found else None

    return _read(store, go)


def job_with_base(store: Store, project: str, model: str) -> FineTuningJob | None:
    """The latest job of `project` that fine-tunes `model` (its request's `model`)."""
    return _read(store, lambda s: s.scalars(select(FineTuningJob).where(
        FineTuningJob.project == project, FineTuningJob.model == model).order_by(
        FineTuningJob.created_at.desc())).first())


def project_models(store: Store, project: str) -> list[tuple[FineTuningJob, JobCheckpoint | None]]:
    """Every servable id of `project`: succeeded jobs' models and every job's checkpoints."""
    def go(s):
        jobs = list(s.scalars(select(FineTuningJob).where(FineTuningJob.project == project,
                                                          FineTuningJob.status == "succeeded")))
        ckpts = list(s.execute(select(FineTuningJob, JobCheckpoint).join(
            JobCheckpoint, JobCheckpoint.job_id == FineTuningJob.id).where(FineTuningJob.project == project)))
        return [(j, None) for j in jobs] + [(j, c) for j, c in ckpts]

    return _read(store, go)
