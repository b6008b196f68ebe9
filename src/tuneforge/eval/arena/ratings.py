"""Ratings from pairwise games: Bradley–Terry (maximum likelihood), Elo (online), bootstrap intervals, win rates and
the judge's agreement with itself.

A game is one verdict: on prompt `prompt`, model `first` was shown first and `second` second, and `score` is what
`first` earned (1 win, 0.5 tie, 0 loss); ties count as half a win for each side everywhere below.

Both ratings are on the Elo scale (400 points = 10:1 odds) and centred on 1000, so they can sit in one table:

* Bradley–Terry is fitted by minorization–maximization (Hunter 2004) with a prior of one tied game per pair, which
  keeps a rating finite when a model wins (or loses) every game, and fades as games accumulate.
* Elo plays the games one by one with factor `k` in a seeded shuffled order; since the result depends on that
  order, the reported value is the mean over ELO_ORDERINGS shuffles.

Intervals resample prompts (every game of a prompt goes with it), so a prompt that makes all models look alike and
one that separates them both count as one observation. In each bootstrap round Elo is again a mean over several
shuffles: with a fixed K, one order alone carries a noise of its own (tens of points at K 16) that more prompts
never shrink. Everything is numpy, vectorized over the bootstrap rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASE = 1000.0  # the mean rating
SCALE = 400.0 / np.log(10.0)  # natural-log strength → Elo points
PRIOR_TIES = 1.0  # virtual tied games per pair in the Bradley–Terry fit
CI_LEVEL = 0.95
ELO_ORDERINGS = 100  # random orders averaged for the Elo point estimate
ELO_MAX_SHUFFLES = 16  # orders averaged per bootstrap round, fewer when the arena is large (ELO_WORK)
ELO_WORK = 50_000_000  # Elo updates a bootstrap may spend on averaging orders
ELO_CHUNK_CELLS = 4_000_000  # games played side by side at once (memory)
_MM_TOL = 1e-10
_MM_MAX_ITER = 20_000


@dataclass(frozen=True)
class Game:
    """One verdict: `first` was shown before `second` on prompt `prompt`; `score` is what `first` earned."""

    prompt: int
    first: int
    second: int
    score: float


def _arrays(games: list[Game]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    p = np.array([g.prompt for g in games], dtype=np.int64)
    a = np.array([g.first for g in games], dtype=np.int64)
    b = np.array([g.second for g in games], dtype=np.int64)
    s = np.array([g.score for g in games], dtype=float)
    return p, a, b, s


def points_per_prompt(games: list[Game], n_models: int, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """(points, games) of shape (prompts, models, models): points[p, i, j] is what i earned against j on prompt p
    (in either position), games[p, i, j] how many games i and j played there."""
    points = np.zeros((n_prompts, n_models, n_models))
    played = np.zeros((n_prompts, n_models, n_models))
    if games:
        p, a, b, s = _arrays(games)
        np.add.at(points, (p, a, b), s)
        np.add.at(points, (p, b, a), 1.0 - s)
        np.add.at(played, (p, a, b), 1.0)
        np.add.at(played, (p, b, a), 1.0)
    return points, played


def bradley_terry(points: np.ndarray, prior: float = PRIOR_TIES) -> np.ndarray:
    """Bradley–Terry ratings (Elo scale, mean 1000) from a points matrix (models, models), or a stack of them
    (rounds, models, models). points[i, j]: what i earned against j, ties counted as halves."""
    stacked = points.ndim == 3
    w = (points if stacked else points[None]).astype(float)
    m = w.shape[-1]
    off = 1.0 - np.eye(m)
    w = w + 0.5 * prior * off  # one virtual tie per pair: half a point each
    n = w + np.swapaxes(w, 1, 2)  # games per pair
    wins = w.sum(axis=2)
    log_p = np.zeros(w.shape[:2])
    for _ in range(_MM_MAX_ITER):
        p = np.exp(log_p)
        denom = (n / (p[:, :, None] + p[:, None, :]) * off).sum(axis=2)
        new = np.log(np.maximum(wins, 1e-300)) - np.log(np.maximum(denom, 1e-300))
        new -= new.mean(axis=1, keepdims=True)
        done = np.max(np.abs(new - log_p)) < _MM_TOL
        log_p = new
        if done:
            break
    ratings = BASE + SCALE * log_p
    return ratings if stacked else ratings[0]


def elo(first: np.ndarray, second: np.ndarray, score: np.ndarray, weight: np.ndarray, n_models: int,
        k: float) -> np.ndarray:
    """Online Elo over game sequences of shape (sequences, T), all starting at 1000. `weight` 0 marks padding
    (sequences of different lengths). Returns (sequences, models)."""
    rows, steps = first.shape
    ratings = np.full((rows, n_models), BASE)
    index = np.arange(rows)
    for t in range(steps):
        a, b = first[:, t], second[:, t]
        expected = 1.0 / (1.0 + 10.0 ** ((ratings[index, b] - ratings[index, a]) / 400.0))
        delta = k * weight[:, t] * (score[:, t] - expected)
        ratings[index, a] += delta
        ratings[index, b] -= delta
    return ratings


def _elo_of_orders(pools: list[np.ndarray], shuffles: int, a: np.ndarray, b: np.ndarray, s: np.ndarray,
                   n_models: int, k: float, rng: np.random.Generator) -> np.ndarray:
    """Elo of each pool of game indices (rounds), averaged over `shuffles` random orders of it: (rounds, models).
    Sequences are played in chunks that bound memory to about ELO_CHUNK_CELLS cells."""
    width = max((len(pool) for pool in pools), default=0)
    per_chunk = max(1, ELO_CHUNK_CELLS // max(width * shuffles, 1))
    out = np.full((len(pools), n_models), BASE)
    for start in range(0, len(pools) if width else 0, per_chunk):
        chunk = pools[start:start + per_chunk]
        idx = np.zeros((len(chunk) * shuffles, width), dtype=np.int64)
        weight = np.zeros(idx.shape, dtype=np.float32)
        for r, pool in enumerate(chunk):
            for n in range(shuffles):
                idx[r * shuffles + n, :len(pool)] = rng.permutation(pool)
                weight[r * shuffles + n, :len(pool)] = 1.0
        played = elo(a[idx], b[idx], s[idx], weight, n_models, k)
        out[start:start + len(chunk)] = played.reshape(len(chunk), shuffles, n_models).mean(axis=1)
    return out


def _shuffles_per_round(rounds: int, n_games: int) -> int:
    return int(np.clip(ELO_WORK // max(rounds * n_games, 1), 1, ELO_MAX_SHUFFLES))


def elo_mean(games: list[Game], n_models: int, k: float, orderings: int, rng: np.random.Generator) -> np.ndarray:
    """Elo of all games, averaged over `orderings` random orders (at least one)."""
    if not games:
        return np.full(n_models, BASE)
    _, a, b, s = _arrays(games)
    return _elo_of_orders([np.arange(len(games))], max(orderings, 1), a, b, s, n_models, k, rng)[0]


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - CI_LEVEL) / 2
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)


def bootstrap(games: list[Game], n_models: int, n_prompts: int, *, rounds: int, k: float,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Prompt-resampled bootstrap: each round draws n_prompts prompts with replacement, fits Bradley–Terry to their
    games and plays Elo on them, averaged over several shuffled orders like the point estimate (a single order
    would add the order's noise, which with a fixed K does not shrink with more prompts). Returns the 2.5 / 97.5
    percentiles per model ("bt_low", "bt_high", "elo_low", "elo_high"), the samples and the shuffles per round."""
    points, _ = points_per_prompt(games, n_models, n_prompts)
    draws = rng.integers(0, n_prompts, size=(rounds, n_prompts))
    weights = np.stack([np.bincount(d, minlength=n_prompts) for d in draws]).astype(float)
    bt = bradley_terry(np.einsum("rp,pij->rij", weights, points))
    p, a, b, s = _arrays(games)
    by_prompt = [np.flatnonzero(p == i) for i in range(n_prompts)]
    pools = [np.concatenate([by_prompt[i] for i in d]) for d in draws]
    shuffles = _shuffles_per_round(rounds, len(games))
    el = _elo_of_orders(pools, shuffles, a, b, s, n_models, k, rng)
    bt_low, bt_high = _interval(bt)
    elo_low, elo_high = _interval(el)
    return {"bt_low": bt_low, "bt_high": bt_high, "elo_low": elo_low, "elo_high": elo_high, "bt_samples": bt,
            "elo_samples": el, "elo_shuffles": shuffles}


