"""POST /v1/chat/completions and POST /v1/completions, streamed (SSE) or not.

Each request: find the model id (404 when unknown), check the parameters (400 for what is not supported), load the
model if needed, render and count the prompt with the model's own chat template, then generate while holding that
model's weights (see serve.pool). Everything that can fail for the request's own reasons fails before a stream
starts, as a plain HTTP error; a failure while streaming is sent as an error event, then [DONE]. Asked for, each
choice carries its tokens' log-probabilities, and each streamed chunk those of the tokens that wrote its text.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import anyio
from fastapi import APIRouter, Depends, Request
from jinja2.exceptions import TemplateError

from tuneforge.infer.engine import Generation, Piece, TokenLogprob
from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.catalog import ModelEntry
from tuneforge.serve.decoding import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    Plan,
    chat_messages,
    chat_plan,
    completion_budget,
    completion_plan,
    completion_prompts,
)
from tuneforge.serve.errors import APIError, from_tuneforge, invalid, log, model_not_found
from tuneforge.serve.pool import ModelPool, RequestView
from tuneforge.serve.request_log import log_chat_completion
from tuneforge.serve.schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChoiceDelta,
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    dump_chunk,
    to_json,
)
from tuneforge.serve.sse import DONE, error_event, event, sse_response
from tuneforge.utils.errors import TuneforgeError

router = APIRouter()


@dataclass(frozen=True)
class _Reply:
    """What every answer (and every chunk) of one request carries."""

    id: str
    created: int
    model: str
    fingerprint: str
    include_usage: bool  # streamed: usage is null on every chunk, and a last chunk carries it


def _reply(prefix: str, req, state, plan: Plan) -> _Reply:
    return _Reply(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), req.model, state.fingerprint, plan.include_usage)


def _usage(prompt_tokens: int, gens: list[Generation]) -> CompletionUsage:
    completion = sum(g.completion_tokens for g in gens)
    return CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                           total_tokens=prompt_tokens + completion)


async def _resolve(state, model_id: str, project: str) -> tuple[ModelEntry, RequestView]:
    entry = await anyio.to_thread.run_sync(state.catalog.find, model_id, project)
    if entry is None:
        raise model_not_found(model_id)
    try:
        return entry, await anyio.to_thread.run_sync(state.pool.prepare, entry)
    except TuneforgeError as err:
        raise from_tuneforge(err, entry.id) from None


async def _render(fn: Callable, *args) -> list[int]:
    """Prompt ids; a chat template that cannot render these messages is the request's error."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except TuneforgeError as err:
        raise from_tuneforge(err) from None
    except TemplateError as err:
        raise invalid("messages", f"the model's chat template cannot render these messages: {err}") from None


def _decode_n(plan: Plan, budget: int, one: Callable[[dict], Generation]) -> list[Generation]:
    """The request's n choices, one after another; greedy choices are all equal, so computed once."""
    if plan.greedy:
        return [one(plan.engine_kwargs(0, budget))] * plan.n
    return [one(plan.engine_kwargs(i, budget)) for i in range(plan.n)]


def _relay(pieces: Generator[str | Piece, None, Generation],
           wrap: Callable[[str | Piece], str]) -> Generator[str, None, Generation]:
    """Yield wrap(piece) for each piece of an engine stream; return its Generation. Closing stops the stream."""
    try:
        while True:
            try:
                piece = next(pieces)
            except StopIteration as done:
                return done.value
            yield wrap(piece)
    finally:
        pieces.close()


def _split(piece: str | Piece) -> tuple[str, list[TokenLogprob] | None]:
    """(text, its tokens with log-probabilities, or None when they were not asked for) of a streamed piece."""
    return (piece.text, piece.logprobs) if isinstance(piece, Piece) else (piece, None)


def _error_body(err: Exception) -> dict:
    if isinstance(err, APIError):
        return err.body()
    if isinstance(err, TuneforgeError):
        return from_tuneforge(err).body()
    log.exception("generation failed while streaming")
    return APIError(500, "generation failed; the server log has the details", type="server_error").body()


