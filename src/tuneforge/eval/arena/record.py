"""The arena in the run registry: one run of kind "eval" (tags eval, arena) with each model's ratings as an eval
result, its report and chart as artifacts, and the prompt file as its dataset.

Its parent is the training run of the first model that came from one (a run has one parent, which `runs lineage`
follows); every model that came from a training run also gets the arena's result for it as an eval on its own run
(`arena RUN_ID`), so `runs show` of any contestant leads to the arena. A registry failure is a warning, never an
arena failure (`RunRecorder`'s rule).
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.eval.arena.contestants import Contestant, producing_run_id
from tuneforge.utils.console import console

RATING_KEYS = ("bt", "elo", "win_rate", "wins", "losses", "ties", "games", "rank")


def model_runs(contestants: list[Contestant]) -> list[str | None]:
    """The training run of each contestant (None: not from a run, or recording is off)."""
    try:
        from tuneforge.registry.api import RunRecorder
    except ImportError:
        return [None] * len(contestants)
    if RunRecorder.disabled():
        return [None] * len(contestants)
    return [producing_run_id(c) for c in contestants]


def start(config: dict, prompts: tuple[str, str, int], out: Path, run_ids: list[str | None]):
    """The arena's RunRecorder (never raises; inactive when the registry is off or broken), None without the
    registry's packages."""
    try:
        from tuneforge.registry.api import RunRecorder
    except ImportError:
        return None

    name, fingerprint, n = prompts
    parent = next((r for r in run_ids if r), None)
    return RunRecorder.start(kind="eval", config=config, datasets=[(name, fingerprint, n, "eval")],
                             output_dir=str(out), parent_run_id=parent, tags=["eval", "arena"])


def _metrics(row: dict) -> dict:
    m = {k: row[k] for k in RATING_KEYS if row.get(k) is not None}
    for key in ("bt", "elo"):
        if row.get(f"{key}_ci"):
            m[f"{key}_low"], m[f"{key}_high"] = row[f"{key}_ci"]
    return m


def finish(recorder, report: dict, paths: dict[str, Path], run_ids: list[str | None]) -> None:
    """Record the ratings and the report, close the run, and add each model's result to its training run."""
    if recorder is None:
        return
    n_models = len(report["leaderboard"])
    for row in report["leaderboard"]:
        recorder.add_eval(f"arena/{row['name']}", {**_metrics(row), "n_models": n_models})
    recorder.add_artifact("report", str(paths["markdown"]))
    if "chart" in paths:
        recorder.add_artifact("plot", str(paths["chart"]))
    recorder.finish("succeeded")
    by_index = {row["index"]: row for row in report["leaderboard"]}
    linked = [(run_id, by_index[i]) for i, run_id in enumerate(run_ids) if run_id and run_id != recorder.run_id]
    if linked and recorder.run_id:
        _link(linked, recorder.run_id, n_models)


def _link(linked: list[tuple[str, dict]], arena_id: str, n_models: int) -> None:
    from tuneforge.registry.api import RunRecorder

    try:
        from tuneforge.registry.store import open_store

        store = open_store()
    except Exception as err:  # noqa: BLE001 - the registry is optional
        console.print(f"[yellow]warning:[/yellow] run registry: linking the arena to its models failed ({err})")
        return
    for run_id, row in linked:
        model_run = RunRecorder(store, run_id)  # an existing run: add an eval, never finish it
        model_run.add_eval(f"arena {arena_id}", {**_metrics(row), "n_models": n_models})
        model_run.close()
