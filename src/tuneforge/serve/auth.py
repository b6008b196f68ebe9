"""Who is calling: every /v1 route depends on `require_api_key`, which answers the caller's project.

Files, jobs, fine-tuned models and logged completions belong to a project; another project's ids answer 404.
(Placeholder until API keys land: every caller is the "default" project.)
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Header, Request

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Caller:
    project: str
    key_id: str | None = None


async def require_api_key(request: Request, authorization: str | None = Header(default=None)) -> Caller:
    """The caller's project."""
    return Caller(DEFAULT_PROJECT)
