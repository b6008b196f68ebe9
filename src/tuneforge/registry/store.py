"""Where the registry lives and how it is opened: engine, migrations, short retried write transactions.

Location: `$TUNEFORGE_REGISTRY_URL` (any SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db`), else the SQLite
file `$TUNEFORGE_HOME/registry.db`. SQLite runs in WAL mode with a busy timeout and takes the write lock at the start
of every transaction (`BEGIN IMMEDIATE`), so two trainings writing at once wait for each other instead of failing.
The schema is created or upgraded by the packaged Alembic migrations the first time a process opens a registry.
"""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tuneforge.utils.errors import TuneforgeError
from tuneforge.utils.paths import tuneforge_home

ENV_URL = "TUNEFORGE_REGISTRY_URL"
SQLITE_BUSY_TIMEOUT_S = 60.0
_MIGRATIONS = Path(__file__).with_name("migrations")
_WRITE_RETRIES = 8
_READ_ONLY = "tuneforge_read_only"

T = TypeVar("T")


class RegistryError(TuneforgeError):
    """The run registry cannot be opened, or a run id does not resolve."""


def registry_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $TUNEFORGE_REGISTRY_URL, else sqlite:///$TUNEFORGE_HOME/registry.db."""
    if url:
        return url
    env = os.environ.get(ENV_URL, "").strip()
    if env:
        return env
    return f"sqlite:///{tuneforge_home() / 'registry.db'}"


def _enable_wal(cur) -> None:
    """Switch the file to WAL once (the mode is stored in the file). Switching needs an exclusive lock for which SQLite
    does not call the busy handler, so two processes creating a fresh registry at once retry here instead of failing."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    for attempt in itertools.count():
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err).lower() and "busy" not in str(err).lower() or time.monotonic() > deadline:
                raise
            time.sleep(min(0.5, 0.01 * 2 ** attempt) * (0.5 + random.random()))


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every sqlite test
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A write transaction takes the write lock up front, so the busy timeout applies; a deferred transaction
        # that upgrades from read to write can fail at once with "database is locked" when another writer got in
        # between. A read (Store.session) stays deferred: in WAL mode it then never waits for, nor blocks, a writer.
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise RegistryError(f"invalid registry URL {url!r}: {err}",
                            hint=f"set {ENV_URL} to a SQLAlchemy URL such as sqlite:///path/registry.db") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _sqlite_setup(engine)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except ModuleNotFoundError as err:
        raise RegistryError(f"the database driver for {parsed.drivername} is not installed ({err.name})",
                            hint="for PostgreSQL: pip install 'tuneforge[postgres]'") from None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (no-op when already there)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(
            conn, opts={"version_table": "alembic_version_tuneforge"}).get_current_revision()
        conn.rollback()
    if current == head:
        return
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def _is_locked(err: OperationalError) -> bool:
    msg = str(err.orig).lower() if err.orig is not None else str(err).lower()
    return "locked" in msg or "busy" in msg or "deadlock" in msg or "could not serialize" in msg


class Store:
    """An open registry. One per URL per process (see `open_store`); thread-safe through its connection pool."""

    def __init__(self, url: str | None = None):
        self.url = registry_url(url)
        self.engine = _make_engine(self.url)
        try:
            migrate(self.engine)
        except OperationalError as err:
            raise RegistryError(f"cannot open the run registry at {self.display_url}: {err.orig}",
                                hint=f"check {ENV_URL} or $TUNEFORGE_HOME") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session (rolled back at the end; on SQLite it takes no write lock)."""
        with self._sessions() as s:
            s.connection(execution_options={_READ_ONLY: True})
            try:
                yield s
            finally:
                s.rollback()

    def write(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` in one transaction and commit; retried with backoff while the database is busy."""
        for attempt in range(_WRITE_RETRIES):
            try:
                with self._sessions() as s, s.begin():
                    return fn(s)
            except OperationalError as err:
                if not _is_locked(err) or attempt == _WRITE_RETRIES - 1:
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.engine.dispose()


_STORES: dict[tuple[str, int], Store] = {}
_LOCK = threading.Lock()


def open_store(url: str | None = None) -> Store:
    """The process-wide Store for `url` (default location when None). Safe across fork: keyed by pid."""
    key = (registry_url(url), os.getpid())
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = Store(key[0])
        return store


def close_store(url: str) -> None:
    """Close and forget the cached Store for `url` in this process (tests; long-lived servers switching DBs)."""
    with _LOCK:
        for key in [k for k in _STORES if k[0] == url]:
            _STORES.pop(key).close()


def _after_fork_in_child() -> None:
    # Connections inherited from the parent must never be used (or closed) by the child.
    for store in _STORES.values():
        store.engine.dispose(close=False)
    _STORES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
