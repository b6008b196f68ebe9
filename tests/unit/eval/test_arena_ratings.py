"""Arena ratings and judges without models: Bradley–Terry and Elo on known outcomes, their symmetries, bootstrap
intervals that narrow with more prompts, win rates, the judge's self-agreement, the rules and the verdict parser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuneforge.eval.arena.answers import Answer
from tuneforge.eval.arena.judges import Question, RuleJudge, check_rubric, parse_verdict
from tuneforge.eval.arena.matches import Matchup, flips, plan_matchups, to_games, upsets
from tuneforge.eval.arena.prompts import ArenaPrompt
from tuneforge.eval.arena.ratings import (Game, bradley_terry, compute_ratings, elo_mean, ranking, self_agreement,
                                          win_rates)
from tuneforge.utils.errors import ConfigError

# wins[i][j]: games model i won against model j, out of 10 per pair (no ties): 0 > 1 > 2, and 0 > 2 most clearly
WINS = [[0, 7, 9], [3, 0, 6], [1, 4, 0]]


def games_from(wins: list[list[int]], per_pair: int = 10) -> list[Game]:
    """Games realising a win matrix, one game per prompt per pair, the winner alternately shown first."""
    games = []
    m = len(wins)
    for i in range(m):
        for j in range(i + 1, m):
            for g in range(per_pair):
                score = 1.0 if g < wins[i][j] else 0.0
                games.append(Game(g, i, j, score) if g % 2 else Game(g, j, i, 1.0 - score))
    return games


def test_a_known_win_matrix_orders_bradley_terry_and_elo():
    games = games_from(WINS)
    result = compute_ratings(games, 3, 10, rounds=200, seed=0)
    assert ranking(result["models"], "bt") == [0, 1, 2]
    assert ranking(result["models"], "elo") == [0, 1, 2]
    assert [r["wins"] for r in result["models"]] == [16, 9, 5]
    matrix, _, _ = win_rates(games, 3)
    assert matrix[0][1] == pytest.approx(0.7) and matrix[2][0] == pytest.approx(0.1) and matrix[1][1] is None
    for r in result["models"]:  # the point estimate sits inside its own interval
        assert r["bt_ci"][0] <= r["bt"] <= r["bt_ci"][1]


def test_bradley_terry_is_the_maximum_likelihood_fit():
    """Two models, 3 wins to 1: the MLE odds are 3:1, i.e. 400·log10(3) Elo points apart, centred on 1000."""
    points = np.array([[0.0, 3.0], [1.0, 0.0]])
    bt = bradley_terry(points, prior=0.0)
    assert bt[0] - bt[1] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert bt.mean() == pytest.approx(1000.0)
    # the prior of one tie per pair pulls a clean sweep back to a finite rating
    sweep = bradley_terry(np.array([[0.0, 20.0], [0.0, 0.0]]))
    assert math.isfinite(sweep[0]) and sweep[0] - sweep[1] == pytest.approx(400 * math.log10(20.5 / 0.5), abs=1e-6)


def test_ratings_are_symmetric():
    games = games_from(WINS)
    base = compute_ratings(games, 3, 10, rounds=50, seed=3)
    bt = np.array([r["bt"] for r in base["models"]])
    el = np.array([r["elo"] for r in base["models"]])

    # relabelling the models permutes their ratings (Bradley–Terry; Elo sees the same games in the same order)
    perm = [2, 0, 1]
    relabelled = [Game(g.prompt, perm[g.first], perm[g.second], g.score) for g in games]
    moved = compute_ratings(relabelled, 3, 10, rounds=50, seed=3)
    assert [moved["models"][perm[i]]["bt"] for i in range(3)] == pytest.approx(list(bt))
    assert [moved["models"][perm[i]]["elo"] for i in range(3)] == pytest.approx(list(el))

    # the same verdict written from the other side (positions swapped) changes nothing
    swapped = [Game(g.prompt, g.second, g.first, 1.0 - g.score) for g in games]
    assert [r["bt"] for r in compute_ratings(swapped, 3, 10, rounds=0)["models"]] == pytest.approx(list(bt))

    # every outcome reversed mirrors the ratings around 1000
    reversed_games = [Game(g.prompt, g.first, g.second, 1.0 - g.score) for g in games]
    mirrored = compute_ratings(reversed_games, 3, 10, rounds=50, seed=3)
    assert [2000 - r["bt"] for r in mirrored["models"]] == pytest.approx(list(bt))
    assert [2000 - r["elo"] for r in mirrored["models"]] == pytest.approx(list(el))

    # all ties: everyone at 1000
    ties = [Game(g.prompt, g.first, g.second, 0.5) for g in games]
    tied = compute_ratings(ties, 3, 10, rounds=20)
    assert [r["bt"] for r in tied["models"]] == pytest.approx([1000.0] * 3)
    assert [r["elo"] for r in tied["models"]] == pytest.approx([1000.0] * 3)


def test_elo_is_the_mean_over_seeded_orders():
    games = games_from(WINS)
    a = elo_mean(games, 3, 16.0, 30, np.random.default_rng(7))
    b = elo_mean(games, 3, 16.0, 30, np.random.default_rng(7))
    c = elo_mean(games, 3, 16.0, 30, np.random.default_rng(8))
    assert list(a) == list(b) and list(a) != list(c)
    assert a.sum() == pytest.approx(3000.0)  # zero-sum updates keep the mean at 1000


def _length_arena(n_prompts: int, seed: int) -> list[Game]:
    """Three 'models' whose answers have noisy lengths (means 100, 85, 60 characters), judged by rule:longer in
    both orders, exactly as the arena plans and judges them."""
    rng = np.random.default_rng(seed)
    answers = [[Answer("x" * max(1, int(rng.normal(mean, 30))), "stop", None) for _ in range(n_prompts)]
               for mean in (100, 85, 60)]
    matchups = plan_matchups(n_prompts, 3, both_orders=True)
    questions = [Question(({"role": "user", "content": "q"},), answers[m.first][m.prompt].text,
                          answers[m.second][m.prompt].text) for m in matchups]
    return to_games(matchups, RuleJudge("rule:longer").verdicts(questions))


def test_intervals_narrow_with_more_prompts():
    widths = {}
    for n in (10, 80):
        result = compute_ratings(_length_arena(n, seed=1), 3, n, rounds=400, seed=0)
        assert ranking(result["models"]) == [0, 1, 2]
        widths[n] = {key: np.mean([r[f"{key}_ci"][1] - r[f"{key}_ci"][0] for r in result["models"]])
                     for key in ("bt", "elo")}
    assert widths[80]["bt"] < 0.6 * widths[10]["bt"]  # about 1/sqrt(8) ≈ 0.35 in theory
    assert widths[80]["elo"] < widths[10]["elo"]


def test_self_agreement_sees_a_judge_that_follows_the_position():
    always_first = {(p, i, j): "1" for p in range(4) for i in range(3) for j in range(3) if i != j}
    report = self_agreement(always_first)
    assert report["pairs_both_orders"] == 12 and report["agreement"] == 0.0 and report["flipped"] == 12
    assert report["first_position_share"] == 1.0

    fair = {(0, 0, 1): "1", (0, 1, 0): "2", (1, 0, 1): "tie", (1, 1, 0): "tie", (2, 0, 1): "1", (2, 1, 0): "tie"}
    report = self_agreement(fair)
    assert report["agreement"] == pytest.approx(2 / 3) and report["flipped"] == 0 and report["half_flipped"] == 1


def q(first: str, second: str) -> Question:
    return Question(({"role": "user", "content": "hi"},), first, second)


def test_rules():
    longer, shorter = RuleJudge("rule:longer"), RuleJudge("rule:shorter")
    cases = [q("a" * 100, "a" * 50), q("a" * 100, "a" * 96), q("a" * 10, "a" * 40), q("", "")]
    assert longer.verdicts(cases) == ["1", "tie", "2", "tie"]  # within 5 % of the longer: a tie
    assert shorter.verdicts(cases) == ["2", "tie", "1", "tie"]
    contains = RuleJudge("rule:contains:Blue")
    assert contains.verdicts([q("the sky is blue", "grey"), q("no", "BLUE!"), q("blue", "blue"), q("a", "b")]) == \
        ["1", "2", "tie", "tie"]
    for bad in ("rule:longest", "rule:contains", "rule:longer:x"):
        with pytest.raises(ConfigError, match="unknown judge rule"):
            RuleJudge(bad)


def test_verdicts_are_read_from_the_reply():
    assert parse_verdict("2") == "2"
    assert parse_verdict("Answer 1 is better.") == "1"
    assert parse_verdict("TIE - both fine") == "tie"
    assert parse_verdict("<think>maybe 2? or 1</think>\ntie") == "tie"
    assert parse_verdict("I cannot decide") is None and parse_verdict(None) is None
    assert parse_verdict("12 reasons") is None  # a number that merely starts with 1 is no verdict


def test_rubric_errors_name_the_problem():
    check_rubric("{prompt}\n1: {answer_1}\n2: {answer_2}\nref {reference} {{literal}}")
    with pytest.raises(ConfigError, match="no {answer_2}"):
        check_rubric("{prompt} {answer_1}")
    with pytest.raises(ConfigError, match="unknown placeholder {completion}"):
        check_rubric("{completion} {answer_1} {answer_2}")
    with pytest.raises(ConfigError, match="not a valid template"):
        check_rubric("{answer_1} {answer_2} {")


def test_the_examples_worth_reading_are_flips_and_upsets():
    prompts = [ArenaPrompt(f"p{i}", ({"role": "user", "content": f"question {i}"},), None, "f:1") for i in range(2)]
    answers = [[Answer(f"m{m} on p{p}", "stop", None) for p in range(2)] for m in range(2)]
    matchups = [Matchup(0, 0, 1), Matchup(0, 1, 0), Matchup(1, 0, 1), Matchup(1, 1, 0)]
    verdicts = ["1", "1", "1", "2"]  # prompt 0: answer 1 both times (flipped); prompt 1: model 0 both times
    found = flips(matchups, verdicts, ["a", "b"], prompts, answers)
    assert [(e["prompt_id"], e["strict"], e["verdict_a_first"], e["verdict_b_first"]) for e in found] == \
        [("p0", True, "a won", "b won")]
    games = to_games(matchups, verdicts)
    # model 1 is rated higher (1100), yet model 0 won prompt 1 outright: an upset; prompt 0 was even
    found = upsets(games, [900.0, 1100.0], ["a", "b"], prompts, answers)
    assert [(e["prompt_id"], e["winner"], e["loser"], e["gap"]) for e in found] == [("p1", "a", "b", 200.0)]
