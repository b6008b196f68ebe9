"""The `judge` reward (RLAIF): an AI judge scores each completion with a rubric prompt you can edit.

The judge is a local model (any name tuneforge loads: a folder, a .gguf, a registered short name, a hub id) or any
OpenAI-compatible server (POST {endpoint}/chat/completions). Each completion is put into the rubric, the judge
answers, and the first number of its answer is the score: inside `scale` it is normalised to 0..1, anything else
(no number, a number outside the scale) counts as `judge/unparsed` and scores None — never a silent zero. A request
that still fails after its retries counts as `judge/failed` and scores None too; training goes on.

    stage:
      type: grpo
      rewards:
        - {name: judge, model: smollm2-135m-instruct, batch_size: 8}        # a local model
        - name: judge                                                       # or an OpenAI-compatible server
          endpoint: http://127.0.0.1:8000/v1
          api_model: gpt-4o-mini
          api_key_env: OPENAI_API_KEY   # the environment variable holding the key (sent as a Bearer token)
          rubric_file: rubrics/helpful.txt   # or rubric: "inline text"; default: DEFAULT_RUBRIC below
          scale: [1, 5]                      # default [0, 10]
          cache: runs/judge-cache.jsonl      # default: in memory only

The rubric is a template with the placeholders {prompt}, {completion} (required), {label} (the row's answer, or
"(none)"), {low} and {high} (the scale's ends); write {{ and }} for literal braces. The judge's replies are cached
by a hash of (judge identity, the rendered rubric), so an identical question is never asked twice; with `cache:`
the replies are appended to a JSONL file and reused by later runs. Changing the judge, its generation settings, the
rubric or the scale changes the key. Failed requests are not cached (they are asked again next time).

Options: local model — template (chat template, default the model's own; see `tuneforge.data.templates`), device,
dtype, batch_size (8), max_new_tokens (16); endpoint — api_model (required), api_key_env, timeout (60 s), retries
(3, with doubling backoff; on connection errors, timeouts, HTTP 408/429/5xx), concurrency (4 requests at a time),
probe (true: one request at build time, so a server that is down fails the run before training, not in it).

The callable's `metrics()` returns cumulative counts that the RL stages log beside the rewards: judge/calls
(questions actually asked), judge/cache_hits (completions answered without a new question), judge/unparsed,
judge/failed and judge/unparsed_share (unparsed / completions that got a reply).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path

from tuneforge.stages.rewards import row_labels, completion_text
from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError

DEFAULT_RUBRIC = """You are a strict, fair judge of an AI assistant's answers.

The user wrote:
{prompt}

The assistant answered:
{completion}

Reference answer, if there is one: {label}

Rate the assistant's answer for correctness, helpfulness and clarity, on a scale from {low} (useless or wrong) \
to {high} (excellent). Reply with the score only: a single integer from {low} to {high}, nothing else."""

PLACEHOLDERS = ("prompt", "completion", "label", "low", "high")
NO_LABEL = "(none)"
_RETRYABLE_HTTP = {408, 429, 500, 502, 503, 504}
_BACKOFF_S = 0.5  # the first retry waits this long, each next one twice as long
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)  # a reasoning model's thoughts are not its score
_EXAMPLE = "rewards: [{name: judge, model: smollm2-135m-instruct}] or [{name: judge, endpoint: URL, api_model: NAME}]"


@dataclass(frozen=True)
class JudgeConfig:
    """A checked `judge` reward configuration (see the module docstring for each option)."""

    rubric: str
    model: str | None = None
    endpoint: str | None = None
    api_model: str | None = None
    api_key_env: str | None = None
    scale: tuple[float, float] = (0.0, 10.0)
    max_new_tokens: int = 16
    batch_size: int = 8
    template: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    cache: str | None = None
    timeout: float = 60.0
    retries: int = 3
    concurrency: int = 4
    probe: bool = True


# --- configuration ---------------------------------------------------------------------------------------------


def _option_names() -> list[str]:
    return [f.name for f in fields(JudgeConfig)] + ["rubric_file"]


