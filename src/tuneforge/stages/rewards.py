"""Reward functions for the RL stages, with the signature TRL users already have:

    f(prompts, completions, completion_ids=None, **columns) -> list[float | None]

`completions` are strings, or (conversational data) lists with one assistant message; every other dataset column
arrives as a keyword list (an SFT dataset's answer arrives as `label`). `None` means "not applicable to this
sample". In the config a reward is a built-in name or `module:function` / `path/to/file.py:function`, with a
weight and its own arguments:

    stage: {type: grpo, rewards: [{name: label_match}, {name: regex, pattern: "^[01]$", weight: 0.5}]}

A relative `file.py` (and an rm run folder, a judge's rubric_file) written in a config file resolves against that
file's folder, like data paths; given on the command line, against the working directory.

Built-ins: label_match (the completion equals the row's label), regex (the completion matches a pattern),
grader (OpenAI's string_check / text_similarity / multi / python graders; see `tuneforge.stages.graders`),
number_match (the last number equals the label's last number, GSM8K style), length (a penalty away from a
target length in characters), rm (a trained reward-model run scores prompt + completion), judge (RLAIF: a local
model or an OpenAI-compatible endpoint scores each completion with an editable rubric; see `tuneforge.stages.judge`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.stages.graders import check_grader, grader
from tuneforge.utils.errors import ConfigError

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class RewardSpec(BaseModel):
    """One reward of an RL stage: `name` plus the function's own keyword arguments."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="label_match, regex, number_match, length, rm, judge, or module:function / "
                                  "file.py:function")
    weight: float = Field(1.0, description="weight of this reward in the sum")

    @property
    def args(self) -> dict:
        return dict(self.model_extra or {})


def completion_text(completion) -> str:
    """The text of one completion: a string, or the content of a conversational completion's messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if isinstance(m, dict))


def row_labels(columns: dict, n: int) -> list:
    """The reference answer of each row (the `label`, `answer` or `solution` column), None where there is none."""
    for key in ("label", "answer", "solution"):
        if key in columns:
            return list(columns[key])
    return [None] * n


def label_match(prompts, completions, completion_ids=None, *, ignore_case: bool = True, **columns):
    """1.0 when the completion (stripped) equals the row's label, else 0.0; None for rows without a label."""
    out = []
    for completion, label in zip(completions, row_labels(columns, len(completions))):
        if label is None:
            out.append(None)
            continue
        got, want = completion_text(completion).strip(), str(label).strip()
        out.append(float(got.lower() == want.lower() if ignore_case else got == want))
    return out


def regex(prompts, completions, completion_ids=None, *, pattern: str, full: bool = False, **columns):
    """1.0 when the completion matches `pattern` (anywhere, or as a whole with full=true), else 0.0."""
    rx = re.compile(pattern, re.DOTALL)
    find = rx.fullmatch if full else rx.search
    return [float(find(completion_text(c).strip()) is not None) for c in completions]


def _last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def number_match(prompts, completions, completion_ids=None, **columns):
    """1.0 when the completion's last number equals the label's last number (GSM8K style), else 0.0."""
    out = []
    for completion, label in zip(completions, row_labels(columns, len(completions))):
        want = _last_number(str(label)) if label is not None else None
        if want is None:
            out.append(None)
            continue
        out.append(float(_last_number(completion_text(completion)) == want))
    return out


def length(prompts, completions, completion_ids=None, *, target: int, **columns):
    """−|len − target| / target in characters: 0 at the target length, more negative away from it."""
    return [-abs(len(completion_text(c)) - target) / max(target, 1) for c in completions]


def rm_reward(model: str, device: str = "auto", cutoff: int = 1024, batch_size: int = 8) -> Callable:
    """A trained reward model (an `rm` run folder) as a reward function: prompt + completion rendered exactly as
    the rm stage rendered its training pairs, scored in batches."""
    import torch

    from tuneforge.data.collate import PadCollator
    from tuneforge.data.records import Record
    from tuneforge.data.render import render_chat, truncate
    from tuneforge.stages.rm import load_reward_model

    rm, tok = load_reward_model(model, device=device)

    collate = PadCollator(tok.pad_token_id if tok.pad_token_id is not None else 0)

    def rendered(prompt, completion) -> dict:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        rec = Record(messages=[*messages, {"role": "assistant", "content": completion_text(completion)}])
        r = render_chat(rec, tok)
        r = truncate(r, cutoff) if len(r.input_ids) > cutoff else r
        return {"input_ids": r.input_ids, "labels": r.labels}

    def score(prompts, completions, completion_ids=None, **columns):
        rows, out = [rendered(p, c) for p, c in zip(prompts, completions)], []
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i:i + batch_size])
            with torch.no_grad():
                out += rm(input_ids=batch["input_ids"].to(rm.device),
                          attention_mask=batch["attention_mask"].to(rm.device)).logits[:, 0].float().tolist()
        return out

    score.__name__ = f"rm:{Path(model).name}"
    return score


