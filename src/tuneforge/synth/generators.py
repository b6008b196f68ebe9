"""The model that writes synthetic rows: a local model through `infer.Engine`, or an OpenAI-compatible endpoint.

Both answer a batch of conversations with `generate(conversations, max_tokens=, temperature=, seed=)` and return
one `Draft` per conversation, in order. `name` is what every row's origin records as its generator.

The endpoint client is the RLAIF judge's (`stages.judge.EndpointJudge`): the same POST {endpoint}/chat/completions,
the key read from an environment variable and sent as a Bearer token, the same retries with doubling backoff on
connection errors, timeouts and HTTP 408/429/5xx. Only the request body differs (whole conversations, sampling
settings, a seed per request) and the reply keeps its finish_reason, which the filters need to spot cut-off text.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass

from tuneforge.stages.judge import EndpointJudge, JudgeConfig, JudgeRequestError
from tuneforge.utils.errors import ConfigError


@dataclass(frozen=True)
class Draft:
    """One generated text. `finish_reason`: "stop", "length" (the token limit cut it) or "error" (the request
    failed after its retries; `error` says why)."""

    text: str
    finish_reason: str
    error: str | None = None

    @property
    def cut(self) -> bool:
        return self.finish_reason == "length"


class LocalGenerator:
    """A local model (alias, folder, .gguf, hub id) answering through its chat template, batched."""

    def __init__(self, model: str, *, template: str = "auto", device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8):
        from tuneforge.data.templates import list_templates
        from tuneforge.infer.engine import Engine

        self.engine = Engine.load(model, template=template, device=device, dtype=dtype)
        if not getattr(self.engine.tokenizer, "chat_template", None):
            raise ConfigError(f"the generator {model} has no chat template to ask it with",
                              hint=f"add --template NAME: {', '.join(list_templates())}")
        self.name, self.batch_size = model, batch_size

    def generate(self, conversations: list[list[dict]], *, max_tokens: int, temperature: float,
                 seed: int | None) -> list[Draft]:
        gens = self.engine.generate(conversations, max_new_tokens=max_tokens, temperature=temperature, seed=seed,
                                    batch_size=self.batch_size)
        return [Draft(g.text, g.finish_reason) for g in gens]


@dataclass(frozen=True)
class _Request:
    messages: list[dict]
    temperature: float
    seed: int | None


class EndpointGenerator(EndpointJudge):
    """An OpenAI-compatible chat completions server; several requests at a time (`concurrency`)."""

    def __init__(self, endpoint: str, model_name: str, *, api_key_env: str | None = None, timeout: float = 120.0,
                 retries: int = 3, concurrency: int = 4):
        check_endpoint(endpoint, model_name, api_key_env)
        super().__init__(JudgeConfig(rubric="", endpoint=endpoint, api_model=model_name, api_key_env=api_key_env,
                                     timeout=timeout, retries=retries, concurrency=concurrency, probe=False))
        self.name = f"{model_name} @ {endpoint.rstrip('/')}"

    def _post(self, request: _Request, max_tokens: int) -> Draft:
        """One chat completion (the judge's `_post_with_retries` retries it); a reply without a choice raises."""
        body = {"model": self.cfg.api_model, "messages": request.messages, "temperature": request.temperature,
                "max_tokens": max_tokens}
        if request.seed is not None:
            body["seed"] = request.seed
        http = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=self._headers(),
                                      method="POST")
        with urllib.request.urlopen(http, timeout=self.cfg.timeout) as response:
            raw = response.read()
        try:
            choice = json.loads(raw)["choices"][0]
            return Draft(choice["message"]["content"] or "", choice.get("finish_reason") or "stop")
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeRequestError(f"not a chat completion response: {raw[:200]!r}") from None

    def _one(self, request: _Request, max_tokens: int) -> Draft:
        try:
            return self._post_with_retries(request, max_tokens)
        except JudgeRequestError as err:
            return Draft("", "error", str(err))

    def generate(self, conversations: list[list[dict]], *, max_tokens: int, temperature: float,
                 seed: int | None) -> list[Draft]:
        """Each conversation gets its own seed (seed + its index): the same seed for every request of a batch would
        make requests that happen to be alike come back alike."""
        from concurrent.futures import ThreadPoolExecutor

        requests = [_Request(c, temperature, None if seed is None else seed + i) for i, c in enumerate(conversations)]
        if len(requests) <= 1 or self.cfg.concurrency == 1:
            return [self._one(r, max_tokens) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self._one(r, max_tokens), requests))


def check_endpoint(endpoint: str, model_name: str | None, api_key_env: str | None) -> None:
    """Fail before anything is generated on a URL that is not http(s), a missing model name or an unset key."""
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint {endpoint!r} is not an http(s) URL",
                          hint="--endpoint http://127.0.0.1:8000/v1 (the part before /chat/completions)")
    if not model_name:
        raise ConfigError("--endpoint needs --model-name (the model name the server expects)",
                          hint="--endpoint https://api.openai.com/v1 --model-name gpt-4o-mini "
                               "--api-key-env OPENAI_API_KEY")
    if api_key_env and not os.environ.get(api_key_env):
        raise ConfigError(f"the environment variable {api_key_env} (--api-key-env) is not set",
                          hint=f"export {api_key_env}=... first, or drop --api-key-env for a server without keys")


def build_generator(*, model: str | None = None, endpoint: str | None = None, model_name: str | None = None,
                    api_key_env: str | None = None, template: str = "auto", device: str = "auto",
                    batch_size: int = 8, concurrency: int = 4):
    """The generator the options name: exactly one of `model` (local) and `endpoint`; None when neither is given."""
    if model and endpoint:
        raise ConfigError("give --model (a local model) or --endpoint (a server), not both",
                          hint="with --endpoint, name the server's model with --model-name")
    if endpoint:
        return EndpointGenerator(endpoint, model_name, api_key_env=api_key_env, concurrency=concurrency)
    if model_name or api_key_env:
        raise ConfigError("--model-name and --api-key-env only apply to --endpoint",
                          hint="a local model is named with --model")
    return LocalGenerator(model, template=template, device=device, batch_size=batch_size) if model else None