def _reject_unknown_options(args: dict) -> None:
    import difflib

    known = _option_names()
    for key in args:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            guess = f" — did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"reward judge: unknown argument '{key}'{guess}",
                              hint=f"its arguments: {', '.join(known)}, plus weight")


def _check_backend(args: dict) -> None:
    has_model, has_endpoint = bool(args.get("model")), bool(args.get("endpoint"))
    if has_model == has_endpoint:
        raise ConfigError("reward judge needs exactly one of `model:` (a local model) and `endpoint:` (an "
                          "OpenAI-compatible server), " + ("got both" if has_model else "got neither"), hint=_EXAMPLE)
    if has_endpoint:
        _check_endpoint(args)
    else:
        _check_local_model(args)


def _check_endpoint(args: dict) -> None:
    endpoint = str(args["endpoint"])
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"reward judge: endpoint {endpoint!r} is not an http(s) URL",
                          hint="endpoint: http://127.0.0.1:8000/v1 (the part before /chat/completions)")
    if not args.get("api_model"):
        raise ConfigError("reward judge: an endpoint needs `api_model:` (the model name the server expects)",
                          hint="rewards: [{name: judge, endpoint: http://127.0.0.1:8000/v1, api_model: gpt-4o-mini}]")
    key_env = args.get("api_key_env")
    if key_env and not os.environ.get(str(key_env)):
        raise ConfigError(f"reward judge: the environment variable {key_env} (api_key_env) is not set",
                          hint=f"export {key_env}=... before the run, or drop api_key_env for a server without keys")
    local_only = [k for k in ("template", "device", "dtype", "batch_size") if k in args]
    if local_only:
        raise ConfigError(f"reward judge: {', '.join(local_only)} only apply to a local `model:`, not an endpoint")


def _check_local_model(args: dict) -> None:
    from tuneforge.data.templates import list_templates
    from tuneforge.models.source import resolve_model

    resolve_model(str(args["model"]))  # a missing folder fails here, before anything loads
    endpoint_only = [k for k in ("api_model", "api_key_env", "timeout", "retries", "concurrency", "probe")
                     if k in args]
    if endpoint_only:
        raise ConfigError(f"reward judge: {', '.join(endpoint_only)} only apply to an `endpoint:`, not a local model")
    template = str(args.get("template", "auto"))
    if template != "auto" and not template.endswith(".jinja") and template not in list_templates():
        raise ConfigError(f"reward judge: unknown chat template '{template}'",
                          hint=f"auto (the model's own), a .jinja file, or one of {', '.join(list_templates())}")
    if template.endswith(".jinja") and not Path(template).expanduser().is_file():
        raise ConfigError(f"reward judge: chat template file {template} does not exist")


def _rubric_text(args: dict) -> str:
    if "rubric" in args and "rubric_file" in args:
        raise ConfigError("reward judge: give `rubric:` (the text) or `rubric_file:` (a path), not both")
    if "rubric_file" in args:
        path = Path(str(args["rubric_file"])).expanduser()
        if not path.is_file():
            raise ConfigError(f"reward judge: rubric_file {path} does not exist",
                              hint="give the path of a text file with {prompt} and {completion} in it, or drop "
                                   "rubric_file to use the default rubric")
        return path.read_text(encoding="utf-8")
    return str(args.get("rubric", DEFAULT_RUBRIC))


def _check_rubric(rubric: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(rubric) if name is not None]
    except ValueError as err:
        raise ConfigError(f"reward judge: the rubric is not a valid template ({err})",
                          hint="write {{ and }} for literal braces") from None
    for name in names:
        if name not in PLACEHOLDERS:
            raise ConfigError(f"reward judge: the rubric has an unknown placeholder {{{name}}}",
                              hint=f"placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write {{{{ and "
                                   "}} for literal braces")
    if "completion" not in names:
        raise ConfigError("reward judge: the rubric has no {completion} placeholder, so the judge would never see "
                          "the completion", hint="put {completion} (and usually {prompt}) into the rubric")
    try:
        rubric.format(**{p: "x" for p in PLACEHOLDERS})
    except (ValueError, KeyError, IndexError) as err:
        raise ConfigError(f"reward judge: the rubric is not a valid template ({err})",
                          hint="write {{ and }} for literal braces") from None


