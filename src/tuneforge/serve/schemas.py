"""Request and response bodies, field by field as openai-python's types define them (chat.ChatCompletion,
ChatCompletionChunk, ChatCompletionTokenLogprob, Completion with its legacy Logprobs, Model, CompletionUsage).

Requests accept every field the official client may send: unknown ones are ignored (the API grows faster than any
server), and known ones this server cannot honour yet are refused with a 400 by `serve.decoding`, never ignored.
Two extensions, both also in vLLM: `repetition_penalty` and `return_token_ids` (adds the prompt's token ids to
the answer, so a client can check that the server renders prompts exactly as training did).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from tuneforge.infer.engine import TokenLogprob, TopToken

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class ChatMessage(BaseModel):
    """One input message; content is text or a list of content parts (only text parts are supported)."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[dict], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[dict]] = None
    tool_call_id: Optional[str] = None


class SamplingRequest(_Request):
    """Fields shared by chat and text completions."""

    model: str
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[dict[str, float]] = None
    user: Optional[str] = None
    repetition_penalty: Optional[float] = Field(None, gt=0)  # extension (vLLM): > 1 discourages repeats
    return_token_ids: bool = False  # extension (vLLM): answer with the prompt's token ids


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    tools: Optional[list[dict]] = None
    tool_choice: Union[str, dict, None] = None
    response_format: Optional[dict] = None
    modalities: Optional[list[str]] = None


class CompletionRequest(SamplingRequest):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    best_of: Optional[int] = Field(None, ge=1)
    suffix: Optional[str] = None


# --- responses ------------------------------------------------------------------------------------------------------


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


UNLIKELY = -9999.0  # OpenAI's log-probability for "very unlikely" (JSON has no -inf)


def _logprob(value: float) -> float:
    return max(value, UNLIKELY)


class TopLogprob(BaseModel):
    token: str
    bytes: Optional[list[int]] = None
    logprob: float

    @classmethod
    def of(cls, top: TopToken) -> TopLogprob:
        return cls(token=top.token, bytes=top.bytes, logprob=_logprob(top.logprob))


class ChatCompletionTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]

    @classmethod
    def of(cls, token: TokenLogprob) -> ChatCompletionTokenLogprob:
        return cls(token=token.token, bytes=token.bytes, logprob=_logprob(token.logprob),
                   top_logprobs=[TopLogprob.of(t) for t in token.top])


class ChoiceLogprobs(BaseModel):
    """A chat choice's (or chunk's) logprobs: one entry per answer token, `top_logprobs` as many as asked."""

    content: Optional[list[ChatCompletionTokenLogprob]] = None
    refusal: Optional[list[ChatCompletionTokenLogprob]] = None

    @classmethod
    def of(cls, tokens: list[TokenLogprob]) -> ChoiceLogprobs:
        return cls(content=[ChatCompletionTokenLogprob.of(t) for t in tokens], refusal=None)


class CompletionLogprobs(BaseModel):
    """The legacy shape of /v1/completions: parallel lists; `top_logprobs` maps token text → logprob for the n most
    likely tokens plus the chosen one (so up to n + 1 entries, as OpenAI documents); `text_offset` is where each
    token starts in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def of(cls, tokens: list[TokenLogprob]) -> CompletionLogprobs:
        def top(token: TokenLogprob) -> dict[str, float]:
            ranked = {}
            for t in [*token.top, token]:
                ranked.setdefault(t.token, _logprob(t.logprob))
            return ranked

        return cls(tokens=[t.token for t in tokens], token_logprobs=[_logprob(t.logprob) for t in tokens],
                   top_logprobs=[top(t) for t in tokens], text_offset=[t.offset for t in tokens])


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    refusal: Optional[str] = None
    tool_calls: Optional[list[dict]] = None


class ChatChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    finish_reason: FinishReason
    logprobs: Optional[ChoiceLogprobs] = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    system_fingerprint: Optional[str] = None
    service_tier: Optional[str] = None
    prompt_token_ids: Optional[list[int]] = None  # extension, with return_token_ids


class ChoiceDelta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    finish_reason: Optional[FinishReason] = None
    logprobs: Optional[ChoiceLogprobs] = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: Optional[str] = None
    usage: Optional[CompletionUsage] = None
    prompt_token_ids: Optional[list[int]] = None  # extension, on the first chunk with return_token_ids


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Optional[Literal["stop", "length", "content_filter"]] = None
    logprobs: Optional[CompletionLogprobs] = None
    prompt_token_ids: Optional[list[int]] = None  # extension, with return_token_ids


class Completion(BaseModel):
    """A text completion; streamed chunks have this same shape (object "text_completion")."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    system_fingerprint: Optional[str] = None
    usage: Optional[CompletionUsage] = None


class Model(BaseModel):
    """openai's Model plus vLLM's `root` (the artifact served) and `parent` (the base it applies to)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneforge"
    root: str
    parent: Optional[str] = None
    max_model_len: Optional[int] = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def dump_chunk(chunk: BaseModel) -> str:
    """A streamed chunk as JSON: fields never set are left out (an unset delta.role or usage is absent, as in
    OpenAI's stream), fields set to None are kept (finish_reason: null), `object` is always there."""
    return json.dumps({"object": chunk.object, **chunk.model_dump(mode="json", exclude_unset=True)},
                      ensure_ascii=False)


EXTENSION_FIELDS = ("prompt_token_ids",)  # ours (and vLLM's): left out of an answer unless asked for


def to_json(answer: BaseModel) -> dict:
    """A whole (unstreamed) answer as JSON: every openai field, null where unset, without unasked extensions."""
    return _drop_extensions(answer.model_dump(mode="json"))


def _drop_extensions(value):
    if isinstance(value, dict):
        return {k: _drop_extensions(v) for k, v in value.items() if not (k in EXTENSION_FIELDS and v is None)}
    if isinstance(value, list):
        return [_drop_extensions(v) for v in value]
    return value
