"""Logged chat completions and their feedback: written by `tuneforge serve` (--log-requests, POST /v1/feedback),
read by `tuneforge data from-feedback`, which turns them into training rows.

Every function takes the caller's `project` where a client is involved: a completion of another project is as
unknown as one that was never logged, so a client cannot rate (or learn about) another project's completions.
Returns plain dataclasses, like `queries`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.registry.records import utcnow
from tuneforge.registry.serving import Feedback, LoggedCompletion
from tuneforge.registry.store import RegistryError, Store


class CompletionNotFound(RegistryError):
    """No logged completion has this id in this project (never logged, logged elsewhere, or another project's)."""


class InvalidFeedback(RegistryError):
    """The feedback itself is wrong (no rating nor correction, a rating other than ±1, a choice that does not
    exist); `param` names the field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class FeedbackView:
    id: int
    completion_id: str
    rating: int | None
    correction: str | None
    choice_index: int
    created_at: dt.datetime


@dataclass
class RatedCompletion:
    """A logged completion with its feedback, oldest feedback first."""

    id: str
    project: str
    model: str
    request: dict
    answers: list[str]
    created_at: dt.datetime
    feedback: list[FeedbackView] = field(default_factory=list)


def log_completion(store: Store, id: str, project: str, model: str, request: dict, answers: list[str]) -> bool:
    """Store one answered chat completion; False (and nothing written) when this id is logged already."""
    def write(s: Session) -> bool:
        if s.get(LoggedCompletion, id) is not None:
            return False
        s.add(LoggedCompletion(id=id, project=project, model=model, request=request, answers=list(answers),
                               created_at=utcnow()))
        return True

    return store.write(write)


def add_feedback(store: Store, completion_id: str, project: str, rating: int | None, correction: str | None,
                 choice_index: int = 0) -> FeedbackView:
    """Record a rating (+1 / -1) and/or a correction of choice `choice_index` of a logged completion.

    Raises CompletionNotFound when `project` has no completion with this id, InvalidFeedback for a bad value."""
    correction = correction if correction and correction.strip() else None
    if rating is None and correction is None:
        raise InvalidFeedback("give a rating (1 or -1), a correction, or both", "rating")
    if rating not in (None, 1, -1):
        raise InvalidFeedback(f"rating must be 1 or -1, got {rating!r}", "rating")

    def write(s: Session) -> FeedbackView:
        done = s.get(LoggedCompletion, completion_id)
        if done is None or done.project != project:
            raise not_found(completion_id)
        if not 0 <= choice_index < len(done.answers):
            raise InvalidFeedback(f"choice_index {choice_index} does not exist: the completion has "
                                  f"{len(done.answers)} choice(s)", "choice_index")
        row = Feedback(completion_id=completion_id, project=project, rating=rating, correction=correction,
                       choice_index=choice_index, created_at=utcnow())
        s.add(row)
        s.flush()  # assigns the id
        return _view(row)

    return store.write(write)


def not_found(completion_id: str) -> CompletionNotFound:
    return CompletionNotFound(f"no logged chat completion with id {completion_id!r}",
                              hint="feedback applies to completions a server answered with --log-requests on")


def feedback_for(store: Store, completion_id: str, project: str) -> list[FeedbackView]:
    """The feedback of one completion of `project`, oldest first; CompletionNotFound when there is none such."""
    with store.session() as s:
        done = s.get(LoggedCompletion, completion_id)
        if done is None or done.project != project:
            raise not_found(completion_id)
        rows = s.scalars(select(Feedback).where(Feedback.completion_id == completion_id)
                         .order_by(Feedback.id)).all()
        return [_view(r) for r in rows]


def is_logged(store: Store, completion_id: str, project: str) -> bool:
    with store.session() as s:
        done = s.get(LoggedCompletion, completion_id)
        return done is not None and done.project == project


def completions_with_feedback(store: Store, model: str | None = None, project: str | None = None,
                              since: dt.datetime | None = None) -> list[RatedCompletion]:
    """Logged completions (of `model`, of `project`, logged at or after `since`) that have any feedback, oldest
    first, each with its feedback."""
    rated = select(Feedback.completion_id)
    q = _filtered(select(LoggedCompletion), model, project, since).where(LoggedCompletion.id.in_(rated))
    with store.session() as s:
        done = s.scalars(q.order_by(LoggedCompletion.created_at, LoggedCompletion.id)).all()
        out = {c.id: RatedCompletion(c.id, c.project, c.model, dict(c.request or {}), list(c.answers or []),
                                     c.created_at) for c in done}
        for chunk in _chunks(list(out), 500):  # bounded IN lists
            for f in s.scalars(select(Feedback).where(Feedback.completion_id.in_(chunk)).order_by(Feedback.id)):
                out[f.completion_id].feedback.append(_view(f))
    return list(out.values())


def count_completions(store: Store, model: str | None = None, project: str | None = None,
                      since: dt.datetime | None = None) -> int:
    """How many completions are logged with these filters (with or without feedback)."""
    q = _filtered(select(func.count()).select_from(LoggedCompletion), model, project, since)
    with store.session() as s:
        return int(s.scalar(q) or 0)


def _filtered(q, model: str | None, project: str | None, since: dt.datetime | None):
    if model is not None:
        q = q.where(LoggedCompletion.model == model)
    if project is not None:
        q = q.where(LoggedCompletion.project == project)
    if since is not None:
        q = q.where(LoggedCompletion.created_at >= since)
    return q


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _view(f: Feedback) -> FeedbackView:
    return FeedbackView(f.id, f.completion_id, f.rating, f.correction, f.choice_index, f.created_at)
