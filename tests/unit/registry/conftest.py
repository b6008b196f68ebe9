"""Registry fixtures: every test taking `registry_url` runs on SQLite and, when a server is configured, PostgreSQL."""

from __future__ import annotations

import pytest

from tuneforge.registry.store import open_store
from tuneforge.registry.testing import PG_SKIP_REASON, pg_url, temp_registry_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request, tmp_path, monkeypatch):
    if request.param == "postgres" and not pg_url():
        pytest.skip(PG_SKIP_REASON)
    with temp_registry_url(request.param, tmp_path) as url:
        monkeypatch.setenv("TUNEFORGE_REGISTRY_URL", url)
        yield url


@pytest.fixture
def store(registry_url):
    return open_store(registry_url)
