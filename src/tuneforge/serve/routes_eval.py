"""/tf/v1/evals: before / after evaluations of a fine-tuned model against the served base, for the web UI's
Evaluate step (the same library as `tuneforge eval task` / `bench` / `compare`):

    GET  /tf/v1/evals/options?model=&file_id=   what can be evaluated: the default file of the model's job, the
                                                files that fit, the labels the file's answers suggest, and the
                                                benchmarks whose data are on this machine
    POST /tf/v1/evals                            start one in the background; answers the eval object (queued)
    GET  /tf/v1/evals?model=                     the caller's evaluations, newest first
    GET  /tf/v1/evals/{id}                       status, progress and, once done, the comparison

An evaluation scores the base and then the fine-tuned model on the same rows (task metrics of an uploaded file, or a
multiple-choice benchmark), a few rows at a time: each part holds the model only as long as one chat request would
(`ModelPool.lease`), so chat keeps answering while an evaluation runs, and the progress is real. The parts are merged
(`tuneforge.eval.merge`) and compared (`tuneforge.eval.compare.compare_task`): per-metric before / after / delta,
wins / losses / ties with the sign test, and the examples that got worse and better. One evaluation runs at a time;
later ones wait queued. Each is kept as JSON in the storage folder (`evals/<id>/`), so a reload or a restarted
server shows it again, and recorded in the registry as an `eval` run, child of the job's training run.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from tuneforge.jobs import store as js
from tuneforge.jobs.files import Checked
from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.errors import APIError, invalid, model_not_found
from tuneforge.serve.jobs_state import JobsState, jobs_state
from tuneforge.utils.errors import TuneforgeError
from tuneforge.utils.io import atomic_write_json

router = APIRouter()

CHUNK = 8  # rows per part: one lease of the model, one progress step
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
SEED = 0  # the row sample of `limit`, the same for both models (paired)
MAX_LABELS, MAX_LABEL_CHARS = 10, 24
LOWER_IS_BETTER = {"n_unparseable"}
SHOWN = 20  # examples that got worse / better kept in the answer
MEMORIZATION = ("Scored on the training data: this measures how well the model memorized it, not how it does on "
                "new data. Upload a held-out file (or give the job a validation file) to measure generalization.")

_RUN = threading.Lock()  # one evaluation at a time (they share the model with chat)
_ACTIVE: dict[str, dict] = {}  # evaluations queued or running in this process: id -> record
_ACTIVE_LOCK = threading.Lock()


class EvalCreate(BaseModel):
    model: str = Field(description="a fine-tuned model id this server serves (ft:...)")
    kind: Literal["task", "benchmark"] = "task"
    file_id: str | None = Field(None, description="task: the uploaded file; default the job's validation file, "
                                                  "else its training file")
    benchmark: str | None = Field(None, description="benchmark: one of GET /tf/v1/evals/options's benchmarks")
    limit: int | None = Field(None, ge=1, le=MAX_LIMIT, description=f"rows / items (default {DEFAULT_LIMIT})")
    scoring: Literal["auto", "text", "labels"] = Field(
        "auto", description="task: text (BLEU, ROUGE, exact match) or labels (accuracy, F1 over a label set); "
                            "auto: labels when the answers are a few short labels")
    labels: list[str] | None = Field(None, description="task with labels: the label set (default: the answers')")


# ---------------------------------------------------------------- storage
def _folder(jobs: JobsState, eval_id: str) -> Path:
    return jobs.storage / "evals" / eval_id


def _save(jobs: JobsState, rec: dict) -> None:
    atomic_write_json(_folder(jobs, rec["id"]) / "eval.json", rec, indent=1)


def _load(jobs: JobsState, eval_id: str) -> dict | None:
    with _ACTIVE_LOCK:
        live = _ACTIVE.get(eval_id)
        if live is not None:
            return json.loads(json.dumps(live))
    try:
        rec = json.loads((_folder(jobs, eval_id) / "eval.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("status") in ("queued", "running"):  # left by a server that stopped
        rec.update(status="failed", error="the server stopped before this evaluation finished; run it again")
    return rec


def _public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in ("project", "job_run_id")}


def _get(jobs: JobsState, project: str, eval_id: str) -> dict:
    rec = _load(jobs, eval_id) if eval_id.startswith("eval-") and eval_id[5:].isalnum() else None
    if rec is None or rec.get("project") != project:
        raise APIError(404, f"no evaluation {eval_id}", code="not_found")
    return rec


def _list(jobs: JobsState, project: str, model: str | None, limit: int) -> list[dict]:
    root = jobs.storage / "evals"
    ids = sorted((p.name for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []
    out = []
    for eval_id in ids:
        rec = _load(jobs, eval_id)
        if rec and rec.get("project") == project and (model is None or rec.get("model") == model):
            out.append(rec)
    out.sort(key=lambda r: -r["created_at"])
    return out[:limit]


# ---------------------------------------------------------------- what can be evaluated
def _benchmarks() -> list[dict]:
    """The multiple-choice benchmarks whose data are on this machine (offline)."""
    from tuneforge.eval.tasks import BUILTINS, benchmarks_dir

    root = benchmarks_dir()
    out = []
    for name, info in BUILTINS.items():
        if info.style == "generate" or root is None or not (root / info.folder / "test.jsonl").is_file():
            continue
        out.append({"name": name, "style": info.style, "language": info.lang})
    return out


def _fits(row) -> bool:
    """A file task metrics can read: conversations (alpaca, sharegpt, openai) that end with an answer."""
    return row.purpose == "fine-tune" and row.status == "processed" and \
        Checked(row.data_format or "", row.n_rows or 0, [], 0).kind == "chat"


def _job_of(jobs: JobsState, project: str, model: str):
    found = js.find_model(jobs.store, project, model)
    return found[0] if found else None


def _default_file(job) -> tuple[str | None, str | None]:
    if job is None:
        return None, None
    return (job.validation_file, "validation") if job.validation_file else (job.training_file, "training")


def _split(job, file_id: str) -> str:
    if job is not None and file_id == job.validation_file:
        return "validation"
    if job is not None and file_id == job.training_file:
        return "training"
    return "other"


def suggest_labels(references: list[str]) -> list[str] | None:
    """The label set when the answers look like classification: 2 to 10 distinct short answers, each seen at least
    three times on average; None for free text."""
    refs = [r.strip() for r in references]
    distinct = sorted(set(refs))
    if not 2 <= len(distinct) <= MAX_LABELS or len(refs) < 3 * len(distinct):
        return None
    if any(not lab or len(lab) > MAX_LABEL_CHARS or "\n" in lab for lab in distinct):
        return None
    return distinct


def _read_task(jobs: JobsState, row):
    """The file's records (validated for task metrics; errors name the uploaded file, not the storage path)."""
    from tuneforge.eval.taskdata import load_task_data

    path = str(jobs.storage / row.path)
    try:
        return load_task_data(path, None, "score", None, SEED)
    except TuneforgeError as err:
        raise invalid("file_id", _scrub(str(err), jobs, path, row.filename)) from None


