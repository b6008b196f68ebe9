"""API keys of `tuneforge serve`: create, list, revoke and verify Bearer keys, each bound to one project.

A secret is shown once, when it is created; the registry keeps only its SHA-256, so a copy of the database does not
give anyone a usable key. `prefix` (the secret's first characters) tells keys apart in listings and can name a key
to revoke. Nothing here logs or stores a secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tuneforge.registry.records import utcnow
from tuneforge.registry.serving import ApiKey
from tuneforge.registry.store import RegistryError, Store
from tuneforge.utils.errors import ConfigError

log = logging.getLogger("tuneforge.registry")

SECRET_START = "tf-"
PREFIX_CHARS = 8
PROJECT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TOUCH_EVERY = dt.timedelta(minutes=1)  # last_used_at is written at most this often per key
_MAX_SECRET_CHARS = 256  # longer bearer tokens are not ours: refused without hashing or a query
CREATE_HINT = "create one with `tuneforge keys create --project NAME`"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def looks_like_key(secret: str) -> bool:
    """Shaped like a key this module made: anything else (the openai client's "unused") needs no lookup."""
    return secret.startswith(SECRET_START) and len(secret) <= _MAX_SECRET_CHARS


def check_project(project: str) -> str:
    """A project name: 1 to 64 of A-Z a-z 0-9 _ . - (it appears in ids, folders and URLs)."""
    if not isinstance(project, str) or not PROJECT_RE.fullmatch(project):
        raise ConfigError(f"invalid project name {project!r}",
                          hint="use 1 to 64 letters, digits, '_', '.' or '-', e.g. --project team-a")
    return project


def _detached(s: Session, rows: list[ApiKey]) -> list[ApiKey]:
    """Rows usable after their read session ends (its closing rollback would otherwise expire them)."""
    s.expunge_all()
    return rows


def create_key(store: Store, project: str, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for `project`: (its row, the secret). The secret exists only in the returned value: show it once."""
    check_project(project)
    if name is not None and len(name) > 128:
        raise ConfigError(f"key name is {len(name)} characters long; the most is 128")
    secret = SECRET_START + secrets.token_urlsafe(32)  # 32 random bytes → 43 URL-safe characters
    row = ApiKey(id="key_" + secrets.token_hex(8), project=project, name=name, prefix=secret[:PREFIX_CHARS],
                 sha256=hash_secret(secret), created_at=utcnow())

    def _add(s: Session) -> ApiKey:
        s.add(row)
        return row

    return store.write(_add), secret


def list_keys(store: Store, project: str | None = None) -> list[ApiKey]:
    """Keys (revoked ones too), newest first; only `project`'s when given."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if project is not None:
        query = query.where(ApiKey.project == project)
    with store.session() as s:
        return _detached(s, list(s.scalars(query)))


def count_active_keys(store: Store) -> int:
    """Keys not revoked, in every project (a server beyond loopback refuses to start with none)."""
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0


def find_key(store: Store, id_or_prefix: str) -> ApiKey:
    """The one key whose id, or whose secret's prefix, starts with `id_or_prefix`; or whose secret it is."""
    given = (id_or_prefix or "").strip().rstrip("…")  # as copied from a listing
    if not given:
        raise RegistryError("empty key id", hint="`tuneforge keys ls` lists the ids and prefixes")
    if looks_like_key(given) and len(given) > PREFIX_CHARS:
        return _by_secret(store, given)
    pattern = given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with store.session() as s:
        rows = _detached(s, list(s.scalars(select(ApiKey).where(
            or_(ApiKey.id.like(pattern, escape="\\"), ApiKey.prefix.like(pattern, escape="\\"))))))
    rows = [r for r in rows if r.id.startswith(given) or r.prefix.startswith(given)]  # SQLite's LIKE ignores case
    exact = [r for r in rows if given in (r.id, r.prefix)]
    rows = exact if len(exact) == 1 else rows
    if not rows:
        raise RegistryError(f"no API key {given!r} in the registry at {store.display_url}",
                            hint="`tuneforge keys ls` lists the ids and prefixes")
    if len(rows) > 1:
        names = ", ".join(f"{r.id} ({r.prefix}…, {r.project})" for r in rows[:5])
        raise RegistryError(f"{given!r} matches {len(rows)} API keys: {names}", hint="give the full key id")
    return rows[0]


def _by_secret(store: Store, secret: str) -> ApiKey:
    """The key of a whole secret (never echoed back: it may be a live key)."""
    with store.session() as s:
        key = s.scalar(select(ApiKey).where(ApiKey.sha256 == hash_secret(secret)))
        s.expunge_all()
    if key is None:
        raise RegistryError(f"no API key has the secret {secret[:PREFIX_CHARS]}… in the registry at "
                            f"{store.display_url}", hint="`tuneforge keys ls` lists the ids and prefixes")
    return key


def revoke_key(store: Store, id_or_prefix: str) -> ApiKey:
    """Revoke a key (by id, or the prefix shown in listings); it stops working on the next request. Revoking a
    revoked key keeps its first revocation time."""
    key = find_key(store, id_or_prefix)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        store.write(lambda s: s.execute(update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None))
                                        .values(revoked_at=key.revoked_at)))
    return key


def verify_key(store: Store, secret: str) -> ApiKey | None:
    """The active key whose secret this is, else None (unknown, revoked, or not shaped like our keys).

    One indexed read per call; `last_used_at` is written only when it is older than TOUCH_EVERY, so a busy key costs
    one write a minute, and a failed write (a busy database) never fails the request."""
    if not looks_like_key(secret):
        return None
    with store.session() as s:
        key = s.scalar(select(ApiKey).where(ApiKey.sha256 == hash_secret(secret)))
        s.expunge_all()  # usable after the read session (see _detached)
    if key is None or key.revoked_at is not None:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        _touch(store, key, now)
    return key


def _touch(store: Store, key: ApiKey, now: dt.datetime) -> None:
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - TOUCH_EVERY)
    try:
        store.write(lambda s: s.execute(update(ApiKey).where(ApiKey.id == key.id, stale).values(last_used_at=now)))
    except SQLAlchemyError as err:
        log.warning("could not record the use of API key %s: %s", key.id, err)
        return
    key.last_used_at = now
