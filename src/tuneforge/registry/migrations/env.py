"""Alembic environment for the run registry; driven in-process by `tuneforge.registry.store.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

# Arbitrary constant: serializes concurrent first-use migrations on PostgreSQL.
_PG_LOCK_KEY = 7_412_305_118


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                      version_table="alembic_version_tuneforge")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI `alembic` tool is not how the registry is migrated
    raise RuntimeError("run registry migrations through tuneforge.registry.store.migrate()")
_run(connection)