def _scrub(text: str, jobs: JobsState, path: str | None = None, filename: str | None = None) -> str:
    if path and filename:
        text = text.replace(path, filename)
    return text.replace(str(jobs.storage), "<storage>")


def _scrub_json(value, jobs: JobsState, path: str | None, filename: str | None):
    """`value` with the storage paths in its strings replaced (example ids are `STORAGE/files/file-….jsonl:3`)."""
    text = json.dumps(value)
    if path and filename:
        text = text.replace(json.dumps(path)[1:-1], json.dumps(filename)[1:-1])
    return json.loads(text.replace(json.dumps(str(jobs.storage))[1:-1], "<storage>"))


def _options(jobs: JobsState, project: str, model: str | None, file_id: str | None) -> dict:
    job = _job_of(jobs, project, model) if model else None
    default_id, default_split = _default_file(job)
    files = [{"id": f.id, "filename": f.filename, "rows": f.n_rows, "format": f.data_format,
              "split": _split(job, f.id)}
             for f in js.list_files(jobs.store, project, limit=100)[0] if _fits(f)]
    if default_id and not file_id and default_id not in [f["id"] for f in files]:
        default_id = default_split = None  # deleted since the job trained, or not readable for task metrics
    chosen = file_id or default_id
    labels = None
    if chosen:
        data = _read_task(jobs, js.get_file(jobs.store, project, chosen))
        from tuneforge.eval.taskdata import split_record

        labels = suggest_labels([split_record(r)[1] for r in data.records])
    return {"object": "tf.eval.options", "kinds": ["task", "benchmark"], "default_file_id": default_id,
            "default_split": default_split, "file_id": chosen, "files": files, "suggested_labels": labels,
            "benchmarks": _benchmarks(), "default_limit": DEFAULT_LIMIT, "max_limit": MAX_LIMIT,
            "memorization_note": MEMORIZATION}


