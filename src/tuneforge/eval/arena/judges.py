"""Arena judges: given a prompt and two answers (shown as answer 1 and answer 2), say "1", "2" or "tie".

* Rules, for tests and for people who know what they want: `rule:longer` (the longer answer wins; answers within
  5 % of each other's length tie), `rule:shorter`, `rule:contains:TEXT` (the answer that contains TEXT, ignoring
  case, wins; both or neither tie).
* A local model or an OpenAI-compatible endpoint, asked with an editable pairwise rubric. Their calling parts
  (batched greedy generation, retries with backoff, concurrent requests, the JSONL reply cache) are the RLAIF
  judge reward's (`tuneforge.stages.judge`); only the rubric and the reading of the verdict are the arena's.
* A person (`human`, see `human.py`).

Every judge returns None for a verdict it could not get (an unparsable reply, a failed request), which the ratings
leave out and the report counts. Two identical answers are a tie without asking anyone.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from tuneforge.utils.console import console
from tuneforge.utils.errors import ConfigError

VERDICTS = ("1", "2", "tie")
RULES = ("longer", "shorter", "contains:TEXT")
TIE_MARGIN = 0.05  # rule:longer / rule:shorter: lengths within 5 % of the longer one tie
NO_REFERENCE = "(none)"

DEFAULT_RUBRIC = """You are a strict, fair judge comparing two AI assistants' answers to the same request.

The user wrote:
{prompt}

[Answer 1]
{answer_1}
[End of answer 1]

[Answer 2]
{answer_2}
[End of answer 2]

Which answer is better: more correct, more helpful, clearer? The order of the answers and their length must not \
sway you. Reply with exactly one of: 1 (answer 1 is better), 2 (answer 2 is better), tie (equally good or bad)."""

PLACEHOLDERS = ("prompt", "answer_1", "answer_2", "reference")
_VERDICT = re.compile(r"\b(1|2|tie)\b", re.IGNORECASE)
_THINKING = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


@dataclass(frozen=True)
class Question:
    """One comparison: the conversation so far, the answer shown first and the one shown second."""

    messages: tuple[dict, ...]
    first: str
    second: str
    reference: str | None = None


# --- rubric and verdicts ---------------------------------------------------------------------------------------


def read_rubric(path: str | None) -> str:
    """The rubric text: the file's, or DEFAULT_RUBRIC; checked."""
    if path is None:
        return DEFAULT_RUBRIC
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"rubric file {p} does not exist",
                          hint="give a text file with {prompt}, {answer_1} and {answer_2} in it, or drop --rubric")
    text = p.read_text(encoding="utf-8")
    check_rubric(text)
    return text


def check_rubric(rubric: str) -> None:
    """ConfigError when the rubric has an unknown placeholder, misses an answer, or has unbalanced braces."""
    hint = f"placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write {{{{ and }}}} for literal braces"
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(rubric) if name is not None]
    except ValueError as err:
        raise ConfigError(f"the rubric is not a valid template ({err})", hint=hint) from None
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        raise ConfigError(f"the rubric has an unknown placeholder {{{unknown[0]}}}", hint=hint)
    try:
        rubric.format(**{p: "x" for p in PLACEHOLDERS})
    except (ValueError, KeyError, IndexError) as err:
        raise ConfigError(f"the rubric is not a valid template ({err})", hint=hint) from None
    missing = [p for p in ("answer_1", "answer_2") if p not in names]
    if missing:
        raise ConfigError(f"the rubric has no {{{missing[0]}}}, so the judge would never see that answer", hint=hint)


def prompt_text(messages) -> str:
    """The conversation as the judge reads it: one message's content, or several as `role: content` lines."""
    if len(messages) == 1:
        return str(messages[0].get("content") or "")
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages)


def render_question(rubric: str, q: Question) -> str:
    return rubric.format(prompt=prompt_text(q.messages), answer_1=q.first, answer_2=q.second,
                         reference=q.reference if q.reference is not None else NO_REFERENCE)