def _scale(args: dict) -> tuple[float, float]:
    value = args.get("scale", [0, 10])
    ends = list(value) if isinstance(value, (list, tuple)) else []
    numeric = len(ends) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ends)
    if not numeric or not ends[0] < ends[1]:
        raise ConfigError(f"reward judge: scale must be [low, high] with low < high, got {value!r}",
                          hint="scale: [0, 10]")
    return float(ends[0]), float(ends[1])


def _whole_number(args: dict, key: str, default: int, least: int) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"reward judge: {key} must be a whole number >= {least}, got {value!r}")
    return value


def _positive_number(args: dict, key: str, default: float) -> float:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"reward judge: {key} must be a number > 0, got {value!r}")
    return float(value)


def check_judge(args: dict) -> JudgeConfig:
    """The checked configuration of a `judge` reward. Loads no model and makes no network call."""
    _reject_unknown_options(args)
    _check_backend(args)
    rubric = _rubric_text(args)
    _check_rubric(rubric)
    given = {k: v for k, v in args.items() if k in ("model", "endpoint", "api_model", "api_key_env", "template",
                                                    "device", "dtype", "cache")}
    return JudgeConfig(
        rubric=rubric, scale=_scale(args), **{k: str(v) for k, v in given.items()},
        max_new_tokens=_whole_number(args, "max_new_tokens", 16, 1),
        batch_size=_whole_number(args, "batch_size", 8, 1),
        retries=_whole_number(args, "retries", 3, 0),
        concurrency=_whole_number(args, "concurrency", 4, 1),
        timeout=_positive_number(args, "timeout", 60.0),
        probe=bool(args.get("probe", True)))


# --- rendering and parsing -------------------------------------------------------------------------------------


def prompt_text(prompt) -> str:
    """The prompt as the judge reads it: a string as is, one message's content, or several as `role: content` lines."""
    if isinstance(prompt, str):
        return prompt
    messages = [m for m in prompt if isinstance(m, dict)]
    if len(messages) == 1:
        return str(messages[0].get("content") or "")
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages)


def render_rubric(rubric: str, scale: tuple[float, float], prompt, completion, label) -> str:
    """The question put to the judge for one completion."""
    low, high = (f"{v:g}" for v in scale)
    return rubric.format(prompt=prompt_text(prompt), completion=completion_text(completion),
                         label=NO_LABEL if label is None else str(label), low=low, high=high)


def parse_score(reply: str, scale: tuple[float, float]) -> float | None:
    """The reply's first number normalised to 0..1 when it lies inside `scale`, else None (unparsed).

    Only the first number counts: skipping to a later one would turn an out-of-scale answer such as "11/10" into a
    score the judge never gave."""
    found = _NUMBER.search(_THINKING.sub("", reply))
    if found is None:
        return None
    value, (low, high) = float(found.group()), scale
    return (value - low) / (high - low) if low <= value <= high else None


def cache_key(identity: str, question: str) -> str:
    return hashlib.sha256(json.dumps([identity, question]).encode("utf-8")).hexdigest()


# --- the reply cache -------------------------------------------------------------------------------------------


class ReplyCache:
    """Judge replies by cache key: in memory, and appended to a JSONL file ({"key", "reply"} per line) when given."""

    def __init__(self, path: str | None = None):
        self.path = Path(path).expanduser() if path else None
        self.replies: dict[str, str] = self._read() if self.path else {}

    def _read(self) -> dict[str, str]:
        if not self.path.is_file():
            return {}
        replies = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                replies[str(entry["key"])] = str(entry["reply"])
            except (ValueError, KeyError, TypeError):  # a line cut short by a crash: that reply is asked again
                continue
        return replies

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def add(self, replies: dict[str, str]) -> None:
        self.replies.update(replies)
        if self.path is None or not replies:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"key": k, "reply": r}, ensure_ascii=False) + "\n" for k, r in replies.items())
        with self.path.open("a", encoding="utf-8") as f:  # one write per batch: concurrent writers do not interleave
            f.write(lines)


# --- judges: an OpenAI-compatible endpoint, a local model ------------------------------------------------------


