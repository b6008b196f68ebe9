"""Who meets whom: every pair of models on every prompt, in both orders for an AI or rule judge (position bias
cancels) or in one random order for a person; the verdicts as games; the examples worth reading.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations

from tuneforge.eval.arena.answers import Answer
from tuneforge.eval.arena.judges import Question, prompt_text
from tuneforge.eval.arena.prompts import ArenaPrompt
from tuneforge.eval.arena.ratings import Game, score_of
from tuneforge.utils.progress import progress_bar

MAX_EXAMPLES = 50  # per kind, in arena.json


@dataclass(frozen=True)
class Matchup:
    """Model `first`'s answer shown as answer 1 and model `second`'s as answer 2, on prompt `prompt`."""

    prompt: int
    first: int
    second: int


def plan_matchups(n_prompts: int, n_models: int, *, both_orders: bool, seed: int = 0) -> list[Matchup]:
    rng = random.Random(seed)
    out = []
    for p in range(n_prompts):
        for i, j in combinations(range(n_models), 2):
            if both_orders:
                out += [Matchup(p, i, j), Matchup(p, j, i)]
            else:
                out.append(Matchup(p, i, j) if rng.random() < 0.5 else Matchup(p, j, i))
    return out


def judge_matchups(judge, matchups: list[Matchup], prompts: list[ArenaPrompt], answers: list[list[Answer]], *,
                   progress: bool = True) -> tuple[list[str | None], int]:
    """(verdict per matchup, how many were identical answers): "1" / "2" / "tie" / None (no verdict). Identical
    answers tie without asking the judge."""
    verdicts: list[str | None] = [None] * len(matchups)
    ask, questions = [], []
    for n, m in enumerate(matchups):
        a, b = answers[m.first][m.prompt].text, answers[m.second][m.prompt].text
        if a.strip() == b.strip():
            verdicts[n] = "tie"
            continue
        ask.append(n)
        p = prompts[m.prompt]
        questions.append(Question(p.messages, a, b, p.reference))
    with progress_bar(len(questions), "judging", progress and not getattr(judge, "interactive", False)) as advance:
        for n, v in zip(ask, judge.verdicts(questions, advance)):
            verdicts[n] = v
    return verdicts, len(matchups) - len(ask)


def to_games(matchups: list[Matchup], verdicts: list[str | None]) -> list[Game]:
    return [Game(m.prompt, m.first, m.second, score_of(v)) for m, v in zip(matchups, verdicts) if v is not None]


def _describe(verdict: str | None, first: str) -> str:
    return {"1": f"{first} won", "2": f"{first} lost", "tie": "tie"}.get(verdict, "no verdict")


def flips(matchups: list[Matchup], verdicts: list[str | None], names: list[str], prompts: list[ArenaPrompt],
          answers: list[list[Answer]]) -> list[dict]:
    """Pairs whose verdict changed when the answers swapped places: flips to the other model first, then changes
    between a win and a tie."""
    by_key = {(m.prompt, m.first, m.second): v for m, v in zip(matchups, verdicts)}
    found = []
    for (p, i, j), v in by_key.items():
        swapped = by_key.get((p, j, i))
        if i > j or v is None or swapped is None or v == {"1": "2", "2": "1", "tie": "tie"}[swapped]:
            continue
        strict = v != "tie" and swapped != "tie"
        found.append({"prompt_id": prompts[p].id, "prompt": prompt_text(prompts[p].messages), "a": names[i],
                      "b": names[j], "answer_a": answers[i][p].text, "answer_b": answers[j][p].text,
                      "verdict_a_first": _describe(v, names[i]), "verdict_b_first": _describe(swapped, names[j]),
                      "strict": strict})
    found.sort(key=lambda e: not e["strict"])
    return found[:MAX_EXAMPLES]


def upsets(games: list[Game], ratings: list[float], names: list[str], prompts: list[ArenaPrompt],
           answers: list[list[Answer]]) -> list[dict]:
    """Prompts where the lower-rated model of a pair earned more points than the higher-rated one, largest rating
    gap first."""
    net: dict[tuple[int, int, int], float] = {}
    for g in games:
        lo, hi = sorted((g.first, g.second))
        mine = g.score if g.first == lo else 1.0 - g.score
        net[(g.prompt, lo, hi)] = net.get((g.prompt, lo, hi), 0.0) + mine - 0.5
    found = []
    for (p, i, j), margin in net.items():
        if margin == 0 or (margin > 0) == (ratings[i] > ratings[j]):
            continue
        winner, loser = (i, j) if margin > 0 else (j, i)
        found.append({"prompt_id": prompts[p].id, "prompt": prompt_text(prompts[p].messages),
                      "winner": names[winner], "loser": names[loser], "answer_winner": answers[winner][p].text,
                      "answer_loser": answers[loser][p].text, "gap": ratings[loser] - ratings[winner]})
    found.sort(key=lambda e: -e["gap"])
    return found[:MAX_EXAMPLES]
