"""Throwaway registries for tests: a SQLite file, or a private schema on the PostgreSQL server named by
$TUNEFORGE_TEST_PG_URL (`.ci/postgres.sh` starts one and prints the URL).

A test module or conftest gets the shared `registry_url` fixture (SQLite, plus PostgreSQL when configured) with
`registry_url = registry_url_fixture()`.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PG_ENV = "TUNEFORGE_TEST_PG_URL"
PG_SKIP_REASON = (f"PostgreSQL registry tests need a server: set {PG_ENV}=postgresql+psycopg://user@127.0.0.1/db "
                  "(`eval \"$(bash .ci/postgres.sh)\"` starts one)")


def pg_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@contextmanager
def temp_registry_url(backend: str, tmp_dir: Path) -> Iterator[str]:
    """Yield a URL for an empty registry; a PostgreSQL schema is created for it and dropped afterwards."""
    from tuneforge.registry.store import close_store

    if backend == "sqlite":
        url = f"sqlite:///{tmp_dir / 'registry.db'}"
        try:
            yield url
        finally:
            close_store(url)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = pg_url()
    if not base:
        raise RuntimeError(PG_SKIP_REASON)
    schema = f"tf_test_{secrets.token_hex(4)}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)
    try:
        yield url
    finally:
        close_store(url)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def registry_url_fixture():
    """A pytest fixture yielding an empty registry's URL, also set as $TUNEFORGE_REGISTRY_URL; parametrized over
    SQLite and PostgreSQL (marked `postgres`, skipped with the reason when no server is configured)."""
    import pytest

    @pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
    def registry_url(request, tmp_path, monkeypatch):
        if request.param == "postgres" and not pg_url():
            pytest.skip(PG_SKIP_REASON)
        with temp_registry_url(request.param, tmp_path) as url:
            monkeypatch.setenv("TUNEFORGE_REGISTRY_URL", url)
            yield url

    return registry_url
