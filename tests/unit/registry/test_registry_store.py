"""Opening the registry: location, migrations, SQLite settings."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from tuneforge.registry import store as store_mod
from tuneforge.registry.records import Base
from tuneforge.registry.store import RegistryError, Store, open_store, registry_url


def test_default_location_is_under_tuneforge_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEFORGE_REGISTRY_URL", raising=False)
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    assert registry_url() == f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    store = Store()
    assert (tmp_path / "home" / "registry.db").is_file()
    store.close()


def test_env_url_wins(monkeypatch):
    monkeypatch.setenv("TUNEFORGE_REGISTRY_URL", "sqlite:////x/y.db")
    assert registry_url() == "sqlite:////x/y.db"
    assert registry_url("sqlite:////explicit.db") == "sqlite:////explicit.db"


def test_invalid_url_is_a_clear_error():
    with pytest.raises(RegistryError, match="invalid registry URL"):
        Store("not a url")


def test_migrations_create_every_table_and_match_the_models(store):
    names = set(inspect(store.engine).get_table_names())
    assert {"runs", "run_tags", "datasets", "run_datasets", "metrics", "evals", "artifacts",
            "alembic_version_tuneforge"} <= names
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == "alembic_version_tuneforge")]
    assert diff == []


def test_reopening_is_idempotent(registry_url):
    a = Store(registry_url)
    b = Store(registry_url)  # second migrate() is a no-op
    with b.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version_tuneforge")).scalar() == "0002"
    a.close()
    b.close()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


class _LockedThenFree:
    """A cursor whose journal-mode switch reports 'database is locked' a few times, as SQLite does (without calling
    the busy handler) when two processes create the same fresh registry file at once."""

    def __init__(self, failures: int):
        self.failures, self.switched = failures, False

    def execute(self, sql: str):
        if sql == "PRAGMA journal_mode = WAL":
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            self.switched = True
        return self

    def fetchone(self):
        return ("wal" if self.switched else "delete",)


def test_wal_switch_waits_out_a_concurrent_creator():
    cur = _LockedThenFree(failures=3)
    store_mod._enable_wal(cur)
    assert cur.switched


def test_wal_switch_leaves_other_errors_alone():
    class Broken(_LockedThenFree):
        def execute(self, sql):
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        store_mod._enable_wal(Broken(0))
