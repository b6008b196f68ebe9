"""Who is calling: every /v1 route depends on `require_api_key`, which answers the caller's project.

Files, jobs, fine-tuned models and logged completions belong to a project; another project's ids answer 404.
Keys live in the registry (`tuneforge keys create --project NAME`); a request sends one as `Authorization: Bearer
KEY`. With `settings.require_keys` (always on beyond loopback) a missing, malformed, unknown or revoked key is a 401.
Without it, a valid key still selects its project, and anything else is the "default" project: the official client
always sends some key ("unused"), so an unknown one must not fail there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
from fastapi import Header, Request
from sqlalchemy.exc import SQLAlchemyError

from tuneforge.registry.keys import CREATE_HINT, looks_like_key, verify_key
from tuneforge.registry.serving import ApiKey
from tuneforge.registry.store import RegistryError, open_store
from tuneforge.serve.errors import APIError

DEFAULT_PROJECT = "default"
log = logging.getLogger("tuneforge.serve")


@dataclass(frozen=True)
class Caller:
    project: str
    key_id: str | None = None


class Unauthorized(APIError):
    """A 401 in OpenAI's shape. `headers` asks for Bearer auth (sent where the error handler passes headers on)."""

    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self, why: str):
        super().__init__(401, f"{why}. Send a key as `Authorization: Bearer KEY` (the openai client's api_key); "
                              f"the server's administrator can {CREATE_HINT}.", code="invalid_api_key")


def bearer_secret(authorization: str | None) -> str | None:
    """The token of `Bearer TOKEN` (scheme case-insensitive), else None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _lookup(registry_url: str | None, secret: str) -> ApiKey | None:
    return verify_key(open_store(registry_url), secret)


async def _verified(registry_url: str | None, secret: str) -> ApiKey | None:
    """The key, looked up in a worker thread. A registry that cannot be read is a 503, never a silent "default"
    (that would put a real key's requests into another project)."""
    try:
        return await anyio.to_thread.run_sync(_lookup, registry_url, secret)
    except (RegistryError, SQLAlchemyError, OSError) as err:
        log.error("API key check failed: the registry cannot be read: %s", getattr(err, "message", err))
        raise APIError(503, "the server cannot check API keys right now (its registry is unavailable); retry later",
                       type="server_error", code="registry_unavailable") from None


async def require_api_key(request: Request, authorization: str | None = Header(default=None)) -> Caller:
    """The caller's project: its key's, or "default" where keys are optional."""
    settings = request.app.state.tuneforge.settings
    secret = bearer_secret(authorization)
    key = await _verified(settings.registry_url, secret) if secret and looks_like_key(secret) else None
    if key is not None:
        return Caller(key.project, key.id)
    if not settings.require_keys:
        return Caller(DEFAULT_PROJECT)
    if authorization is None or not authorization.strip():
        raise Unauthorized("This server requires an API key, and the request has none")
    if secret is None:
        raise Unauthorized("Malformed Authorization header: expected `Bearer KEY`")
    raise Unauthorized("Incorrect API key provided: it is unknown or has been revoked")