def win_rates(games: list[Game], n_models: int) -> tuple[list[list[float | None]], np.ndarray, np.ndarray]:
    """(matrix, points, played): matrix[i][j] is the share of points i earned against j (None on the diagonal
    and for pairs that never played); points and played are the (models, models) totals."""
    points, played = points_per_prompt([Game(0, g.first, g.second, g.score) for g in games], n_models, 1)
    points, played = points[0], played[0]
    matrix = [[None if i == j or played[i, j] == 0 else float(points[i, j] / played[i, j]) for j in range(n_models)]
              for i in range(n_models)]
    return matrix, points, played


def self_agreement(verdicts: dict[tuple[int, int, int], str]) -> dict:
    """How often the judge gave the same verdict with the answers swapped.

    `verdicts`: (prompt, first, second) → "1" | "2" | "tie" for every parsed verdict. A pair judged in both orders
    agrees when the same model won both times (or both were ties); it *flipped* when each order named the other
    model (the judge followed the position, not the answer); the rest changed between a win and a tie. Also the
    share of decisive verdicts that chose the answer shown first (0.5 = no position bias)."""
    both = agree = flipped = 0
    decisive = first_chosen = 0
    for (prompt, a, b), v in verdicts.items():
        if v != "tie":
            decisive += 1
            first_chosen += v == "1"
        if a > b or (prompt, b, a) not in verdicts:
            continue
        both += 1
        w = _winner(v, a, b)
        w_swapped = _winner(verdicts[(prompt, b, a)], b, a)
        agree += w == w_swapped
        flipped += w is not None and w_swapped is not None and w != w_swapped
    return {"pairs_both_orders": both, "agreement": agree / both if both else None, "agreed": agree,
            "flipped": flipped, "half_flipped": both - agree - flipped,
            "first_position_share": first_chosen / decisive if decisive else None, "decisive": decisive}


