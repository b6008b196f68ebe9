"""Logging answered chat completions (`serve --log-requests`), so clients can rate and correct them later
(POST /v1/feedback) and `tuneforge data from-feedback` can turn them into training rows.

`log_chat_completion` is called once a completion is answered: at the end of an unstreamed one (on the event loop)
and when a stream has sent its last choice (in a worker thread). It only queues the row and returns: one background
thread writes the rows in order, so a slow or locked registry delays the log, never an answer, and a registry error
is a warning in the server log, never a failed request. What is stored is the request's messages, tools and
sampling parameters (a fixed list of body fields: never a header, so never the Authorization key), the answers and
the model id.
"""

from __future__ import annotations

import json

from tuneforge.registry.feedback import log_completion
from tuneforge.registry.store import open_store
from tuneforge.registry.writer import BackgroundWriter
from tuneforge.serve.errors import log

# The request fields a training row needs (the conversation) or that explain an answer (how it was sampled).
KEPT_FIELDS = ("messages", "tools", "tool_choice", "response_format", "temperature", "top_p", "n", "seed", "stop",
               "max_tokens", "max_completion_tokens", "frequency_penalty", "presence_penalty", "repetition_penalty",
               "logit_bias", "stream")
MAX_PENDING = 10_000  # rows queued while the registry is slow; past this, new rows are dropped (with a warning)

_writer = BackgroundWriter("tuneforge-request-log")


def stored_request(request_body) -> dict:
    """The part of a chat completion request that is logged (a dict, or the request model itself)."""
    if hasattr(request_body, "model_dump"):
        request_body = request_body.model_dump(exclude_none=True)
    return {k: request_body[k] for k in KEPT_FIELDS if request_body.get(k) is not None}


def log_chat_completion(state, project: str, request_body: dict, reply_id: str, answers: list[str],
                        model: str) -> None:
    """Queue one answered chat completion for the registry; does nothing unless `state.settings.log_requests`.
    Never raises: a failure is logged as a warning. Safe to call from any thread, cheap enough for the event loop."""
    settings = state.settings
    if not settings.log_requests:
        return
    try:
        if _writer.pending >= MAX_PENDING:
            log.warning("request log: %d completions are waiting for the registry; %s is not logged",
                        _writer.pending, reply_id)
            return
        row = (reply_id, project, model, stored_request(request_body), [str(a) for a in answers])
        _writer.submit(lambda: _write(settings.registry_url, *row))
    except Exception as err:  # noqa: BLE001 - logging must never fail an answer
        log.warning("request log: %s could not be queued (%s: %s)", reply_id, type(err).__name__, err)


def _write(url: str | None, reply_id: str, project: str, model: str, request: dict, answers: list[str]) -> None:
    """Runs on the writer thread."""
    try:
        request = json.loads(json.dumps(request, ensure_ascii=False, default=str))  # JSON-safe, whatever came in
        log_completion(open_store(url), reply_id, project, model, request, answers)
    except Exception as err:  # noqa: BLE001 - a broken registry costs the log, never the server
        log.warning("request log: %s was not stored in the registry (%s: %s)", reply_id, type(err).__name__, err)


def flush(timeout: float | None = 10.0) -> bool:
    """Wait until every completion queued so far is written (or failed); False when `timeout` passed first.
    Feedback on a completion just answered calls this before answering 404, as its log may still be queued."""
    return _writer.flush(timeout)
