"""Tables of the run registry (SQLAlchemy ORM).

The schema itself is owned by the Alembic migrations in `registry/migrations/versions`; these classes must stay in
step with them (a unit test compares the two). Times are stored as UTC.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted", "cancelled")
FINAL_STATUSES = RUN_STATUSES[1:]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


def _run_ref(**kw):
    """A `run_id` column: the owning run, deleted with it."""
    return mapped_column(String(32), ForeignKey("runs.id", ondelete="CASCADE"), **kw)


def _serial_id():
    return mapped_column(Integer, primary_key=True, autoincrement=True)


def _utc_time():
    return mapped_column(UTCDateTime())


class Run(Base):
    """One train / eval / export / serve / job execution."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[dt.datetime] = _utc_time()
    started_at: Mapped[dt.datetime | None] = _utc_time()
    ended_at: Mapped[dt.datetime | None] = _utc_time()
    heartbeat_at: Mapped[dt.datetime | None] = _utc_time()
    pid: Mapped[int | None] = mapped_column(Integer)
    proc_start: Mapped[int | None] = mapped_column(BigInteger)  # owner's start time (ms), guards against pid reuse
    hostname: Mapped[str | None] = mapped_column(String(255))
    config: Mapped[dict | None] = mapped_column(JSON)
    base_model: Mapped[str | None] = mapped_column(String(512), index=True)
    base_model_identity: Mapped[str | None] = mapped_column(String(512))
    stage: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(32))
    output_dir: Mapped[str | None] = mapped_column(Text)
    parent_run_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("runs.id", ondelete="SET NULL"), index=True)
    group_id: Mapped[str | None] = mapped_column(String(64), index=True)
    error: Mapped[str | None] = mapped_column(Text)

    tags: Mapped[list[RunTag]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    datasets: Mapped[list[RunDataset]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class RunTag(Base):
    __tablename__ = "run_tags"
    run_id: Mapped[str] = _run_ref(primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


class Dataset(Base):
    """A dataset by content: the same records in another file share one row."""

    __tablename__ = "datasets"
    fingerprint: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    n_records: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = _utc_time()


class RunDataset(Base):
    """Which datasets a run used, under which name and for what (train / eval / ...)."""

    __tablename__ = "run_datasets"
    run_id: Mapped[str] = _run_ref(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(128), ForeignKey("datasets.fingerprint"), primary_key=True,
                                             index=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    n_records: Mapped[int | None] = mapped_column(Integer)


class Metric(Base):
    """One scalar at one step. `value` is NULL for NaN (SQLite cannot store NaN)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step"),)
    id: Mapped[int] = _serial_id()
    run_id: Mapped[str] = _run_ref()
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Float)
    logged_at: Mapped[dt.datetime] = _utc_time()


class EvalResult(Base):
    __tablename__ = "evals"
    id: Mapped[int] = _serial_id()
    run_id: Mapped[str] = _run_ref(index=True)
    name: Mapped[str] = mapped_column(String(255))
    metrics: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _utc_time()


class Artifact(Base):
    """A file or folder a run produced: checkpoint, adapter, merged model, report, plot."""

    __tablename__ = "artifacts"
    id: Mapped[int] = _serial_id()
    run_id: Mapped[str] = _run_ref(index=True)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = _utc_time()


from tuneforge.registry import serving as _serving  # noqa: E402,F401  (its tables join Base.metadata)