def _winner(verdict: str, first: int, second: int) -> int | None:
    return first if verdict == "1" else second if verdict == "2" else None


def score_of(verdict: str) -> float:
    """What the answer shown first earned: 1, 0 or 0.5."""
    return {"1": 1.0, "2": 0.0, "tie": 0.5}[verdict]


def compute_ratings(games: list[Game], n_models: int, n_prompts: int, *, rounds: int = 1000, k: float = 16.0,
                    seed: int = 0) -> dict:
    """Bradley–Terry and Elo ratings with bootstrap intervals (None without rounds), per model, in input order,
    plus the win-rate matrix and each model's wins / losses / ties."""
    rng = np.random.default_rng(seed)
    _, total_points, _ = win_rates(games, n_models)
    bt = bradley_terry(total_points)
    el = elo_mean(games, n_models, k, ELO_ORDERINGS, rng)
    ci = bootstrap(games, n_models, n_prompts, rounds=rounds, k=k, rng=rng) if rounds > 0 and n_prompts else None
    matrix, points, played = win_rates(games, n_models)
    rows = []
    for i in range(n_models):
        record = _record(games, i)
        rows.append({"index": i, "bt": float(bt[i]), "elo": float(el[i]),
                     "bt_ci": [float(ci["bt_low"][i]), float(ci["bt_high"][i])] if ci else None,
                     "elo_ci": [float(ci["elo_low"][i]), float(ci["elo_high"][i])] if ci else None,
                     "win_rate": float(points[i].sum() / played[i].sum()) if played[i].sum() else None,
                     "games": int(played[i].sum()), **record})
    return {"models": rows, "win_rate_matrix": matrix, "bootstrap_rounds": rounds, "elo_k": k,
            "elo_orderings": ELO_ORDERINGS, "elo_shuffles_per_round": ci["elo_shuffles"] if ci else None,
            "prior_ties": PRIOR_TIES, "ci_level": CI_LEVEL}


def _record(games: list[Game], i: int) -> dict:
    wins = losses = ties = 0
    for g in games:
        if i not in (g.first, g.second):
            continue
        mine = g.score if g.first == i else 1.0 - g.score
        wins += mine == 1.0
        losses += mine == 0.0
        ties += mine == 0.5
    return {"wins": wins, "losses": losses, "ties": ties}


def ranking(rows: list[dict], key: str = "bt") -> list[int]:
    """Model indices, best first."""
    return [r["index"] for r in sorted(rows, key=lambda r: -r[key])]
