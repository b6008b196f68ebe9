"""API keys in the registry (`registry/keys.py`) and `tuneforge keys create / ls / revoke`."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from tuneforge.registry import keys
from tuneforge.registry.records import utcnow
from tuneforge.registry.serving import ApiKey
from tuneforge.registry.store import RegistryError, close_store
from tuneforge.utils.errors import ConfigError


def _row(store, key_id: str) -> ApiKey:
    with store.session() as s:
        row = s.get(ApiKey, key_id)
        s.expunge(row)
        return row


def test_create_stores_only_the_hash_and_a_prefix(store):
    row, secret = keys.create_key(store, "team-a", "ci")
    assert re.fullmatch(r"tf-[A-Za-z0-9_-]{43}", secret)
    stored = _row(store, row.id)
    assert stored.project == "team-a" and stored.name == "ci" and stored.prefix == secret[:8]
    assert stored.sha256 == keys.hash_secret(secret) and stored.revoked_at is None and stored.last_used_at is None
    assert secret not in {str(v) for v in vars(stored).values()}  # the secret itself is nowhere in the row
    other, other_secret = keys.create_key(store, "team-a")
    assert other.id != row.id and other_secret != secret and other.name is None


@pytest.mark.parametrize("project", ["", "a b", "a/b", "x" * 65, "ünï", "../x"])
def test_project_names_are_checked(store, project):
    with pytest.raises(ConfigError, match="invalid project name"):
        keys.create_key(store, project)


def test_project_name_charset_and_length(store):
    for project in ("a", "Team_1.prod-eu", "x" * 64):
        assert keys.create_key(store, project)[0].project == project


def test_verify_answers_the_active_key_only(store):
    row, secret = keys.create_key(store, "p1")
    assert keys.verify_key(store, secret).id == row.id
    assert keys.verify_key(store, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert keys.verify_key(store, "unused") is None and keys.verify_key(store, "") is None
    keys.revoke_key(store, row.id)
    assert keys.verify_key(store, secret) is None


def test_last_used_is_written_at_most_once_a_minute(store):
    row, secret = keys.create_key(store, "p1")
    keys.verify_key(store, secret)
    first = _row(store, row.id).last_used_at
    assert first is not None and utcnow() - first < dt.timedelta(seconds=30)
    keys.verify_key(store, secret)
    assert _row(store, row.id).last_used_at == first  # within the minute: no write
    old = utcnow() - dt.timedelta(minutes=5)
    store.write(lambda s: s.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=old)))
    assert keys.verify_key(store, secret).last_used_at > old
    assert _row(store, row.id).last_used_at > old


def test_list_filters_by_project_newest_first(store):
    a1, _ = keys.create_key(store, "a")
    b1, _ = keys.create_key(store, "b")
    a2, _ = keys.create_key(store, "a")
    assert [k.id for k in keys.list_keys(store, "a")] == [a2.id, a1.id]
    assert {k.id for k in keys.list_keys(store)} == {a1.id, a2.id, b1.id}
    assert keys.list_keys(store, "nobody") == []


def test_revoke_by_id_or_prefix_and_clear_errors(store):
    row, secret = keys.create_key(store, "p")
    other, _ = keys.create_key(store, "p")
    assert keys.count_active_keys(store) == 2
    with pytest.raises(RegistryError, match="no API key 'key_nope'"):
        keys.revoke_key(store, "key_nope")
    with pytest.raises(RegistryError, match="matches 2 API keys"):
        keys.revoke_key(store, "key_")
    with pytest.raises(RegistryError, match="empty key id"):
        keys.revoke_key(store, " ")
    revoked = keys.revoke_key(store, secret[:8] + "…")  # as `keys ls` shows it
    assert revoked.id == row.id and _row(store, row.id).revoked_at is not None
    assert _row(store, other.id).revoked_at is None and keys.count_active_keys(store) == 1
    when = _row(store, row.id).revoked_at
    assert keys.revoke_key(store, row.id).revoked_at == when  # revoking twice keeps the first time
    with store.session() as s:
        assert s.scalar(select(ApiKey.revoked_at).where(ApiKey.id == row.id)) == when


def test_revoke_by_whole_secret_and_prefixes_are_case_sensitive(store):
    row, secret = keys.create_key(store, "p")
    with pytest.raises(RegistryError, match="no API key"):
        keys.revoke_key(store, secret[:8].swapcase())  # SQLite's LIKE alone would match it
    unknown = "tf-" + "z" * 43
    with pytest.raises(RegistryError, match="no API key has the secret") as err:
        keys.revoke_key(store, unknown)
    assert unknown not in str(err.value)  # a whole secret is never echoed
    assert keys.revoke_key(store, secret).id == row.id and keys.verify_key(store, secret) is None


def test_cli_create_ls_revoke_round_trip(tmp_path):
    from tuneforge.cli import app  # the real command table: `keys` must be registered

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, ["keys", *args, "--registry", url], env={"COLUMNS": "200"})

    try:
        created = run("create", "--project", "team-a", "--name", "laptop")
        assert created.exit_code == 0, created.output
        secret = created.stdout.strip()  # stdout holds the secret alone: SECRET=$(tuneforge keys create ...)
        assert re.fullmatch(r"tf-[A-Za-z0-9_-]{43}", secret)
        assert "cannot be shown again" in created.output
        listed = run("ls")
        assert listed.exit_code == 0, listed.output
        assert all(s in listed.stdout for s in ("team-a", "laptop", secret[:8], "key_"))
        assert secret not in listed.output
        assert "team-a" not in run("ls", "--project", "other").output
        revoked = run("revoke", secret[:8])
        assert revoked.exit_code == 0 and "revoked API key" in revoked.output
        relisted = run("ls", "--project", "team-a").stdout
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d\s*│\s*$", relisted.splitlines()[-2])  # the revoked column
        unknown = run("revoke", "key_nope")
        assert isinstance(unknown.exception, RegistryError) and "no API key" in str(unknown.exception)
        bad = run("create", "--project", "a b")
        assert isinstance(bad.exception, ConfigError)
        helped = runner.invoke(app, ["keys", "--help"], env={"COLUMNS": "200"})
        assert all(s in helped.output for s in ("create", "ls", "revoke", "project"))
    finally:
        close_store(url)