class JudgeRequestError(Exception):
    """A request to the judge endpoint failed (after its retries); `status` is the HTTP code, if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class EndpointJudge:
    """Asks an OpenAI-compatible server: greedy (temperature 0), several requests at a time, retried with backoff."""

    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        self.url = cfg.endpoint.rstrip("/") + "/chat/completions"
        self.identity = f"endpoint:{cfg.endpoint.rstrip('/')}|model:{cfg.api_model}|max_tokens:{cfg.max_new_tokens}"
        self.last_error: str | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.cfg.api_key_env, '')}"
        return headers

    def _post(self, question: str, max_tokens: int) -> str:
        body = {"model": self.cfg.api_model, "messages": [{"role": "user", "content": question}],
                "temperature": 0, "max_tokens": max_tokens}
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=self._headers(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=self.cfg.timeout) as response:
            raw = response.read()
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeRequestError(f"not a chat completion response: {raw[:200]!r}") from None

    def _post_with_retries(self, question: str, max_tokens: int) -> str:
        for attempt in range(self.cfg.retries + 1):
            try:
                return self._post(question, max_tokens)
            except urllib.error.HTTPError as err:
                detail = " ".join(err.read()[:300].decode("utf-8", "replace").split())
                err.close()
                if err.code not in _RETRYABLE_HTTP or attempt == self.cfg.retries:
                    raise JudgeRequestError(f"HTTP {err.code} {err.reason}: {detail}", err.code) from None
            except OSError as err:  # refused, reset, DNS, timeout
                if attempt == self.cfg.retries:
                    raise JudgeRequestError(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None
            time.sleep(_BACKOFF_S * 2 ** attempt)
        raise AssertionError("unreachable")

    def probe(self) -> None:
        """One small request, so that a server that is down or refuses us fails the run before training."""
        try:
            self._post_with_retries("Reply with the number 0.", 1)
        except JudgeRequestError as err:
            if err.status is None:
                raise ConfigError(f"the judge endpoint {self.cfg.endpoint} did not answer: {err}",
                                  hint="start the server or fix endpoint:") from None
            raise ConfigError(f"the judge endpoint {self.cfg.endpoint} refused a test request: {err}",
                              hint="check api_model: and api_key_env:, and that the server serves "
                                   "/chat/completions under endpoint:") from None

    def _ask_one(self, question: str) -> str | None:
        try:
            return self._post_with_retries(question, self.cfg.max_new_tokens)
        except JudgeRequestError as err:
            self.last_error = str(err)
            return None

    def ask(self, questions: list[str]) -> list[str | None]:
        """The reply to each question, None where the request failed after its retries."""
        if len(questions) <= 1 or self.cfg.concurrency == 1:
            return [self._ask_one(q) for q in questions]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(questions))) as pool:
            return list(pool.map(self._ask_one, questions))


class LocalJudge:
    """A local causal LM asked through its chat template: greedy, batched, left-padded, in eval mode."""

    def __init__(self, cfg: JudgeConfig):
        from tuneforge.data.templates import template_stop_strings, template_stop_token_ids
        from tuneforge.models.load import load_model, load_tokenizer
        from tuneforge.models.source import resolve_model

        self.cfg = cfg
        source = resolve_model(cfg.model)
        self.tokenizer = self._tokenizer(source, load_tokenizer)
        self.model = load_model(source, dtype=cfg.dtype, device=cfg.device).eval()
        self.stop_ids = template_stop_token_ids(self.tokenizer)
        self.stop_texts = template_stop_strings(self.tokenizer)
        template_hash = hashlib.sha256(self.tokenizer.chat_template.encode("utf-8")).hexdigest()[:16]
        self.identity = f"model:{source.identity}|template:{template_hash}|max_new_tokens:{cfg.max_new_tokens}"
        self.last_error: str | None = None

    def _tokenizer(self, source, load_tokenizer):
        from tuneforge.data.templates import list_templates

        try:
            return load_tokenizer(source, template=self.cfg.template)
        except ConfigError:
            if self.cfg.template != "auto":
                raise
            raise ConfigError(f"reward judge: the model {self.cfg.model} has no chat template to ask it with",
                              hint=f"add `template: NAME` to the judge reward: {', '.join(list_templates())}") from None

    def _prompt_ids(self, question: str) -> list[int]:
        from tuneforge.data.templates import encode_prompt

        return encode_prompt(self.tokenizer, [{"role": "user", "content": question}])

    def _reply(self, new_ids: list[int]) -> str:
        cut = next((i for i, t in enumerate(new_ids) if t in self.stop_ids), len(new_ids))
        text = self.tokenizer.decode(new_ids[:cut], skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in self.stop_texts) if i >= 0]
        return text[:min(hits)] if hits else text

    def _generate(self, questions: list[str]) -> list[str]:
        import torch

        prompts = [self._prompt_ids(q) for q in questions]
        width, pad = max(map(len, prompts)), self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=self.cfg.max_new_tokens,
                                      do_sample=False, pad_token_id=pad, eos_token_id=self.stop_ids or None,
                                      use_cache=True)
        return [self._reply(row[width:].tolist()) for row in out]

    def ask(self, questions: list[str]) -> list[str | None]:
        step = self.cfg.batch_size
        return [reply for i in range(0, len(questions), step) for reply in self._generate(questions[i:i + step])]


# --- the reward callable ---------------------------------------------------------------------------------------


class Judge:
    """The `judge` reward: f(prompts, completions, completion_ids=None, **columns) → [score in 0..1 | None]."""

    def __init__(self, cfg: JudgeConfig, backend, cache: ReplyCache):
        self.__name__ = "judge"
        self.cfg, self.backend, self.cache = cfg, backend, cache
        self.counts = {"calls": 0, "cache_hits": 0, "unparsed": 0, "failed": 0, "replied": 0}
        self._warned: set[str] = set()

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        labels = row_labels(columns, len(completions))
        questions = [render_rubric(self.cfg.rubric, self.cfg.scale, p, c, lab)
                     for p, c, lab in zip(prompts, completions, labels)]
        keys = [cache_key(self.backend.identity, q) for q in questions]
        replies = self._replies(keys, questions)
        return [self._score(replies.get(k)) for k in keys]

    def _replies(self, keys: list[str], questions: list[str]) -> dict[str, str]:
        """The reply for each key: from the cache, else asked (each distinct question once); failures are absent."""
        known = {k: r for k in keys if (r := self.cache.get(k)) is not None}
        to_ask = {k: q for k, q in zip(keys, questions) if k not in known}
        self.counts["calls"] += len(to_ask)
        self.counts["cache_hits"] += len(keys) - len(to_ask)
        asked = dict(zip(to_ask, self.backend.ask(list(to_ask.values()))))
        new = {k: r for k, r in asked.items() if r is not None}
        self.cache.add(new)
        return {**known, **new}

    def _score(self, reply: str | None) -> float | None:
        if reply is None:
            self.counts["failed"] += 1
            self._warn_once("failed", f"a judge request failed after its retries ({self.backend.last_error}); "
                                      "those completions score None and count in judge/failed")
            return None
        self.counts["replied"] += 1
        score = parse_score(reply, self.cfg.scale)
        if score is None:
            self.counts["unparsed"] += 1
            low, high = (f"{v:g}" for v in self.cfg.scale)
            self._warn_once("unparsed", f"the judge replied {reply[:80]!r}, which holds no score from {low} to "
                                        f"{high}; such replies score None and count in judge/unparsed")
        return score

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            console.print(f"[yellow]reward judge: {message}[/yellow]")

    def metrics(self) -> dict[str, float]:
        """Cumulative counts since the judge was built, for the training log."""
        c = self.counts
        return {"judge/calls": c["calls"], "judge/cache_hits": c["cache_hits"], "judge/unparsed": c["unparsed"],
                "judge/failed": c["failed"], "judge/unparsed_share": c["unparsed"] / max(c["replied"], 1)}


def build_judge(args: dict) -> Judge:
    """The `judge` reward callable: checks `args`, loads the local model or probes the endpoint, opens the cache."""
    cfg = check_judge(args)
    if cfg.endpoint:
        backend = EndpointJudge(cfg)
        if cfg.probe:
            backend.probe()
    else:
        backend = LocalJudge(cfg)
    return Judge(cfg, backend, ReplyCache(cfg.cache))
