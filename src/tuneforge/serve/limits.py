"""Request body limits: a 413 in OpenAI's error shape before a too large body is read into memory.

Every request body may be at most `settings.max_request_mb`, except uploads (POST /v1/files), which the upload route
limits to `settings.max_upload_mb` itself; here that larger limit is only the outer bound. Content-Length is checked
first; a body without one (chunked) is counted as it streams, so a client cannot get past the limit by leaving it
out. Sizes are MiB (`MB` bytes).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneforge.serve.errors import APIError

MB = 1 << 20
UPLOAD_PATH = "/v1/files"


class BodyTooLarge(Exception):
    """Raised into the app by `receive` once the streamed body passes the limit."""


def is_upload(scope: Scope) -> bool:
    return scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH


def body_limit_mb(scope: Scope) -> tuple[int, str]:
    """(the limit in MB for this request, the setting that sets it)."""
    settings = scope["app"].state.tuneforge.settings
    if is_upload(scope):
        return settings.max_upload_mb, "max_upload_mb"
    return settings.max_request_mb, "max_request_mb"


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed Content-Length itself
    return None


def too_large(limit_mb: int, setting: str) -> JSONResponse:
    err = APIError(413, f"The request body is larger than this server's limit of {limit_mb} MB ({setting}); send "
                        f"less, or upload large data with POST /v1/files", code="request_too_large")
    return JSONResponse(err.body(), status_code=413)


class _CountingChannel:
    """`receive` that counts body bytes and raises BodyTooLarge past `limit`; `send` that forwards the app's
    response until then, and swallows it after (the app's answer to the exception is replaced by the 413)."""

    def __init__(self, receive: Receive, send: Send, limit: int):
        self._receive, self._send, self.limit = receive, send, limit
        self.received = 0
        self.exceeded = self.response_started = False

    async def receive(self) -> Message:
        if self.exceeded:
            raise BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.response_started:
            return
        self.response_started = True
        await self._send(message)


class BodySizeLimit:
    """ASGI middleware (`app.add_middleware(BodySizeLimit)`); reads the limits from `app.state.tuneforge`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_mb, setting = body_limit_mb(scope)
        length = declared_length(scope)
        if length is not None and length > limit_mb * MB:
            await too_large(limit_mb, setting)(scope, receive, send)
            return
        channel = _CountingChannel(receive, send, limit_mb * MB)
        try:
            await self.app(scope, channel.receive, channel.send)
        except Exception:
            if not channel.exceeded or channel.response_started:
                raise
        if channel.exceeded and not channel.response_started:
            await too_large(limit_mb, setting)(scope, receive, send)
