"""From an OpenAI request to what the engine runs: messages for the chat template, decoding settings, one seed
per choice, the completion budget. Parameters this server cannot honour yet are refused with a 400 naming them,
never silently ignored.

Defaults follow OpenAI: temperature 1, top_p 1, no stop; a chat completion may run to the server's --max-tokens
(and the model's context), a text completion to 16 tokens. Choice i of a request with `seed` samples with seed + i,
one choice after another, so a streamed request gives the same choices as the same request unstreamed (batching
the choices is a later optimisation). With temperature 0 the choices are greedy and all equal.

Log-probabilities (chat `logprobs` + `top_logprobs` 0..20, text completions `logprobs` 0..5) are those of the
model's raw next-token logits, before temperature, top_p and repetition_penalty, as OpenAI and vLLM report them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.serve.errors import APIError, invalid, unsupported
from tuneforge.serve.schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest
from tuneforge.serve.settings import ServeSettings

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
_ROLES = {"developer": "system", "function": "tool"}


@dataclass(frozen=True)
class Plan:
    """How to decode the choices of one request."""

    n: int
    temperature: float
    top_p: float
    repetition_penalty: float
    seed: int | None
    stop: tuple[str, ...]
    requested_tokens: int | None  # max_tokens / max_completion_tokens as asked; None: the default
    include_usage: bool  # stream_options.include_usage
    logprobs: int | None = None  # None: no log-probabilities; n: each token's and the n most likely at its place

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def engine_kwargs(self, choice: int, max_new_tokens: int) -> dict:
        """Keywords of Engine.generate / complete / stream for choice number `choice`."""
        seed = None if self.seed is None or self.greedy else self.seed + choice
        return {"max_new_tokens": max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty, "seed": seed, "stop": self.stop,
                "logprobs": self.logprobs}


def _plan(req: SamplingRequest, settings: ServeSettings, requested_tokens: int | None,
          logprobs: int | None) -> Plan:
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(req, name):
            raise unsupported(name, "a non-zero value (the extension `repetition_penalty` > 1 discourages "
                                    "repeats)")
    if req.logit_bias:
        raise unsupported("logit_bias", "biasing tokens")
    if req.n > settings.max_n:
        raise invalid("n", f"n is at most {settings.max_n} on this server (--max-n), got {req.n}")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > 4:
        raise invalid("stop", f"at most 4 stop sequences, got {len(stop)}")
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    if top_p == 0:  # only the most likely token: greedy
        temperature, top_p = 0.0, 1.0
    if requested_tokens is not None and requested_tokens > settings.max_tokens:
        raise invalid("max_tokens", f"at most {settings.max_tokens} completion tokens on this server "
                                    f"(--max-tokens), got {requested_tokens}")
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Plan(req.n, temperature, top_p, req.repetition_penalty or 1.0, req.seed, tuple(s for s in stop if s),
                requested_tokens, include_usage, logprobs)


def chat_plan(req: ChatCompletionRequest, settings: ServeSettings) -> Plan:
    if req.top_logprobs is not None and not req.logprobs:
        raise invalid("top_logprobs", "top_logprobs needs logprobs: true")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise unsupported("response_format", f"type {req.response_format.get('type')!r}")
    if req.modalities and set(req.modalities) != {"text"}:
        raise unsupported("modalities", f"{req.modalities}")
    if isinstance(req.tool_choice, dict) or req.tool_choice == "required":
        raise unsupported("tool_choice", "forcing a tool call (tools are shown to the model as training showed "
                                         "them; its answer comes back as text)")
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return _plan(req, settings, requested, (req.top_logprobs or 0) if req.logprobs else None)


def completion_plan(req: CompletionRequest, settings: ServeSettings) -> Plan:
    if req.logprobs is not None and req.echo:
        raise unsupported("echo", "echo together with logprobs (log probabilities of the prompt's tokens)")
    if req.best_of not in (None, 1):
        raise unsupported("best_of", "a value other than 1")
    if req.suffix:
        raise unsupported("suffix", "inserting between a prompt and a suffix")
    return _plan(req, settings, req.max_tokens, req.logprobs)


def completion_prompts(req: CompletionRequest) -> list[str]:
    """The text prompts of a completion request (one or a list); token-id prompts are refused."""
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if not prompts:
        raise invalid("prompt", "prompt is empty")
    if not all(isinstance(p, str) for p in prompts):
        raise unsupported("prompt", "a prompt given as token ids")
    return list(prompts)


def _text(content, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise unsupported(f"messages[{index}].content", f"a content part of type {part.get('type')!r} "
                                                            f"(only text parts)")
        texts.append(part["text"])
    return "\n".join(texts)


def chat_messages(req: ChatCompletionRequest) -> tuple[list[dict], list[dict] | None]:
    """(messages as the chat template takes them, tool schemas or None). `developer` is a system message and the
    deprecated `function` role a tool result; an assistant turn keeps its tool_calls for the template."""
    messages = []
    for i, m in enumerate(req.messages):
        msg = {"role": _ROLES.get(m.role, m.role), "content": _text(m.content, i)}
        if m.tool_calls:
            msg["tool_calls"] = m.tool_calls
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        messages.append(msg)
    tools = req.tools if req.tools and req.tool_choice != "none" else None
    return messages, tools


def completion_budget(plan: Plan, default: int, prompt_tokens: int, context: int | None,
                      param: str = "messages") -> int:
    """max_new_tokens for one prompt: what was asked (else `default`), within the model's context."""
    wanted = plan.requested_tokens or default
    if context is None:
        return wanted
    room = context - prompt_tokens
    if room < 1 or (plan.requested_tokens is not None and plan.requested_tokens > room):
        asked = plan.requested_tokens or 1
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the {param}, {asked} in the "
                            f"completion). Please reduce the length of the {param} or completion.",
                       param=param, code="context_length_exceeded")
    return min(wanted, room)