def parse_verdict(reply: str | None) -> str | None:
    """"1", "2" or "tie": the first of them in the reply (a reasoning model's <think> part skipped), else None."""
    if reply is None:
        return None
    found = _VERDICT.search(_THINKING.sub("", reply))
    return found.group(1).lower() if found else None


# --- rules -----------------------------------------------------------------------------------------------------


class RuleJudge:
    """A deterministic rule; both orders give the same verdict (swapped), so its self-agreement is 1."""

    both_orders = True

    def __init__(self, spec: str):
        self.identity = spec
        name, _, arg = spec.removeprefix("rule:").partition(":")
        if name in ("longer", "shorter") and not arg:
            self._decide = self._longer if name == "longer" else self._shorter
        elif name == "contains" and arg:
            self.needle = arg.lower()
            self._decide = self._contains
        else:
            raise ConfigError(f"unknown judge rule {spec!r}",
                              hint=f"rules: {', '.join('rule:' + r for r in RULES)}")
        self.counts = {"asked": 0, "unparsed": 0, "failed": 0, "skipped": 0, "cached": 0}

    @staticmethod
    def _by_length(a: str, b: str) -> int:
        la, lb = len(a.strip()), len(b.strip())
        if abs(la - lb) <= TIE_MARGIN * max(la, lb):
            return 0
        return 1 if la > lb else -1

    def _longer(self, q: Question) -> int:
        return self._by_length(q.first, q.second)

    def _shorter(self, q: Question) -> int:
        return -self._by_length(q.first, q.second)

    def _contains(self, q: Question) -> int:
        return int(self.needle in q.first.lower()) - int(self.needle in q.second.lower())

    def verdicts(self, questions: list[Question], advance=lambda n=1: None) -> list[str | None]:
        out = [{1: "1", -1: "2", 0: "tie"}[self._decide(q)] for q in questions]
        self.counts["asked"] += len(questions)
        advance(len(questions))
        return out

    def describe(self) -> str:
        return self.identity


# --- a model: local or endpoint --------------------------------------------------------------------------------


class ModelJudge:
    """A local model or an endpoint asked with the rubric; replies cached in `cache_path` (JSONL) by a hash of
    (judge identity, question), so a rerun asks nothing it has asked before."""

    both_orders = True

    def __init__(self, backend, rubric: str, cache_path: str | Path, *, label: str | None = None, chunk: int = 32):
        from tuneforge.stages.judge import ReplyCache

        self.backend, self.rubric, self.chunk = backend, rubric, chunk
        self.label = label or backend.identity
        self.cache = ReplyCache(str(cache_path))
        self.identity = backend.identity
        self.counts = {"asked": 0, "unparsed": 0, "failed": 0, "skipped": 0, "cached": 0}
        self._warned = False

    def verdicts(self, questions: list[Question], advance=lambda n=1: None) -> list[str | None]:
        from tuneforge.stages.judge import cache_key

        texts = [render_question(self.rubric, q) for q in questions]
        keys = [cache_key(self.identity, t) for t in texts]
        uses = Counter(keys)
        known = {k: r for k in uses if (r := self.cache.get(k)) is not None}
        to_ask = {k: t for k, t in zip(keys, texts) if k not in known}
        self.counts["cached"] += sum(uses[k] for k in known)
        advance(sum(uses[k] for k in known))
        pending = list(to_ask.items())
        for start in range(0, len(pending), self.chunk):
            part = pending[start:start + self.chunk]
            replies = self.backend.ask([t for _, t in part])
            new = {k: r for (k, _), r in zip(part, replies) if r is not None}
            self.cache.add(new)  # written per chunk: an interrupted run keeps what it was told
            known.update(new)
            self.counts["asked"] += len(part)
            self.counts["failed"] += len(part) - len(new)
            advance(sum(uses[k] for k, _ in part))
        out = [parse_verdict(known.get(k)) for k in keys]
        self.counts["unparsed"] += sum(v is None and k in known for v, k in zip(out, keys))
        self._warn(out, keys, known)
        return out

    def _warn(self, out: list, keys: list, known: dict) -> None:
        bad = next((known[k] for v, k in zip(out, keys) if v is None and k in known), None)
        if bad is not None and not self._warned:
            self._warned = True
            console.print(f"[yellow]arena judge: a reply held no verdict ({escape(repr(bad[:80]))}); such "
                          "comparisons are left out and counted as unparsed[/yellow]")
        if self.counts["failed"] and getattr(self.backend, "last_error", None):
            console.print(f"[yellow]arena judge: {self.counts['failed']} requests failed after their retries "
                          f"({escape(str(self.backend.last_error))}); run again to retry them[/yellow]")

    def describe(self) -> str:
        return self.label