@router.get("/tf/v1/evals/options")
async def eval_options(request: Request, model: str | None = None, file_id: str | None = None,
                       caller: Caller = Depends(require_api_key)) -> dict:
    """The default file of `model`'s job (validation, else training), the uploaded files task metrics can read,
    the label set the chosen file's answers suggest (null: free text), and the benchmarks available offline."""
    return await anyio.to_thread.run_sync(_options, jobs_state(request), caller.project, model, file_id)


# ---------------------------------------------------------------- starting one
def _sample(records: list, limit: int) -> list:
    """The same seeded sample as `load_task_data(..., limit)`."""
    if limit >= len(records):
        return records
    keep = set(random.Random(SEED).sample(range(len(records)), limit))
    return [r for i, r in enumerate(records) if i in keep]


def _plan(state, jobs: JobsState, project: str, req: EvalCreate) -> tuple[dict, dict]:
    """Everything checked before anything runs: (the eval record, what the worker needs)."""
    from tuneforge.eval.taskdata import check_labels, split_record

    entry = state.catalog.find(req.model, project)
    if entry is None:
        raise model_not_found(req.model)
    if entry.kind == "base":
        raise invalid("model", f"{req.model} is the base; evaluate a fine-tuned model, which is compared with it")
    if not state.pool.base.tokenizer.chat_template:
        raise invalid("model", "the base has no chat template, so task prompts cannot be rendered as in training; "
                               "start the server with --template")
    job = _job_of(jobs, project, req.model)
    limit = req.limit or DEFAULT_LIMIT
    rec = {"id": f"eval-{time.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}", "object": "tf.eval",
           "project": project, "model": req.model, "base": state.catalog.base.id, "kind": req.kind,
           "job_id": job.id if job else None, "job_run_id": job.run_id if job else None, "limit": limit,
           "status": "queued", "created_at": int(time.time()), "started_at": None, "finished_at": None,
           "progress": {"done": 0, "total": 0, "phase": "queued"}, "error": None, "note": None, "result": None,
           "run_id": None}
    work = {"entry": entry}
    if req.kind == "benchmark":
        from tuneforge.eval.tasks import load_task

        names = [b["name"] for b in _benchmarks()]
        if req.benchmark not in names:
            raise invalid("benchmark", f"benchmark {req.benchmark!r} is not available on this server; "
                                       f"available: {', '.join(names) or 'none'}")
        try:
            task = load_task(req.benchmark, limit=limit, seed=SEED)
        except TuneforgeError as err:
            raise invalid("benchmark", _scrub(str(err), jobs)) from None
        rec.update(task=req.benchmark, benchmark=req.benchmark, n=len(task.items), scoring="multiple_choice",
                   file_id=None, filename=None, split=None, labels=None)
        work["task"] = task
        return rec, work
    file_id, _ = (req.file_id, None) if req.file_id else _default_file(job)
    if not file_id:
        raise invalid("file_id", f"{req.model} has no job on this server to take its data from; pass file_id")
    row = js.get_file(jobs.store, project, file_id)
    if not _fits(row):
        raise invalid("file_id", f"{row.filename} holds {row.data_format} rows; task metrics need conversations "
                                 f"that end with the answer (chat, alpaca, sharegpt)", code="invalid_file_format")
    data = _read_task(jobs, row)
    refs = [split_record(r)[1] for r in data.records]
    labels = None
    if req.scoring != "text":
        labels = req.labels or suggest_labels(refs)
        if labels is None and req.scoring == "labels":
            raise invalid("labels", f"the answers of {row.filename} are not a few short labels; pass labels or "
                                    f"score them as text")
    records = _sample(data.records, limit)
    if labels is not None:
        try:
            check_labels(records, labels)
        except TuneforgeError as err:
            raise invalid("labels", _scrub(str(err), jobs, str(jobs.storage / row.path), row.filename)) from None
    split = _split(job, file_id)
    rec.update(task=Path(row.filename).stem, benchmark=None, n=len(records), file_id=file_id,
               filename=row.filename, split=split, labels=labels,
               scoring="classification" if labels else "generation",
               note=MEMORIZATION if split == "training" else None)
    work.update(records=records, labels=labels, fingerprint=data.fingerprint, refs=refs,
                path=str(jobs.storage / row.path))
    return rec, work


