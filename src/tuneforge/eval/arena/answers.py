"""Each model's answers to the prompts, generated once and cached on disk.

An answer is filed under a key hashed from (the model's identity, the generation settings, the conversation), in
OUT/answers/NAME.jsonl (one JSON object per line, appended as chunks finish, so an interrupted run keeps what it
generated). Every file there is read back whatever its name, so renaming a model reuses its answers, and adding a
model to an arena generates only that model's answers: a model whose answers are all cached is not even loaded.

Local models answer through `tuneforge.infer.engine.Engine` (greedy unless a temperature is set); an endpoint
through its /chat/completions with the judge's HTTP client (retries with backoff, several requests at a time).
"""

from __future__ import annotations

import gc
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.markup import escape

from tuneforge.eval.arena.contestants import Contestant
from tuneforge.eval.arena.prompts import ArenaPrompt
from tuneforge.utils.console import console
from tuneforge.utils.errors import TuneforgeError
from tuneforge.utils.progress import progress_bar

ANSWERS_DIR = "answers"


@dataclass(frozen=True)
class GenerationSettings:
    """Shared by every model of an arena. Only max_new_tokens, temperature, top_p and (when sampling) seed change
    an answer, so only they are part of the cache key."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    dtype: str = "auto"
    device: str = "auto"
    api_key_env: str | None = None
    concurrency: int = 4

    def key_fields(self) -> dict:
        sampled = self.temperature > 0
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p if sampled else 1.0, "seed": self.seed if sampled else None}


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    completion_tokens: int | None


def answer_key(identity: str, settings: GenerationSettings, messages) -> str:
    blob = json.dumps([identity, settings.key_fields(), list(messages)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "model"


class AnswerCache:
    """Every answer under OUT/answers/, by key."""

    def __init__(self, out: Path):
        self.folder = out / ANSWERS_DIR
        self.answers: dict[str, Answer] = {}
        for path in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    e = json.loads(line)
                    self.answers[e["key"]] = Answer(str(e["text"]), str(e["finish_reason"]),
                                                    e.get("completion_tokens"))
                except (ValueError, KeyError, TypeError):  # a line cut short by a crash: generated again
                    continue

    def get(self, key: str) -> Answer | None:
        return self.answers.get(key)

    def add(self, name: str, entries: dict[str, tuple[str, Answer]]) -> None:
        """Append {key: (prompt id, answer)} to NAME.jsonl in one write."""
        if not entries:
            return
        self.answers.update({k: a for k, (_, a) in entries.items()})
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"key": k, "prompt_id": pid, **asdict(a)}, ensure_ascii=False) + "\n"
                        for k, (pid, a) in entries.items())
        with (self.folder / f"{_slug(name)}.jsonl").open("a", encoding="utf-8") as f:
            f.write(lines)


class _EndpointModel:
    """Answers conversations through an OpenAI-compatible /chat/completions (the judge's client, other body)."""

    def __init__(self, c: Contestant, settings: GenerationSettings):
        from tuneforge.stages.judge import EndpointJudge, JudgeConfig

        class Client(EndpointJudge):
            def _post(self, messages, max_tokens):  # the judge sends one user turn; a model gets the conversation
                return _post_chat(self, messages, max_tokens, settings)

        self.client = Client(JudgeConfig(rubric="", endpoint=c.url, api_model=c.api_model,
                                         api_key_env=settings.api_key_env, max_new_tokens=settings.max_new_tokens,
                                         concurrency=settings.concurrency))

    def generate(self, conversations: list[list[dict]]) -> list[Answer]:
        replies = self.client.ask(conversations)
        if any(r is None for r in replies):
            raise TuneforgeError(f"the endpoint {self.client.cfg.endpoint} did not answer: {self.client.last_error}",
                                 hint="answers received so far are cached; run the same command again to go on")
        return [Answer(r, "stop", None) for r in replies]


def _post_chat(client, messages, max_tokens: int, settings: GenerationSettings) -> str:
    import urllib.request

    from tuneforge.stages.judge import JudgeRequestError

    body = {"model": client.cfg.api_model, "messages": list(messages), "max_tokens": max_tokens,
            "temperature": settings.temperature, "top_p": settings.top_p}
    if settings.temperature > 0:
        body["seed"] = settings.seed
    request = urllib.request.Request(client.url, data=json.dumps(body).encode("utf-8"), headers=client._headers(),
                                     method="POST")
    with urllib.request.urlopen(request, timeout=client.cfg.timeout) as response:
        raw = response.read()
    try:
        return json.loads(raw)["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeRequestError(f"not a chat completion response: {raw[:200]!r}") from None


class _LocalModel:
    """Answers through the inference engine, loaded on first use."""

    def __init__(self, c: Contestant, settings: GenerationSettings):
        from tuneforge.infer.engine import Engine

        self.settings = settings
        self.engine = Engine.load(c.model, c.adapter, template=c.template, dtype=settings.dtype,
                                  device=settings.device)

    def generate(self, conversations: list[list[dict]]) -> list[Answer]:
        s = self.settings
        gens = self.engine.generate(conversations, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                    top_p=s.top_p, seed=s.seed if s.temperature > 0 else None,
                                    batch_size=s.batch_size)
        return [Answer(g.text, g.finish_reason, g.completion_tokens) for g in gens]


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def generate_missing(c: Contestant, ident: str, prompts: list[ArenaPrompt], settings: GenerationSettings,
                     cache: AnswerCache, *, progress: bool = True) -> int:
    """Generate and cache the answers of `c` that are not cached yet; how many it generated."""
    keys = [answer_key(ident, settings, p.messages) for p in prompts]
    missing = [i for i, k in enumerate(keys) if cache.get(k) is None]
    if not missing:
        return 0
    console.print(f"[bold]{escape(c.name)}[/bold]: generating {len(missing)} answers "
                  f"({len(prompts) - len(missing)} cached) with {escape(c.label)}")
    model = _EndpointModel(c, settings) if c.is_endpoint else _LocalModel(c, settings)
    chunk = max(settings.batch_size * 4, settings.concurrency * 4)
    with progress_bar(len(missing), f"answers of {c.name}", progress) as advance:
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            answers = model.generate([list(prompts[i].messages) for i in part])
            cache.add(c.name, {keys[i]: (prompts[i].id, a) for i, a in zip(part, answers)})
            advance(len(part))
    del model
    _free_memory()
    return len(missing)


def answers_of(ident: str, prompts: list[ArenaPrompt], settings: GenerationSettings,
               cache: AnswerCache) -> list[Answer]:
    return [cache.get(answer_key(ident, settings, p.messages)) for p in prompts]
