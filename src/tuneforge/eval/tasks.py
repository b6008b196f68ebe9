"""Benchmark tasks: the built-in table (where each benchmark lives, how it is prompted) and user task files.

A task spec on the command line is a built-in name (``mmlu``, ``arc_easy``, ...) or a path to a file / folder in the
normalized jsonl format or one of the original formats (formats.py). Built-in benchmarks are read from
``$TUNEFORGE_BENCHMARKS`` or ``<shared>/data/benchmarks``.

``--limit N`` evaluates a fixed random sample of N items (seeded, the same for every model, so before/after runs are
paired), kept in file order. Few-shot examples come from the benchmark's dev split: the first k of the same subject
for subject-organised benchmarks (MMLU, CMMLU, C-Eval), else a fixed seeded sample; a benchmark without a dev split
draws them from its test items, never using the item being asked.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.eval.formats import read_items
from tuneforge.eval.items import Item
from tuneforge.utils.errors import DataError
from tuneforge.utils.paths import shared_dir
from tuneforge.utils.text import CJK_RE


@dataclass(frozen=True)
class TaskInfo:
    """How a built-in benchmark is stored and prompted. style: letters | cloze | continuation | generate."""

    folder: str
    style: str
    lang: str = "en"
    original_test: str | None = None
    original_dev: str | None = None
    has_dev: bool = True
    by_subject: bool = False  # few-shot examples from the same subject; per-category breakdown from mapping


BUILTINS: dict[str, TaskInfo] = {
    "mmlu": TaskInfo("mmlu", "letters", "en", "original/test", "original/dev", by_subject=True),
    "cmmlu": TaskInfo("cmmlu", "letters", "zh", "original/test", "original/dev", by_subject=True),
    "ceval": TaskInfo("ceval", "letters", "zh", "original/val", "original/dev", by_subject=True),
    "arc_easy": TaskInfo("arc_easy", "cloze", "en", "original/ARC-Easy-Test.slice.jsonl",
                         "original/ARC-Easy-Dev.jsonl"),
    "arc_challenge": TaskInfo("arc_challenge", "cloze", "en", "original/ARC-Challenge-Test.slice.jsonl",
                              "original/ARC-Challenge-Dev.jsonl"),
    "hellaswag": TaskInfo("hellaswag", "continuation", "en", "original/hellaswag_val_full.slice.txt",
                          has_dev=False),
    "truthfulqa_mc1": TaskInfo("truthfulqa_mc", "cloze", "en", "original/mc_task.slice.json", has_dev=False),
    "gsm8k": TaskInfo("gsm8k", "generate", "en", "original/test.slice.jsonl", has_dev=False),
}
ALIASES = {"truthfulqa_mc": "truthfulqa_mc1", "truthfulqa": "truthfulqa_mc1", "arc-easy": "arc_easy",
           "arc-challenge": "arc_challenge", "c-eval": "ceval"}
STYLES = ("letters", "cloze", "continuation", "generate")


@dataclass
class Task:
    """Items to evaluate, the few-shot pool, and how to prompt them."""

    name: str
    items: list[Item]
    style: str
    lang: str = "en"
    pool: list[Item] = field(default_factory=list)  # few-shot examples (dev split)
    mapping: dict[str, dict] = field(default_factory=dict)  # subject -> {"name", "category"}
    by_subject: bool = False
    path: str = ""
    n_total: int = 0  # items in the file before --limit

    @property
    def is_generative(self) -> bool:
        return self.style == "generate"

    def subject_name(self, subject: str) -> str:
        return self.mapping.get(subject, {}).get("name", subject)

    def category(self, subject: str) -> str | None:
        return self.mapping.get(subject, {}).get("category")


def benchmarks_dir() -> Path | None:
    env = os.environ.get("TUNEFORGE_BENCHMARKS")
    if env:
        return Path(env).expanduser()
    shared = shared_dir()
    return shared / "data" / "benchmarks" if shared else None


def _sample(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    if not limit or limit >= len(items):
        return items
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [it for i, it in enumerate(items) if i in keep]


def _read_mapping(folder: Path) -> dict[str, dict]:
    f = folder / "mapping.llamafactory.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"invalid JSON: {err.msg}", file=str(f), line=err.lineno) from None


def _load_builtin(name: str, info: TaskInfo, *, source: str) -> Task:
    root = benchmarks_dir()
    folder = root / info.folder if root else None
    if folder is None or not folder.is_dir():
        raise DataError(f"benchmark '{name}' not found (looked in {folder or 'no shared folder'})",
                        hint="set TUNEFORGE_BENCHMARKS to the folder holding <benchmark>/test.jsonl, "
                             "or pass a task file path")
    if source == "original":
        if not info.original_test:
            raise DataError(f"benchmark '{name}' has no original-format copy", file=str(folder))
        test = folder / info.original_test
        dev = folder / info.original_dev if info.original_dev else None
    else:
        test, dev = folder / "test.jsonl", (folder / "dev.jsonl" if info.has_dev else None)
    items = read_items(test)
    pool = read_items(dev) if dev is not None and dev.exists() else []
    return Task(name, items, info.style, info.lang, pool, _read_mapping(folder), info.by_subject, str(test))


def _guess_lang(items: list[Item]) -> str:
    sample = "".join(it.question for it in items[:20])
    return "zh" if len(CJK_RE.findall(sample)) > 0.2 * max(len(sample), 1) else "en"


def _load_path(spec: str) -> Task:
    p = Path(spec).expanduser()
    items = read_items(p)
    name = p.parent.name if p.stem in ("test", "val", "validation") else p.stem
    dev = p.with_name("dev.jsonl") if p.is_file() and p.name == "test.jsonl" else None
    pool = read_items(dev) if dev and dev.is_file() else []
    style = "generate" if not items[0].is_mc else "cloze"
    folder = p if p.is_dir() else p.parent
    return Task(name, items, style, _guess_lang(items), pool, _read_mapping(folder), False, str(p))


def load_task(spec: str, *, limit: int | None = None, source: str = "normalized", style: str | None = None,
              seed: int = 0) -> Task:
    """Resolve and read one task (validating every row). Raises DataError naming file:line:field on bad rows."""
    key = ALIASES.get(spec.lower(), spec.lower())
    if key in BUILTINS and not Path(spec).exists():
        task = _load_builtin(key, BUILTINS[key], source=source)
    elif Path(spec).expanduser().exists():
        task = _load_path(spec)
    else:
        raise DataError(f"unknown task '{spec}'",
                        hint=f"use one of {', '.join(BUILTINS)} or a path to a benchmark file")
    if style:
        if style not in STYLES:
            raise DataError(f"unknown prompt style '{style}'", hint=f"use one of {', '.join(STYLES)}")
        if (style == "generate") != task.is_generative:
            raise DataError(f"style '{style}' does not fit task '{task.name}' "
                            f"({'generative' if task.is_generative else 'multiple choice'})")
        task.style = style
    task.n_total = len(task.items)
    task.items = _sample(task.items, limit, seed)
    return task


def load_tasks(specs: list[str], **kw) -> list[Task]:
    """All tasks, read and validated up front (so schema errors appear before any model is loaded)."""
    names: set[str] = set()
    tasks = []
    for spec in specs:
        task = load_task(spec, **kw)
        if task.name in names:
            task.name = f"{task.name}#{len(tasks)}"
        names.add(task.name)
        tasks.append(task)
    return tasks


def fewshot_examples(task: Task, item: Item, k: int, seed: int = 1234) -> list[Item]:
    """k solved examples to show before `item` (never `item` itself)."""
    if k <= 0:
        return []
    pool = task.pool or task.items
    if task.by_subject:
        same = [it for it in pool if it.subject == item.subject and it.id != item.id]
        return same[:k]
    candidates = random.Random(seed).sample(pool, min(len(pool), k + 1))
    return [it for it in candidates if it.id != item.id][:k]
