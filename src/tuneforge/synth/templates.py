"""Template expansion: rows from prompt templates with {slots} and lists of values (`data synth templates`).

    system: You are a support agent.      # optional, every row (a template may set its own)
    labels: [refund, exchange, other]     # optional: a generated answer must be one of these
    slots:
      product: [phone, laptop, kettle]
      place:                              # a slot whose values fill several fields at once
        - {country: France, capital: Paris}
        - {country: Japan, capital: Tokyo}
    templates:
      - prompt: "My {product} broke after a week. What can I do?"      # answered by the generator model
      - prompt: "What is the capital of {country}?"
        answer: "{capital}"                                            # answered by the template
        slots: {country_note: [...]}                                   # slots of this template only (optional)
      - "Name a {product} brand."                                      # a bare string is a prompt

A template expands over the slots it names, and only those: its rows are the cross product of their values (the
last slot varies fastest), and the spec's rows are its templates' rows in order. `sample=N` takes N of them at
random without repeats (seeded; in expansion order), without building the whole product, so specs of millions of
rows can be sampled. Templates use Python's str.format: write {{ and }} for literal braces.
"""

from __future__ import annotations

import difflib
import random
import string
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.synth.filters import AnswerFormat, answer_problem, clean_answer
from tuneforge.synth.report import SynthReport, Tally
from tuneforge.synth.rows import make_row, origin
from tuneforge.utils.errors import ConfigError, DataError
from tuneforge.utils.progress import progress_bar

SPEC_KEYS = ("system", "labels", "slots", "templates")
TEMPLATE_KEYS = ("prompt", "answer", "system", "slots")


@dataclass(frozen=True)
class Slot:
    name: str
    fields: tuple[str, ...]  # a list of plain values fills the field named like the slot
    values: tuple[dict, ...]  # field → text, one dict per value


@dataclass(frozen=True)
class Template:
    prompt: str
    answer: str | None
    system: str | None
    slots: tuple[Slot, ...]  # the slots the template names, in the spec's order

    @property
    def size(self) -> int:
        n = 1
        for slot in self.slots:
            n *= len(slot.values)
        return n

    def values_at(self, k: int) -> dict[str, str]:
        """The field values of row `k` of the cross product (itertools.product order)."""
        picks = []
        for slot in reversed(self.slots):
            k, i = divmod(k, len(slot.values))
            picks.append(slot.values[i])
        return {f: v for values in reversed(picks) for f, v in values.items()}


@dataclass(frozen=True)
class TemplateSpec:
    path: str
    templates: tuple[Template, ...]
    labels: tuple[str, ...] | None

    @property
    def size(self) -> int:
        return sum(t.size for t in self.templates)


@dataclass(frozen=True)
class Expansion:
    template: int  # position in the spec's list, from 1
    values: dict[str, str]
    prompt: str
    answer: str | None  # None: the generator answers
    system: str | None


# --- reading a spec ---------------------------------------------------------------------------------------------


def _err(path: str, message: str, field: str | None = None, hint: str | None = None) -> DataError:
    return DataError(message, file=path, field=field, hint=hint)


def _check_keys(path: str, given: dict, allowed: tuple, where: str) -> None:
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            raise _err(path, f"unknown key {key!r}", f"{where}{key}",
                       f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}")


def _text(value) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise TypeError
    return value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _slot(path: str, name: str, values) -> Slot:
    where = f"slots.{name}"
    if not isinstance(values, list) or not values:
        raise _err(path, "a slot needs a non-empty list of values", where, f"{name}: [a, b, c]")
    try:
        if all(isinstance(v, dict) for v in values):
            fields = tuple(values[0])
            if not fields or any(tuple(v) != fields for v in values):
                raise _err(path, "every value of a slot of mappings needs the same keys, in the same order", where)
            return Slot(name, fields, tuple({k: _text(v[k]) for k in fields} for v in values))
        return Slot(name, (name,), tuple({name: _text(v)} for v in values))
    except TypeError:
        raise _err(path, "slot values are texts or numbers, or mappings of field → text (all the same kind)",
                   where) from None


