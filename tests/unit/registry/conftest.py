"""Registry fixtures: every test taking `registry_url` runs on SQLite and, when a server is configured, PostgreSQL."""

from __future__ import annotations

import pytest

from tuneforge.registry.store import open_store
from tuneforge.registry.testing import registry_url_fixture

registry_url = registry_url_fixture()


@pytest.fixture
def store(registry_url):
    return open_store(registry_url)
