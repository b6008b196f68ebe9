"""POST /v1/feedback and GET /v1/feedback (our extension; OpenAI has no such endpoint): rate (+1 / -1) and/or
correct a chat completion this server logged (`serve --log-requests`).

The completion is named by the `id` of its answer ("chatcmpl-..."), and `choice_index` picks the choice when it
had several. A completion of another project answers 404, like one that was never logged. Feedback becomes
training data with `tuneforge data from-feedback` (SFT rows, DPO pairs, KTO rows).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.registry.feedback import (
    CompletionNotFound,
    FeedbackView,
    InvalidFeedback,
    add_feedback,
    feedback_for,
    is_logged,
)
from tuneforge.registry.store import Store, open_store
from tuneforge.serve import request_log
from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.errors import APIError, invalid

router = APIRouter()


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    completion_id: str = Field(min_length=1, max_length=64)
    rating: Optional[Literal[1, -1]] = None
    correction: Optional[str] = None
    choice_index: int = Field(0, ge=0)


def _answer(f: FeedbackView) -> dict:
    return {"id": f"feedback-{f.id}", "object": "feedback", "completion_id": f.completion_id, "rating": f.rating,
            "correction": f.correction, "choice_index": f.choice_index,
            "created_at": int(f.created_at.replace(tzinfo=f.created_at.tzinfo or dt.timezone.utc).timestamp())}


def _not_found(state, completion_id: str) -> APIError:
    if not state.settings.log_requests:
        return invalid("completion_id", f"no logged chat completion with id {completion_id!r}, and this server "
                                        f"does not log completions: start it with --log-requests to collect "
                                        f"feedback", code="request_logging_off")
    return APIError(404, f"No chat completion found with id '{completion_id}' (feedback applies to completions "
                         f"this server logged, for the same project)", param="completion_id",
                    code="completion_not_found")


async def _store(state) -> Store:
    return await anyio.to_thread.run_sync(open_store, state.settings.registry_url)


async def _known(state, store: Store, completion_id: str, project: str) -> None:
    """Raise the right error unless the completion is logged; a log still queued is waited for first (a client
    may rate an answer the moment it arrives)."""
    if await anyio.to_thread.run_sync(is_logged, store, completion_id, project):
        return
    if state.settings.log_requests and await anyio.to_thread.run_sync(request_log.flush, 10.0) \
            and await anyio.to_thread.run_sync(is_logged, store, completion_id, project):
        return
    raise _not_found(state, completion_id)


@router.post("/v1/feedback")
async def create_feedback(body: FeedbackRequest, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    state = request.app.state.tuneforge
    correction = body.correction if body.correction and body.correction.strip() else None
    if body.rating is None and correction is None:
        raise invalid("rating", "give a rating (1 or -1), a correction, or both", code="missing_feedback")
    store = await _store(state)
    await _known(state, store, body.completion_id, caller.project)
    try:
        saved = await anyio.to_thread.run_sync(add_feedback, store, body.completion_id, caller.project,
                                               body.rating, correction, body.choice_index)
    except CompletionNotFound:  # deleted in between
        raise _not_found(state, body.completion_id) from None
    except InvalidFeedback as err:
        raise invalid(err.param, err.message) from None
    return _answer(saved)


@router.get("/v1/feedback")
async def list_feedback(request: Request, completion_id: str = Query(min_length=1, max_length=64),
                        caller: Caller = Depends(require_api_key)) -> dict:
    state = request.app.state.tuneforge
    store = await _store(state)
    await _known(state, store, completion_id, caller.project)
    try:
        rows = await anyio.to_thread.run_sync(feedback_for, store, completion_id, caller.project)
    except CompletionNotFound:
        raise _not_found(state, completion_id) from None
    return {"object": "list", "data": [_answer(f) for f in rows]}
