"""`tuneforge eval arena`: N models answer the same prompts, a judge compares the answers pair by pair, and the
verdicts become Elo and Bradley–Terry ratings with bootstrap intervals. See docs/arena.md.

    run_arena(ArenaSettings(models=["base=smollm2-135m-instruct", "runs/sft"], prompts="prompts.jsonl",
                            judge=JudgeSpec(judge="rule:longer"), out="arena"))

Order of work, so mistakes cost nothing: every model spec, the prompt file, the judge options and each model's
chat template are checked first; then the missing answers are generated (one model in memory at a time), then
judged, rated, reported and recorded. Modules: `contestants` (model specs and identities), `prompts`, `answers`
(generation and its cache), `judges` (rules, model, endpoint) and `human`, `matches` (who meets whom, examples),
`ratings`, `report`, `record` (the registry).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tuneforge.eval.arena import record
from tuneforge.eval.arena.answers import AnswerCache, GenerationSettings, answers_of, generate_missing
from tuneforge.eval.arena.contestants import identity, parse_contestants, settle_template
from tuneforge.eval.arena.human import JudgingPaused
from tuneforge.eval.arena.judges import JudgeSpec, build_judge, check_judge_spec
from tuneforge.eval.arena.matches import flips, judge_matchups, plan_matchups, to_games, upsets
from tuneforge.eval.arena.prompts import read_prompts
from tuneforge.eval.arena.ratings import compute_ratings, self_agreement
from tuneforge.eval.arena.report import print_leaderboard, write_report
from tuneforge.utils.console import console

__all__ = ["ArenaSettings", "ArenaResult", "GenerationSettings", "JudgeSpec", "run_arena"]


@dataclass
class ArenaSettings:
    """Everything `tuneforge eval arena` takes (see its --help)."""

    models: list[str]
    prompts: str
    judge: JudgeSpec
    out: str | None = None
    templates: list[str] = field(default_factory=list)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    bootstrap: int = 1000
    elo_k: float = 16.0
    seed: int = 0
    progress: bool = True


@dataclass
class ArenaResult:
    """`report` is arena.json's content (None when a person paused the judging); `generated`: answers generated
    by this call, per model name."""

    out: Path
    report: dict | None
    paths: dict[str, Path]
    generated: dict[str, int]
    paused: bool = False


def default_out(prompts: str, fingerprint: str) -> Path:
    """$TUNEFORGE_HOME/arena/<prompt file>-<content hash>: the same prompts find their cached answers again."""
    from tuneforge.utils.paths import tuneforge_home

    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(prompts).stem)[:40]
    return tuneforge_home() / "arena" / f"{stem}-{fingerprint[:8]}"


def _settings_json(s: ArenaSettings) -> dict:
    gen = {k: v for k, v in asdict(s.generation).items() if k != "api_key_env"}
    return {**gen, "bootstrap": s.bootstrap, "elo_k": s.elo_k, "seed": s.seed, "templates": list(s.templates)}


def run_arena(s: ArenaSettings, *, ask=None) -> ArenaResult:
    """Run the arena; `ask` replaces the terminal for a human judge (tests)."""
    contestants = parse_contestants(s.models, s.templates)
    prompts, fingerprint = read_prompts(s.prompts)
    check_judge_spec(s.judge)
    contestants = [settle_template(c) for c in contestants]
    idents = [identity(c) for c in contestants]
    out = Path(s.out).expanduser() if s.out else default_out(s.prompts, fingerprint)
    run_ids = record.model_runs(contestants)
    config = {"settings": _settings_json(s), "judge": asdict(s.judge), "prompts": s.prompts,
              "models": [{"name": c.name, "spec": c.spec, "identity": i, "run_id": r}
                         for c, i, r in zip(contestants, idents, run_ids)]}
    recorder = record.start(config, (Path(s.prompts).name, fingerprint, len(prompts)), out, run_ids)
    try:
        cache = AnswerCache(out)
        generated = {c.name: generate_missing(c, i, prompts, s.generation, cache, progress=s.progress)
                     for c, i in zip(contestants, idents)}
        answers = [answers_of(i, prompts, s.generation, cache) for i in idents]
        judge = build_judge(s.judge, out, seed=s.seed, ask=ask)
        matchups = plan_matchups(len(prompts), len(contestants), both_orders=judge.both_orders, seed=s.seed)
        verdicts, identical = judge_matchups(judge, matchups, prompts, answers, progress=s.progress)
    except JudgingPaused as paused:
        console.print(f"judging paused: {paused.done} comparisons saved in {out / 'human_verdicts.jsonl'}, "
                      f"{paused.left} left; run the same command again to go on")
        if recorder:
            recorder.finish("interrupted", "paused by the human judge")
        return ArenaResult(out, None, {}, generated, paused=True)
    except BaseException as err:
        if recorder:
            recorder.finish("interrupted" if isinstance(err, KeyboardInterrupt) else "failed", repr(err)[:500])
        raise
    report = _report(s, contestants, idents, run_ids, prompts, fingerprint, answers, generated, judge, matchups,
                     verdicts, identical)
    report["run_id"] = getattr(recorder, "run_id", None)
    if not report["judge"]["verdicts"]:
        console.print("[yellow]arena: the judge gave no usable verdict, so the ratings say nothing; look at its "
                      "replies in judge_cache.jsonl and adjust the rubric or the judge[/yellow]")
    paths = write_report(report, out)
    record.finish(recorder, report, paths, run_ids)
    print_leaderboard(report)
    console.print(f"arena report: [bold]{paths['markdown']}[/bold] (also {paths['html'].name}, "
                  f"{paths['json'].name})")
    return ArenaResult(out, report, paths, generated)


def _judge_info(judge, matchups, verdicts, identical: int) -> dict:
    return {"identity": judge.identity, "describe": judge.describe(), "comparisons": len(matchups),
            "identical": identical, "verdicts": sum(v is not None for v in verdicts), **judge.counts}


def _models_info(contestants, idents, run_ids, answers, generated, n_prompts: int) -> list[dict]:
    return [{"name": c.name, "spec": c.spec, "label": c.label, "identity": i, "run_id": r,
             "template": None if c.is_endpoint else c.template, "generated": generated[c.name],
             "cached": n_prompts - generated[c.name],
             "mean_length": sum(len(a.text) for a in ans) / max(len(ans), 1)}
            for c, i, r, ans in zip(contestants, idents, run_ids, answers)]


def _report(s, contestants, idents, run_ids, prompts, fingerprint, answers, generated, judge, matchups, verdicts,
            identical) -> dict:
    names = [c.name for c in contestants]
    games = to_games(matchups, verdicts)
    ratings = compute_ratings(games, len(names), len(prompts), rounds=s.bootstrap, k=s.elo_k, seed=s.seed)
    board = sorted(({**r, "name": names[r["index"]]} for r in ratings["models"]), key=lambda r: -r["bt"])
    for rank, row in enumerate(board, 1):
        row["rank"] = rank
    asked = {(m.prompt, m.first, m.second): v for m, v in zip(matchups, verdicts) if v is not None
             and answers[m.first][m.prompt].text.strip() != answers[m.second][m.prompt].text.strip()}
    bt = [r["bt"] for r in ratings["models"]]
    return {
        "tuneforge_arena": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "prompts": s.prompts, "prompts_fingerprint": fingerprint, "n_prompts": len(prompts),
        "settings": _settings_json(s), "both_orders": judge.both_orders,
        "models": _models_info(contestants, idents, run_ids, answers, generated, len(prompts)),
        "judge": _judge_info(judge, matchups, verdicts, identical), "agreement": self_agreement(asked),
        "ratings": ratings, "leaderboard": board,
        "examples": {"flips": flips(matchups, verdicts, names, prompts, answers),
                     "upsets": upsets(games, bt, names, prompts, answers)},
        "judgments": [{"prompt_id": prompts[m.prompt].id, "first": names[m.first], "second": names[m.second],
                       "verdict": v} for m, v in zip(matchups, verdicts)],
        "answers": [{"prompt_id": p.id, "prompt": list(p.messages), "reference": p.reference,
                     "answers": {n: answers[i][k].text for i, n in enumerate(names)}} for k, p in enumerate(prompts)],
    }
