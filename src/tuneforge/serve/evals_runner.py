"""Running an evaluation in the background (started by POST /tf/v1/evals, routes_eval): the base and then the
fine-tuned model on the same rows, CHUNK rows at a time. Each part holds the model only as long as one chat request
would (`ModelPool.lease`), so chat keeps answering while an evaluation runs, and the progress is real. The parts are
merged (`tuneforge.eval.merge`) and compared (`tuneforge.eval.compare.compare_task`): per-metric before / after /
delta, wins / losses / ties with the sign test, the examples that got worse and better. One evaluation runs at a
time; later ones wait queued. Results are written beside the record (evals_store) and the evaluation is recorded in
the registry as an `eval` run, child of the job's training run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

from tuneforge.serve.evals_options import SEED
from tuneforge.serve.evals_store import ACTIVE, ACTIVE_LOCK, eval_folder, save, update
from tuneforge.serve.jobs_state import JobsState
from tuneforge.serve.storage_paths import hide_storage, hide_storage_json
from tuneforge.utils.errors import TuneforgeError
from tuneforge.utils.io import atomic_write_json

CHUNK = 8  # rows per part: one lease of the model, one progress step
LOWER_IS_BETTER = {"n_unparseable"}
SHOWN = 20  # examples that got worse / better kept in the answer

_RUN = threading.Lock()  # one evaluation at a time (they share the model with chat)


def start(state, jobs: JobsState, rec: dict, work: dict) -> None:
    """Save the planned record (evals_plan), make it active and run it in a background thread."""
    rec["progress"]["total"] = 2 * rec["n"]
    save(jobs, rec)
    with ACTIVE_LOCK:
        ACTIVE[rec["id"]] = rec
    threading.Thread(target=_worker, args=(state, jobs, rec, work), name=rec["id"], daemon=True).start()


def _max_new_tokens(tokenizer, refs: list[str]) -> int:
    """Room for the longest reference answer twice over (a rambling answer is cut, and flagged did_not_stop)."""
    longest = max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs), default=16)
    return int(min(256, max(16, 2 * longest + 8)))


def _evaluate_side(state, jobs: JobsState, rec: dict, work: dict, entry, side: str, done: int) -> dict:
    """One model on every row, a part at a time; returns the merged result."""
    from tuneforge.eval.bench import evaluate_mc
    from tuneforge.eval.merge import merge_mc, merge_task
    from tuneforge.eval.task_eval import classify, evaluate_generation

    task = work.get("task")
    rows = task.items if task is not None else work["records"]
    parts = []
    for first in range(0, len(rows), CHUNK):
        chunk = rows[first:first + CHUNK]
        with state.pool.lease(entry) as engine:  # the model is ours for this part only: chat goes in between
            if task is not None:
                parts.append(evaluate_mc(replace(task, items=chunk), engine.model, engine.tokenizer,
                                         batch_size=CHUNK, progress=False))
            elif work["labels"]:
                parts.append(classify(engine, None, chunk, work["labels"], "score", batch_size=CHUNK))
            else:
                if "max_new_tokens" not in work:
                    work["max_new_tokens"] = _max_new_tokens(engine.tokenizer, work["refs"])
                parts.append(evaluate_generation(engine, chunk, max_new_tokens=work["max_new_tokens"],
                                                 batch_size=CHUNK))
        done += len(chunk)
        update(jobs, rec, progress={"done": done, "total": rec["progress"]["total"], "phase": side})
    return merge_mc(task, parts) if task is not None else merge_task(parts)


def _summary(cmp: dict, base: dict, tuned: dict, settings: dict) -> dict:
    """What the page shows: metrics before / after, the paired outcome, the examples that changed."""
    def examples(rows: list[dict], key: str) -> list[dict]:
        return [{"id": str(w["id"]), key: round(w[key], 4), "prompt": w["input"], "reference": w["reference"],
                 "base": w["a"], "tuned": w["b"]} for w in rows[:SHOWN]]

    metrics = [{"name": k, "base": v["a"], "tuned": v["b"], "delta": v["delta"],
                "higher_is_better": k not in LOWER_IS_BETTER,
                "unit": "count" if k == "n_unparseable" else "percent" if cmp["kind"] == "generation" else "fraction"}
               for k, v in cmp["metrics"].items()]
    return {"metrics": metrics, "n": tuned["metrics"].get("n"), "wins": cmp["wins"], "losses": cmp["losses"],
            "ties": cmp["ties"], "sign_test_p": cmp["sign_test_p"], "worse": examples(cmp["worse"], "drop"),
            "better": examples(cmp["better"], "gain"),
            "seconds": {"base": base["timing"]["seconds"], "tuned": tuned["timing"]["seconds"]},
            "settings": settings}


def _record(jobs: JobsState, rec: dict, work: dict, base: dict, tuned: dict, folder: Path, base_root: str):
    """The evaluation as a registry run (kind eval, child of the job's training run); None without a registry."""
    from tuneforge.eval.metrics import scalar_metrics
    from tuneforge.registry.api import RunRecorder

    dataset = [(rec["filename"], work["fingerprint"], rec["n"], "eval")] if rec.get("filename") else []
    recorder = RunRecorder.start(kind="eval", config={"ui_eval": rec["id"], "model": rec["model"],
                                                      "kind": rec["kind"], "task": rec["task"],
                                                      "scoring": rec["scoring"], "labels": rec["labels"],
                                                      "limit": rec["limit"], "seed": SEED},
                                 base_model=base_root, datasets=dataset, output_dir=str(folder),
                                 parent_run_id=rec.get("job_run_id"), tags=["eval", "ui"],
                                 url=jobs.settings.registry_url)
    recorder.add_eval(rec["task"], {**scalar_metrics(tuned["metrics"]),
                                    **scalar_metrics(base["metrics"], prefix="base_")})
    recorder.add_artifact("eval", str(folder / "compare.json"))
    recorder.finish("succeeded")
    return recorder.run_id


def _run(state, jobs: JobsState, rec: dict, work: dict) -> None:
    """Both models, the comparison written to the eval's folder, the registry run; the record ends succeeded."""
    from tuneforge.eval.compare import compare_task

    folder = eval_folder(jobs, rec["id"])
    update(jobs, rec, status="running", started_at=int(time.time()), progress={**rec["progress"], "phase": "base"})
    base = _evaluate_side(state, jobs, rec, work, work["base"], "base", 0)
    tuned = _evaluate_side(state, jobs, rec, work, work["entry"], "tuned", rec["n"])
    cmp = compare_task(rec["task"], base, tuned)
    for name, result in (("base", base), ("tuned", tuned)):
        atomic_write_json(folder / f"results-{name}.json", {k: v for k, v in result.items()
                                                           if k not in ("path",)}, indent=1)
    atomic_write_json(folder / "compare.json", cmp, indent=1)
    settings = {"max_new_tokens": work.get("max_new_tokens"), "chunk": CHUNK, "seed": SEED,
                "mode": "score" if rec["scoring"] == "classification" else None}
    summary = hide_storage_json(_summary(cmp, base, tuned, settings), jobs.storage, work.get("path"),
                                rec["filename"])
    try:
        run_id = _record(jobs, rec, work, base, tuned, folder, work["base"].root)
    except Exception:  # noqa: BLE001 - the registry is informative; the result is on disk
        run_id = None
    update(jobs, rec, status="succeeded", finished_at=int(time.time()), result=summary, run_id=run_id,
           progress={**rec["progress"], "phase": "done"})


def _worker(state, jobs: JobsState, rec: dict, work: dict) -> None:
    """The thread: waits its turn, runs the evaluation; a failure ends the record failed, with why."""
    try:
        with _RUN:
            _run(state, jobs, rec, work)
    except Exception as err:  # noqa: BLE001 - the page shows why, the log has the trace
        import logging

        logging.getLogger("tuneforge.serve").exception("evaluation %s failed", rec["id"])
        message = err.message if isinstance(err, TuneforgeError) else f"{type(err).__name__}: {err}"
        update(jobs, rec, status="failed", finished_at=int(time.time()), error=hide_storage(message, jobs.storage))
    finally:
        with ACTIVE_LOCK:
            ACTIVE.pop(rec["id"], None)
