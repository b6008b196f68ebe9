"""Seed examples for self-instruct, read with the data readers (any of our formats), and what they have in common.

A seed is one single-turn row: an optional system message, a user turn, an assistant answer. From the seeds:
- `task`: the leading lines every prompt shares (alpaca's fixed `instruction` with a varying `input`, such as
  "Determine the sentiment ... Output 1 if positive, 0 if negative."). With a task, new rows are new inputs for it;
  without one, the seeds are open tasks and new rows are new instructions.
- `answer_format`: labels (classification: every answer is one of a few short labels), JSON, or free text.
- `system`: the system message every seed shares, which new rows carry too.
- `one_line`: every input is one line, so a generated input is one line as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.data.catalog import dataset_spec, load_dataset
from tuneforge.data.records import Record
from tuneforge.synth.filters import AnswerFormat, answer_format
from tuneforge.utils.errors import DataError


@dataclass(frozen=True)
class Seed:
    id: str  # the row's `id` column, else its "file:line"
    prompt: str  # the user turn
    part: str  # what varies between rows: the prompt without the task's lines (all of it for open tasks)
    answer: str


@dataclass(frozen=True)
class SeedSet:
    seeds: list[Seed]
    task: str | None
    system: str | None
    answer_format: AnswerFormat
    one_line: bool
    skipped: int  # rows that are not single-turn

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.answer_format.labels

    def with_label(self, label: str) -> list[Seed]:
        return [s for s in self.seeds if s.answer.strip() == label]


def _single_turn(rec: Record) -> tuple[str | None, str, str] | None:
    """(system, user, answer) of a single-turn chat record, else None."""
    msgs = rec.messages
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else None
    rest = msgs[1:] if system is not None else msgs
    if rec.chosen is not None or [m["role"] for m in rest] != ["user", "assistant"]:
        return None
    return system, rest[0]["content"], rest[1]["content"]


def common_task(prompts: list[str]) -> str | None:
    """The leading lines every prompt starts with, when each prompt has more after them; else None."""
    if len(prompts) < 2:
        return None
    split = [p.split("\n") for p in prompts]
    n = 0
    while all(len(lines) > n + 1 for lines in split) and len({lines[n] for lines in split}) == 1:
        n += 1
    task = "\n".join(split[0][:n])
    return task if task.strip() else None


def _seed_id(rec: Record) -> str:
    given = rec.extra.get("id")
    return str(given) if isinstance(given, (str, int)) and not isinstance(given, bool) else rec.source


def _check_labels(rows: list[tuple[Record, str]], labels: tuple[str, ...]) -> None:
    for rec, answer in rows:
        if answer.strip() not in labels:
            file, line = rec.location()
            raise DataError(f"the seed answer {answer.strip()!r} is not one of the labels {', '.join(labels)}",
                            file=file, line=line, hint="fix the row, or give every label with --labels")


def load_seeds(path: str, *, fmt: str = "auto", labels: tuple[str, ...] | None = None) -> SeedSet:
    """The seed rows of `path` (a file or folder in any format the readers take). `labels` overrides detection."""
    records = load_dataset(dataset_spec(path=path, format=fmt)).records
    turns = [(rec, t) for rec in records if (t := _single_turn(rec)) is not None]
    if not turns:
        raise DataError(f"no single-turn rows in {path}: self-instruct seeds are a user turn and an answer each",
                        file=path, hint="alpaca rows (instruction, input, output) or one-exchange chat rows")
    prompts = [t[1] for _, t in turns]
    task = common_task(prompts)
    cut = len(task) + 1 if task else 0
    seeds = [Seed(_seed_id(rec), user, user[cut:].strip(), answer) for rec, (_, user, answer) in turns]
    if labels:
        _check_labels([(rec, t[2]) for rec, t in turns], labels)
    systems = {t[0] for _, t in turns}
    return SeedSet(seeds=seeds, task=task, system=systems.pop() if len(systems) == 1 else None,
                   answer_format=answer_format([s.answer for s in seeds], labels),
                   one_line=all("\n" not in s.part for s in seeds), skipped=len(records) - len(turns))
