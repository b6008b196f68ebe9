"""Where API keys will be checked: every /v1 route depends on `require_api_key`.

Keys are a later step (issue 10, security: Bearer keys, stored hashed, required beyond loopback). Until then every
caller is accepted with or without an `Authorization` header (the official client always sends one), and the server
refuses to bind beyond loopback unless told `--insecure` (see serve.run).
"""

from __future__ import annotations

from fastapi import Header


async def require_api_key(authorization: str | None = Header(default=None)) -> None:
    """Accept the request. The future check reads `authorization` ("Bearer KEY") here and raises a 401."""
    return None
