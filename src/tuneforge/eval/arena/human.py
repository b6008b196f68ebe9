"""The human judge: the terminal shows a prompt and two anonymous answers, and a person types 1, 2, t (tie),
s (skip) or q (quit).

Each pair of models is judged once per prompt, in an order drawn at random (so a person cannot learn which side a
model sits on), and the comparisons come in a shuffled sequence. Every answer is appended to
OUT/human_verdicts.jsonl at once: quitting (q, Ctrl-D or Ctrl-C) loses nothing, and running the same command again
asks only what is left. A skipped comparison is remembered as skipped and left out of the ratings.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

from tuneforge.eval.arena.judges import Question, prompt_text
from tuneforge.utils.console import console

KEYS = {"1": "1", "2": "2", "t": "tie", "s": "skip"}
MENU = "[bold]1[/bold] answer 1 is better · [bold]2[/bold] answer 2 · [bold]t[/bold] tie · [bold]s[/bold] skip · " \
       "[bold]q[/bold] quit (progress is saved) > "


class JudgingPaused(Exception):
    """The person quit; `done` comparisons are saved, `left` remain."""

    def __init__(self, done: int, left: int):
        super().__init__(f"{done} judged, {left} left")
        self.done, self.left = done, left


class HumanJudge:
    """Asks a person through `ask(prompt) -> str` (the terminal by default; tests pass a script)."""

    both_orders = False
    interactive = True  # shows its own "comparison n of N"; a live progress bar would fight with the prompt

    def __init__(self, path: str | Path, *, seed: int = 0, ask: Callable[[str], str] | None = None):
        from tuneforge.stages.judge import ReplyCache

        self.cache = ReplyCache(str(path))
        self.seed = seed
        self.ask = ask or (lambda text: console.input(text))
        self.identity = "human"
        self.counts = {"asked": 0, "unparsed": 0, "failed": 0, "skipped": 0, "cached": 0}

    @staticmethod
    def key(q: Question) -> str:
        from tuneforge.stages.judge import cache_key

        return cache_key("human", json.dumps([list(q.messages), q.first, q.second], ensure_ascii=False))

    def verdicts(self, questions: list[Question], advance=lambda n=1: None) -> list[str | None]:
        keys = [self.key(q) for q in questions]
        todo = [i for i, k in enumerate(keys) if self.cache.get(k) is None]
        self.counts["cached"] += len(questions) - len(todo)
        advance(len(questions) - len(todo))
        random.Random(self.seed).shuffle(todo)
        for n, i in enumerate(todo):
            answer = self._ask_one(questions[i], n + 1, len(todo))
            if answer is None:
                raise JudgingPaused(len(questions) - len(todo) + n, len(todo) - n)
            self.cache.add({keys[i]: answer})
            self.counts["asked"] += 1
            advance(1)
        replies = [self.cache.get(k) for k in keys]
        self.counts["skipped"] += sum(r == "skip" for r in replies)
        return [None if r == "skip" else r for r in replies]

    def _ask_one(self, q: Question, n: int, total: int) -> str | None:
        """The person's verdict ("1", "2", "tie", "skip"), or None when they quit."""
        from rich.panel import Panel
        from rich.text import Text  # plain text: an answer's "[...]" is not rich markup

        console.rule(f"comparison {n} of {total}")
        console.print(Panel(Text(prompt_text(q.messages)), title="prompt", title_align="left"))
        if q.reference:
            console.print(Panel(Text(q.reference), title="reference", title_align="left", border_style="dim"))
        console.print(Panel(Text(q.first or "(empty)"), title="answer 1", title_align="left", border_style="cyan"))
        console.print(Panel(Text(q.second or "(empty)"), title="answer 2", title_align="left",
                            border_style="magenta"))
        while True:
            try:
                typed = self.ask(MENU).strip().lower()
            except (EOFError, KeyboardInterrupt):
                return None
            if typed == "q":
                return None
            if typed in KEYS:
                return KEYS[typed]
            console.print("[yellow]type 1, 2, t, s or q[/yellow]")

    def describe(self) -> str:
        return "human (terminal)"