# --- building a judge from the command line --------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeSpec:
    """What the user asked for: `judge` (rule:..., human, or a local model name) or an endpoint + model name."""

    judge: str | None = None
    endpoint: str | None = None
    api_model: str | None = None
    api_key_env: str | None = None
    rubric: str | None = None  # a rubric file
    template: str = "auto"  # a local judge model's chat template
    max_new_tokens: int = 16
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"

    @property
    def kind(self) -> str:
        if self.endpoint:
            return "endpoint"
        if self.judge == "human":
            return "human"
        return "rule" if (self.judge or "").startswith("rule:") else "model"


def check_judge_spec(spec: JudgeSpec) -> None:
    """Every mistake in the judge options, before any model loads or any answer is generated."""
    if bool(spec.judge) == bool(spec.endpoint):
        raise ConfigError("the arena needs exactly one judge: --judge (rule:longer, human, or a model) or "
                          "--judge-endpoint URL --judge-model NAME" + (", got both" if spec.judge else ""),
                          hint="e.g. --judge rule:longer, --judge smollm2-135m-instruct, or --judge human")
    if spec.kind == "rule":
        RuleJudge(spec.judge)
    if spec.kind == "endpoint":
        if not spec.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"--judge-endpoint {spec.endpoint!r} is not an http(s) URL",
                              hint="e.g. http://127.0.0.1:8000/v1 (the part before /chat/completions)")
        if not spec.api_model:
            raise ConfigError("--judge-endpoint needs --judge-model (the model name the server expects)")
    if spec.kind == "model":
        from tuneforge.models.source import resolve_model

        resolve_model(spec.judge)  # a missing folder fails here
    if spec.kind in ("model", "endpoint"):
        read_rubric(spec.rubric)
    elif spec.rubric:
        raise ConfigError(f"--rubric only applies to a model or endpoint judge, not to {spec.judge}")


def _judge_config(spec: JudgeSpec, rubric: str):
    from tuneforge.stages.judge import JudgeConfig

    if spec.kind == "endpoint":
        return JudgeConfig(rubric=rubric, endpoint=spec.endpoint, api_model=spec.api_model,
                           api_key_env=spec.api_key_env, max_new_tokens=spec.max_new_tokens)
    return JudgeConfig(rubric=rubric, model=spec.judge, template=spec.template, device=spec.device,
                       dtype=spec.dtype, batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens)


def build_judge(spec: JudgeSpec, out: Path, *, seed: int = 0, ask=None):
    """The judge to run: loads a local judge model, probes an endpoint, opens the human verdict file."""
    check_judge_spec(spec)
    if spec.kind == "rule":
        return RuleJudge(spec.judge)
    if spec.kind == "human":
        from tuneforge.eval.arena.human import HumanJudge

        return HumanJudge(out / "human_verdicts.jsonl", seed=seed, ask=ask)
    from tuneforge.stages.judge import EndpointJudge, LocalJudge

    rubric = read_rubric(spec.rubric)
    cfg = _judge_config(spec, rubric)
    if spec.kind == "endpoint":
        backend = EndpointJudge(cfg)
        backend.probe()
        label = f"{spec.api_model} at {spec.endpoint}"
    else:
        backend = LocalJudge(cfg)
        label = spec.judge
    return ModelJudge(backend, rubric, out / "judge_cache.jsonl", label=label)