BUILTINS: dict[str, Callable] = {"label_match": label_match, "regex": regex, "number_match": number_match,
                                 "length": length, "grader": grader}


def _load_custom(name: str) -> Callable:
    target, _, func = name.rpartition(":")
    if not target or not func:
        raise ConfigError(f"reward '{name}' is neither a built-in nor module:function",
                          hint=f"built-ins: {', '.join([*BUILTINS, 'rm', 'judge'])}; "
                               "or my_rewards:fmt / path/to/file.py:fmt")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            if spec is None or not Path(target).is_file():
                raise FileNotFoundError(target)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except (ImportError, FileNotFoundError) as err:
        raise ConfigError(f"reward '{name}': cannot import {target} ({err})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ConfigError(f"reward '{name}': {target} has no function {func}")
    return fn


def check_reward(spec: RewardSpec) -> None:
    """Fail on a reward that cannot be built, before any model loads (an rm run folder is only checked to exist)."""
    if spec.name == "rm":
        model = spec.args.get("model")
        if not model:
            raise ConfigError("reward rm needs `model:` (an rm run folder)",
                              hint="rewards: [{name: rm, model: runs/my-rm}]")
        if not Path(str(model)).exists():
            raise ConfigError(f"reward rm: no run folder {model}", hint="train one with stage: rm first")
    elif spec.name == "judge":
        from tuneforge.stages.judge import check_judge

        check_judge(spec.args)
    else:
        fn = BUILTINS.get(spec.name) or _load_custom(spec.name)
        _check_args(fn, spec.args, spec.name, strict=spec.name in BUILTINS)
        if spec.name == "grader":
            check_grader(spec.args["grader"], spec.args.get("allow_python", False))


def _check_args(fn: Callable, args: dict, name: str, *, strict: bool) -> None:
    """Required keyword arguments are given; for a built-in, no unknown one (they would vanish into **columns)."""
    import difflib
    import inspect

    params = inspect.signature(fn).parameters.values()
    own = {p.name: p for p in params if p.kind is p.KEYWORD_ONLY}
    unknown = [k for k in args if k not in own] if strict else []
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(own), n=1)
        raise ConfigError(f"reward {name}: unknown argument '{unknown[0]}'"
                          + (f" — did you mean '{close[0]}'?" if close else ""),
                          hint=f"its arguments: {', '.join(own) or 'none'}, plus weight")
    missing = [n for n, p in own.items() if p.default is p.empty and n not in args]
    if missing:
        raise ConfigError(f"reward {name} needs {', '.join(missing)}",
                          hint=f"rewards: [{{name: {name}, {missing[0]}: ...}}]")


def build_reward(spec: RewardSpec) -> Callable:
    """The callable TRL calls for one configured reward (its arguments bound, its name kept for logging)."""
    import functools

    check_reward(spec)
    if spec.name == "rm":
        return rm_reward(**spec.args)
    if spec.name == "judge":
        from tuneforge.stages.judge import build_judge

        return build_judge(spec.args)
    fn = BUILTINS.get(spec.name) or _load_custom(spec.name)
    if not spec.args:
        return fn
    bound = functools.partial(fn, **spec.args)
    bound.__name__ = spec.name
    return bound


def reward_metrics(fns) -> dict[str, float]:
    """What the reward functions want logged beside the rewards (e.g. a judge's unparsable answers): a reward
    callable may carry `metrics()` → {name: number}; the RL stages add these to every training log."""
    out: dict[str, float] = {}
    for fn in fns:
        report = getattr(fn, "metrics", None)
        if callable(report):
            out.update(report())
    return out