# --- chat completions -------------------------------------------------------------------------------------------------


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request, caller: Caller = Depends(require_api_key)):
    state = request.app.state.tuneforge
    plan = chat_plan(req, state.settings)
    messages, tools = chat_messages(req)
    entry, view = await _resolve(state, req.model, caller.project)
    if tools and not view.renders_tools():
        raise invalid("tools", "this model's chat template does not show tools to the model, so it would never "
                               "see them; serve it with a named --template (chatml, llama3, ...)")
    prompt = await _render(view.chat_ids, messages, tools)
    budget = completion_budget(plan, state.settings.max_tokens, len(prompt), view.context)
    reply = _reply("chatcmpl", req, state, plan)
    prompt_ids = prompt if req.return_token_ids else None
    if req.stream:
        logged = partial(log_chat_completion, state, caller.project, req, reply.id, model=req.model)
        return sse_response(_chat_events(state.pool, entry, messages, tools, plan, budget, reply, prompt, prompt_ids,
                                         logged))

    def run() -> list[Generation]:
        with state.pool.lease(entry) as engine:
            return _decode_n(plan, budget, lambda kw: engine.generate([messages], tools=[tools], **kw)[0])

    gens = await anyio.to_thread.run_sync(run)
    log_chat_completion(state, caller.project, req, reply.id, [g.text for g in gens], req.model)
    choices = [ChatChoice(index=i, message=ChatCompletionMessage(content=g.text), finish_reason=g.finish_reason,
                          logprobs=None if g.logprobs is None else ChoiceLogprobs.of(g.logprobs))
               for i, g in enumerate(gens)]
    return to_json(ChatCompletion(id=reply.id, created=reply.created, model=reply.model, choices=choices,
                                  usage=_usage(len(prompt), gens), system_fingerprint=reply.fingerprint,
                                  prompt_token_ids=prompt_ids))


def _chat_chunk(reply: _Reply, choices: list[ChunkChoice], **extra) -> str:
    usage = {"usage": None} if reply.include_usage else {}
    return event(dump_chunk(ChatCompletionChunk(id=reply.id, object="chat.completion.chunk", created=reply.created,
                                                model=reply.model, choices=choices,
                                                system_fingerprint=reply.fingerprint, **{**usage, **extra})))


def _content_chunk(reply: _Reply, index: int) -> Callable[[str | Piece], str]:
    def chunk(piece: str | Piece) -> str:
        text, tokens = _split(piece)
        logprobs = {} if tokens is None else {"logprobs": ChoiceLogprobs.of(tokens)}
        return _chat_chunk(reply, [ChunkChoice(index=index, delta=ChoiceDelta(content=text), finish_reason=None,
                                               **logprobs)])
    return chunk


def _chat_events(pool: ModelPool, entry: ModelEntry, messages: list[dict], tools, plan: Plan, budget: int,
                 reply: _Reply, prompt: list[int], prompt_ids: list[int] | None,
                 logged: Callable[[list[str]], None]) -> Iterator[str]:
    """The chunks of a streamed chat completion: per choice a role chunk, content chunks and a finish chunk; then
    the usage chunk (stream_options.include_usage) and [DONE]. `logged(answers)` once the answers are complete."""
    gens = []
    try:
        with pool.lease(entry) as engine:
            for i in range(plan.n):
                first = {"prompt_token_ids": prompt_ids} if prompt_ids is not None and i == 0 else {}
                yield _chat_chunk(reply, [ChunkChoice(index=i, delta=ChoiceDelta(role="assistant", content=""),
                                                      finish_reason=None)], **first)
                pieces = engine.stream(messages, tools=tools, **plan.engine_kwargs(i, budget))
                gens.append((yield from _relay(pieces, _content_chunk(reply, i))))
                yield _chat_chunk(reply, [ChunkChoice(index=i, delta=ChoiceDelta(),
                                                      finish_reason=gens[-1].finish_reason)])
        logged([g.text for g in gens])
        if reply.include_usage:
            yield _chat_chunk(reply, [], usage=_usage(len(prompt), gens))
    except Exception as err:  # noqa: BLE001 - the status line is sent already: report it in the stream
        yield error_event(_error_body(err))
    yield DONE


