"""Every error the server answers, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

The official client turns the status into its exception class (404 → NotFoundError, 400 → BadRequestError) and
reads `type`, `param` and `code` from the body. Clients never see a stack trace: unexpected failures are logged
here and answered with a short 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.utils.errors import ModelError, TuneforgeError

log = logging.getLogger("tuneforge.serve")


class APIError(Exception):
    """An error answer: HTTP status plus OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def model_not_found(model_id: str) -> APIError:
    """OpenAI's answer to an unknown model id (param null, code model_not_found), with where to look."""
    return APIError(404, f"The model `{model_id}` does not exist or you do not have access to it. "
                         f"GET /v1/models lists the model ids this server answers to.", code="model_not_found")


def invalid(param: str | None, message: str, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported(param: str, what: str) -> APIError:
    """A parameter OpenAI accepts that this server does not honour yet: refused rather than silently ignored."""
    return APIError(400, f"{param}: {what} is not supported by tuneforge serve yet", param=param,
                    code="unsupported_parameter")


def from_tuneforge(err: TuneforgeError, model_id: str | None = None) -> APIError:
    """A library error as an answer: a model that fails to load is the server's problem (500, details in the log);
    anything else (no chat template, a bad setting) is the request's (400)."""
    from tuneforge.jobs.store import JobConflict, NotFound

    if isinstance(err, NotFound):
        return APIError(404, err.message, code="not_found")
    if isinstance(err, JobConflict):
        return APIError(409, err.message, code="conflict")
    if isinstance(err, ModelError):
        log.error("loading %s failed: %s", model_id, err)
        return APIError(500, f"the model `{model_id}` could not be loaded; the server log says why",
                        type="server_error", code="model_load_failed")
    return APIError(400, err.one_line)


def _json(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=getattr(err, "headers", None))


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or None


def install_handlers(app: FastAPI) -> None:
    """Answer every failure in OpenAI's error shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return _json(err)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        param = _param(tuple(first.get("loc", ())))
        return _json(APIError(400, f"{param or 'request'}: {first.get('msg')}", param=param,
                              code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        kind = "not_found" if err.status_code == 404 else None
        return _json(APIError(err.status_code, str(err.detail), code=kind))

    @app.exception_handler(TuneforgeError)
    async def _tuneforge(request: Request, err: TuneforgeError):
        return _json(from_tuneforge(err))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return _json(APIError(500, "internal server error; the server log has the details", type="server_error"))