def _slots(path: str, raw) -> dict[str, Slot]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err(path, "slots must be a mapping of slot name → list of values", "slots")
    return {str(name): _slot(path, str(name), values) for name, values in raw.items()}


def template_fields(path: str, text: str, where: str) -> list[str]:
    """The field names a template text uses (str.format syntax), in order."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as err:
        raise _err(path, f"not a valid template ({err})", where, "write {{ and }} for literal braces") from None
    if "" in names or any(name.isdigit() for name in names):
        raise _err(path, "a template names its slots: {product}, not {} or {0}", where)
    return names


def _template(path: str, i: int, raw, shared: dict[str, Slot], system: str | None) -> Template:
    where = f"templates[{i}]"
    raw = {"prompt": raw} if isinstance(raw, str) else raw
    if not isinstance(raw, dict) or not isinstance(raw.get("prompt"), str) or not raw["prompt"].strip():
        raise _err(path, "a template is a prompt string, or a mapping with a non-empty `prompt`", where)
    _check_keys(path, raw, TEMPLATE_KEYS, where + ".")
    slots = {**shared, **_slots(path, raw.get("slots"))}
    by_field = {}
    for slot in slots.values():
        for f in slot.fields:
            if f in by_field and by_field[f] != slot.name:
                raise _err(path, f"the field {{{f}}} is filled by two slots: {by_field[f]} and {slot.name}", where)
            by_field[f] = slot.name
    texts = {k: raw.get(k, system if k == "system" else None) for k in ("prompt", "answer", "system")}
    used = set()
    for key, text in texts.items():
        if text is None:
            continue
        if not isinstance(text, str):
            raise _err(path, f"`{key}` must be a string", f"{where}.{key}")
        for name in template_fields(path, text, f"{where}.{key}"):
            if name not in by_field:
                close = difflib.get_close_matches(name, list(by_field), n=1)
                raise _err(path, f"{{{name}}} names no slot", f"{where}.{key}",
                           f"did you mean {{{close[0]}}}?" if close else "add it under slots:")
            used.add(by_field[name])
    return Template(texts["prompt"], texts["answer"], texts["system"],
                    tuple(s for s in slots.values() if s.name in used))


def load_spec(path: str | Path) -> TemplateSpec:
    """Read and check a template spec (YAML); every error names the file and the key."""
    import yaml

    path = str(Path(path).expanduser())
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _err(path, "the template spec does not exist") from None
    except yaml.YAMLError as err:
        raise _err(path, f"not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise _err(path, "a template spec is a mapping with `templates:` (and `slots:`)")
    _check_keys(path, raw, SPEC_KEYS, "")
    templates = raw.get("templates")
    if not isinstance(templates, list) or not templates:
        raise _err(path, "`templates:` must be a non-empty list", "templates")
    labels = raw.get("labels")
    if labels is not None and not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise _err(path, "`labels:` must be a list of strings", "labels")
    system = raw.get("system")
    if system is not None and not isinstance(system, str):
        raise _err(path, "`system:` must be a string", "system")
    shared = _slots(path, raw.get("slots"))
    return TemplateSpec(path, tuple(_template(path, i, t, shared, system) for i, t in enumerate(templates)),
                        tuple(labels) if labels else None)


# --- expanding ----------------------------------------------------------------------------------------------------


def _expansion(spec: TemplateSpec, k: int) -> Expansion:
    for i, t in enumerate(spec.templates):
        if k < t.size:
            values = t.values_at(k)
            fill = (lambda text: text.format(**values) if text is not None else None)  # noqa: E731
            return Expansion(i + 1, values, fill(t.prompt), fill(t.answer), fill(t.system))
        k -= t.size
    raise IndexError(k)


def expand(spec: TemplateSpec, sample: int | None = None, seed: int = 0) -> list[Expansion]:
    """Every row of the spec, or `sample` of them drawn with `seed` (no repeats, in expansion order)."""
    total = spec.size
    if sample is None:
        picks = range(total)
    elif not 1 <= sample <= total:
        raise DataError(f"--sample {sample}: the spec expands to {total} rows", file=spec.path,
                        hint=f"sample 1 to {total} rows, or leave --sample out for all of them")
    else:
        picks = sorted(random.Random(seed).sample(range(total), sample))
    return [_expansion(spec, k) for k in picks]


def _conversation(e: Expansion) -> list[dict]:
    return ([{"role": "system", "content": e.system}] if e.system else []) + [{"role": "user", "content": e.prompt}]


def _answers(todo: list[Expansion], generator, *, max_tokens: int, temperature: float, seed: int,
             batch: int, progress: bool) -> list:
    drafts = []
    with progress_bar(len(todo), "answering", progress) as advance:
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            drafts += generator.generate([_conversation(e) for e in part], max_tokens=max_tokens,
                                         temperature=temperature, seed=seed * 100_003 + start)
            advance(len(part))
    return drafts


def rows_of(spec: TemplateSpec, expansions: list[Expansion], generator, tally: Tally, *, fmt: str = "alpaca",
            max_tokens: int = 256, temperature: float = 0.0, seed: int = 0, batch: int = 16,
            progress: bool = True) -> list[dict]:
    """The rows of `expansions`: template answers as they are, the others asked of `generator`; each answer passes
    the answer filters (empty, cut off, not one of the spec's labels)."""
    todo = [e for e in expansions if e.answer is None]
    if todo and generator is None:
        raise ConfigError(f"template {todo[0].template} of {spec.path} has no `answer:`, so a generator must "
                          "answer its rows", hint="add --model NAME (or --endpoint URL --model-name NAME), or give "
                                                  "the template an answer")
    drafts = iter(_answers(todo, generator, max_tokens=max_tokens, temperature=temperature, seed=seed, batch=batch,
                           progress=progress) if todo else [])
    fmt_check, rows = AnswerFormat(labels=spec.labels), []
    for e in expansions:
        draft = next(drafts) if e.answer is None else None
        answer = e.answer if draft is None else clean_answer(draft.text)
        tally.generated += 1
        why = "request_failed" if draft is not None and draft.finish_reason == "error" else \
            answer_problem(answer, draft is not None and draft.cut, fmt_check)
        if why:
            tally.drop(why, f"{e.prompt} → {answer}", draft.error if draft is not None else None)
            continue
        source = origin("templates", "template" if draft is None else generator.name, template=e.template,
                        slots=e.values)
        rows.append(make_row(fmt, instruction=e.prompt, answer=answer, system=e.system, source=source))
        tally.kept += 1
    return rows


def synthesize(spec_path: str, out: str | Path, generator_args: dict, *, sample: int | None = None, seed: int = 0,
               fmt: str = "alpaca", max_answer_tokens: int = 256, temperature: float = 0.0,
               report_dir: str | Path | None = None, test: str | None = None, progress: bool = True) -> SynthReport:
    """`tuneforge data synth templates`: check the paths and the spec, expand, answer, write rows and report."""
    from tuneforge.synth.generators import build_generator
    from tuneforge.synth.report import write_result
    from tuneforge.synth.rows import check_format, refuse_existing, report_folder

    out, folder = Path(out).expanduser(), report_folder(out, report_dir)
    refuse_existing(out, folder)
    check_format(fmt)
    spec = load_spec(spec_path)
    expansions = expand(spec, sample, seed)
    needs_model = any(e.answer is None for e in expansions)
    generator = build_generator(**generator_args) if needs_model else None
    started, tally = time.monotonic(), Tally()
    rows = rows_of(spec, expansions, generator, tally, fmt=fmt, max_tokens=max_answer_tokens,
                   temperature=temperature, seed=seed, progress=progress)
    settings = {"spec": str(spec_path), "spec_rows": spec.size, "sample": sample, "seed": seed, "format": fmt,
                "max_answer_tokens": max_answer_tokens, "temperature": temperature, "labels": spec.labels}
    return write_result(rows, tally, method="templates", out=out, folder=folder,
                        generator=generator.name if generator else "template", requested=len(expansions),
                        stopped="expanded", seconds=time.monotonic() - started, settings=settings, test=test)
