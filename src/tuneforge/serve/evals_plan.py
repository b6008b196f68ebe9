"""Checking an evaluation request before anything runs (POST /tf/v1/evals, routes_eval): the model, the file or
benchmark, the labels. Answers the new eval record (queued; kept by evals_store) and what evals_runner needs: the
rows (the seeded sample of `limit`, the same for both models) or the benchmark's items.
"""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path

from tuneforge.jobs import store as js
from tuneforge.serve.errors import invalid, model_not_found
from tuneforge.serve.evals_options import (DEFAULT_LIMIT, MEMORIZATION, SEED, benchmarks, default_file, fits, job_of,
                                           read_task, split_of, suggest_labels)
from tuneforge.serve.jobs_state import JobsState
from tuneforge.serve.storage_paths import hide_storage
from tuneforge.utils.errors import TuneforgeError


def _sample(records: list, limit: int) -> list:
    """The same seeded sample as `load_task_data(..., limit)`."""
    if limit >= len(records):
        return records
    keep = set(random.Random(SEED).sample(range(len(records)), limit))
    return [r for i, r in enumerate(records) if i in keep]


def _plan_benchmark(jobs: JobsState, req, rec: dict, work: dict) -> tuple[dict, dict]:
    from tuneforge.eval.tasks import load_task

    names = [b["name"] for b in benchmarks()]
    if req.benchmark not in names:
        raise invalid("benchmark", f"benchmark {req.benchmark!r} is not available on this server; "
                                   f"available: {', '.join(names) or 'none'}")
    try:
        task = load_task(req.benchmark, limit=rec["limit"], seed=SEED)
    except TuneforgeError as err:
        raise invalid("benchmark", hide_storage(str(err), jobs.storage)) from None
    rec.update(task=req.benchmark, benchmark=req.benchmark, n=len(task.items), scoring="multiple_choice",
               file_id=None, filename=None, split=None, labels=None)
    work["task"] = task
    return rec, work


def _plan_task(jobs: JobsState, project: str, req, job, rec: dict, work: dict) -> tuple[dict, dict]:
    from tuneforge.eval.taskdata import check_labels, split_record

    file_id, _ = (req.file_id, None) if req.file_id else default_file(job)
    if not file_id:
        raise invalid("file_id", f"{req.model} has no job on this server to take its data from; pass file_id")
    row = js.get_file(jobs.store, project, file_id)
    if not fits(row):
        raise invalid("file_id", f"{row.filename} holds {row.data_format} rows; task metrics need conversations "
                                 f"that end with the answer (chat, alpaca, sharegpt)", code="invalid_file_format")
    data = read_task(jobs, row)
    refs = [split_record(r)[1] for r in data.records]
    labels = None
    if req.scoring != "text":
        labels = req.labels or suggest_labels(refs)
        if labels is None and req.scoring == "labels":
            raise invalid("labels", f"the answers of {row.filename} are not a few short labels; pass labels or "
                                    f"score them as text")
    records = _sample(data.records, rec["limit"])
    if labels is not None:
        try:
            check_labels(records, labels)
        except TuneforgeError as err:
            raise invalid("labels", hide_storage(str(err), jobs.storage, str(jobs.storage / row.path),
                                                 row.filename)) from None
    split = split_of(job, file_id)
    rec.update(task=Path(row.filename).stem, benchmark=None, n=len(records), file_id=file_id,
               filename=row.filename, split=split, labels=labels,
               scoring="classification" if labels else "generation",
               note=MEMORIZATION if split == "training" else None)
    work.update(records=records, labels=labels, fingerprint=data.fingerprint, refs=refs,
                path=str(jobs.storage / row.path))
    return rec, work


def plan_eval(state, jobs: JobsState, project: str, req) -> tuple[dict, dict]:
    """Everything checked before anything runs: (the eval record, what the worker needs). `req` is the request
    (routes_eval.EvalCreate): model, kind, file_id, benchmark, limit, scoring, labels."""
    entry = state.catalog.find(req.model, project)
    if entry is None:
        raise model_not_found(req.model)
    if entry.kind == "base":
        raise invalid("model", f"{req.model} is the base; evaluate a fine-tuned model, which is compared with it")
    if not state.pool.base.tokenizer.chat_template:
        raise invalid("model", "the base has no chat template, so task prompts cannot be rendered as in training; "
                               "start the server with --template")
    job = job_of(jobs, project, req.model)
    # a job on another base (--other-bases) is compared with that base, served as its own copy
    base = (entry.base and state.catalog.find(entry.parent, project)) or state.catalog.base
    limit = req.limit or DEFAULT_LIMIT
    rec = {"id": f"eval-{time.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}", "object": "tf.eval",
           "project": project, "model": req.model, "base": base.id, "kind": req.kind,
           "job_id": job.id if job else None, "job_run_id": job.run_id if job else None, "limit": limit,
           "status": "queued", "created_at": int(time.time()), "started_at": None, "finished_at": None,
           "progress": {"done": 0, "total": 0, "phase": "queued"}, "error": None, "note": None, "result": None,
           "run_id": None}
    work = {"entry": entry, "base": base}
    if req.kind == "benchmark":
        return _plan_benchmark(jobs, req, rec, work)
    return _plan_task(jobs, project, req, job, rec, work)
