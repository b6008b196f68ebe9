"""Tables of the serving side (`tuneforge serve`): API keys, uploaded files, fine-tuning jobs with their events and
checkpoints, and logged chat completions with their feedback.

Everything a client owns carries its `project` (the API key's project; "default" on a loopback server without keys),
and every query filters on it, so another project's ids do not exist for a client. The schema is owned by migration
0002; these classes must stay in step with it (the registry test compares the two).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.registry.records import Base, UTCDateTime

JOB_STATUSES = ("validating_files", "queued", "running", "pausing", "paused", "succeeded", "failed", "cancelled")
JOB_FINAL = ("succeeded", "failed", "cancelled")


def _time():
    return mapped_column(UTCDateTime())


class ApiKey(Base):
    """A Bearer key. Only its SHA-256 is stored; `prefix` (the first characters) tells keys apart in listings."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = _time()
    last_used_at: Mapped[dt.datetime | None] = _time()
    revoked_at: Mapped[dt.datetime | None] = _time()


class StoredFile(Base):
    """An uploaded file. `path` is relative to the server's storage folder and made from the id, never the name."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # uploaded | processed | error
    status_details: Mapped[str | None] = mapped_column(Text)
    data_format: Mapped[str | None] = mapped_column(String(32))  # openai, openai_preference, alpaca, ...
    n_rows: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _time()


class FineTuningJob(Base):
    """One fine-tuning job. `request` is what the client asked for; `run_dir` the run folder the worker trains in
    (the same folder on every attempt, so a restarted worker resumes from its last checkpoint)."""

    __tablename__ = "ft_jobs"
    __table_args__ = (Index("ix_ft_jobs_project_created", "project", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(512))
    training_file: Mapped[str] = mapped_column(String(40))
    validation_file: Mapped[str | None] = mapped_column(String(40))
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict | None] = mapped_column("metadata", JSON)
    method: Mapped[dict] = mapped_column(JSON)  # {type, supervised|dpo|reinforcement: {hyperparameters}}
    overrides: Mapped[dict | None] = mapped_column(JSON)  # tuneforge config keys (our extension)
    status: Mapped[str] = mapped_column(String(24), index=True)
    requested: Mapped[str | None] = mapped_column(String(16))  # pause | cancel, acted on by the worker
    error: Mapped[dict | None] = mapped_column(JSON)  # {code, message, param}
    fine_tuned_model: Mapped[str | None] = mapped_column(String(700), index=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    result_files: Mapped[list | None] = mapped_column(JSON)
    resolved: Mapped[dict | None] = mapped_column(JSON)  # hyperparameters as resolved from "auto"
    run_dir: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("runs.id", ondelete="SET NULL"))
    executor: Mapped[str | None] = mapped_column(String(16))
    worker_ref: Mapped[str | None] = mapped_column(String(255))  # the executor's handle (Ray job id, ...)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_start: Mapped[int | None] = mapped_column(BigInteger)
    heartbeat_at: Mapped[dt.datetime | None] = _time()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = _time()
    started_at: Mapped[dt.datetime | None] = _time()
    finished_at: Mapped[dt.datetime | None] = _time()


class JobEvent(Base):
    """A job's event: a status message (`type` message) or one training log (`type` metrics, `data` the values)."""

    __tablename__ = "ft_job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("ft_jobs.id", ondelete="CASCADE"), index=True)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _time()


class JobCheckpoint(Base):
    """A checkpoint a job saved; `model_id` is the id that serves it."""

    __tablename__ = "ft_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("ft_jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(String(700), index=True)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _time()


class LoggedCompletion(Base):
    """A chat completion the server answered (`serve --log-requests`): the request, the answers and the model id."""

    __tablename__ = "completions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(700), index=True)
    request: Mapped[dict] = mapped_column(JSON)
    answers: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _time()


class Feedback(Base):
    """A rating (+1 / -1) and optional correction of a logged completion (POST /v1/feedback)."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    completion_id: Mapped[str] = mapped_column(String(64), ForeignKey("completions.id", ondelete="CASCADE"),
                                               index=True)
    project: Mapped[str] = mapped_column(String(64))
    rating: Mapped[int | None] = mapped_column(Integer)
    correction: Mapped[str | None] = mapped_column(Text)
    choice_index: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = _time()