@router.post("/tf/v1/evals")
async def create_eval(req: EvalCreate, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """Check the request (model, file or benchmark, labels) and start the evaluation in the background; poll
    GET /tf/v1/evals/{id} for its progress and result."""
    state, jobs = request.app.state.tuneforge, jobs_state(request)
    rec, work = await anyio.to_thread.run_sync(_plan, state, jobs, caller.project, req)
    rec["progress"]["total"] = 2 * rec["n"]
    _save(jobs, rec)
    with _ACTIVE_LOCK:
        _ACTIVE[rec["id"]] = rec
    threading.Thread(target=_worker, args=(state, jobs, rec, work), name=rec["id"], daemon=True).start()
    return _public(rec)


@router.get("/tf/v1/evals")
async def list_evals(request: Request, model: str | None = None, limit: int = Query(20, ge=1, le=100),
                     caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    found = await anyio.to_thread.run_sync(_list, jobs, caller.project, model, limit)
    return {"object": "list", "data": [_public(r) for r in found]}


@router.get("/tf/v1/evals/{eval_id}")
async def get_eval(eval_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    return _public(await anyio.to_thread.run_sync(_get, jobs, caller.project, eval_id))


# ---------------------------------------------------------------- running one
def _update(jobs: JobsState, rec: dict, **fields) -> None:
    with _ACTIVE_LOCK:
        rec.update(fields)
        snapshot = json.loads(json.dumps(rec))
    _save(jobs, snapshot)


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
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
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
        _update(jobs, rec, progress={"done": done, "total": rec["progress"]["total"], "phase": side})
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


def _worker(state, jobs: JobsState, rec: dict, work: dict) -> None:
    from tuneforge.eval.compare import compare_task

    folder = _folder(jobs, rec["id"])
    try:
        with _RUN:
            _update(jobs, rec, status="running", started_at=int(time.time()),
                    progress={**rec["progress"], "phase": "base"})
            base = _evaluate_side(state, jobs, rec, work, state.catalog.base, "base", 0)
            tuned = _evaluate_side(state, jobs, rec, work, work["entry"], "tuned", rec["n"])
            cmp = compare_task(rec["task"], base, tuned)
            for name, result in (("base", base), ("tuned", tuned)):
                atomic_write_json(folder / f"results-{name}.json", {k: v for k, v in result.items()
                                                                   if k not in ("path",)}, indent=1)
            atomic_write_json(folder / "compare.json", cmp, indent=1)
            settings = {"max_new_tokens": work.get("max_new_tokens"), "chunk": CHUNK, "seed": SEED,
                        "mode": "score" if rec["scoring"] == "classification" else None}
            summary = _scrub_json(_summary(cmp, base, tuned, settings), jobs, work.get("path"), rec["filename"])
            try:
                run_id = _record(jobs, rec, work, base, tuned, folder, state.catalog.base.root)
            except Exception:  # noqa: BLE001 - the registry is informative; the result is on disk
                run_id = None
            _update(jobs, rec, status="succeeded", finished_at=int(time.time()), result=summary, run_id=run_id,
                    progress={**rec["progress"], "phase": "done"})
    except Exception as err:  # noqa: BLE001 - the page shows why, the log has the trace
        import logging

        logging.getLogger("tuneforge.serve").exception("evaluation %s failed", rec["id"])
        message = err.message if isinstance(err, TuneforgeError) else f"{type(err).__name__}: {err}"
        _update(jobs, rec, status="failed", finished_at=int(time.time()), error=_scrub(message, jobs))
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(rec["id"], None)