# --- text completions -------------------------------------------------------------------------------------------------


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request, caller: Caller = Depends(require_api_key)):
    state = request.app.state.tuneforge
    plan = completion_plan(req, state.settings)
    prompts = completion_prompts(req)
    entry, view = await _resolve(state, req.model, caller.project)
    ids = [await _render(view.text_ids, p) for p in prompts]
    budgets = [completion_budget(plan, COMPLETIONS_DEFAULT_MAX_TOKENS, len(p), view.context, param="prompt")
               for p in ids]
    reply = _reply("cmpl", req, state, plan)
    prompt_tokens = sum(len(p) for p in ids)
    shown_ids = ids if req.return_token_ids else None
    if req.stream:
        return sse_response(_completion_events(state.pool, entry, prompts, plan, budgets, reply, prompt_tokens,
                                               shown_ids, req.echo))

    def run() -> list[list[Generation]]:
        with state.pool.lease(entry) as engine:
            return [_decode_n(plan, budget, lambda kw, p=p: engine.complete([p], **kw)[0])
                    for p, budget in zip(prompts, budgets)]

    per_prompt = await anyio.to_thread.run_sync(run)
    choices = [CompletionChoice(index=k * plan.n + j, text=(prompts[k] if req.echo else "") + g.text,
                                finish_reason=g.finish_reason,
                                logprobs=None if g.logprobs is None else CompletionLogprobs.of(g.logprobs),
                                prompt_token_ids=shown_ids[k] if shown_ids is not None else None)
               for k, gens in enumerate(per_prompt) for j, g in enumerate(gens)]
    return to_json(Completion(id=reply.id, created=reply.created, model=reply.model, choices=choices,
                              usage=_usage(prompt_tokens, [g for gens in per_prompt for g in gens]),
                              system_fingerprint=reply.fingerprint))


def _text_chunk(reply: _Reply, choices: list[CompletionChoice], **extra) -> str:
    usage = {"usage": None} if reply.include_usage else {}
    return event(dump_chunk(Completion(id=reply.id, object="text_completion", created=reply.created,
                                       model=reply.model, choices=choices, system_fingerprint=reply.fingerprint,
                                       **{**usage, **extra})))


def _text_piece(reply: _Reply, index: int) -> Callable[[str | Piece], str]:
    def chunk(piece: str | Piece) -> str:
        text, tokens = _split(piece)
        logprobs = None if tokens is None else CompletionLogprobs.of(tokens)
        return _text_chunk(reply, [CompletionChoice(index=index, text=text, finish_reason=None, logprobs=logprobs)])
    return chunk


def _completion_events(pool: ModelPool, entry: ModelEntry, prompts: list[str], plan: Plan, budgets: list[int],
                       reply: _Reply, prompt_tokens: int, prompt_ids: list[list[int]] | None,
                       echo: bool) -> Iterator[str]:
    """The chunks of a streamed text completion: per choice (index prompt * n + j) the echoed prompt or the prompt
    ids when asked, the text pieces and a finish chunk; then the usage chunk and [DONE]."""
    gens = []
    try:
        with pool.lease(entry) as engine:
            for k, (prompt, budget) in enumerate(zip(prompts, budgets)):
                for j in range(plan.n):
                    index = k * plan.n + j
                    if echo or prompt_ids is not None:
                        yield _text_chunk(reply, [CompletionChoice(
                            index=index, text=prompt if echo else "", finish_reason=None, logprobs=None,
                            **({"prompt_token_ids": prompt_ids[k]} if prompt_ids is not None else {}))])
                    pieces = engine.stream_complete(prompt, **plan.engine_kwargs(j, budget))
                    gens.append((yield from _relay(pieces, _text_piece(reply, index))))
                    yield _text_chunk(reply, [CompletionChoice(index=index, text="",
                                                               finish_reason=gens[-1].finish_reason, logprobs=None)])
        if reply.include_usage:
            yield _text_chunk(reply, [], usage=_usage(prompt_tokens, gens))
    except Exception as err:  # noqa: BLE001 - the status line is sent already: report it in the stream
        yield error_event(_error_body(err))
    yield DONE
