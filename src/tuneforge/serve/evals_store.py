"""Where evaluations are kept (routes_eval, evals_runner): as JSON in the storage folder (`evals/<id>/eval.json`),
so a reload or a restarted server shows them again, and in memory while they are queued or running in this process
(ACTIVE, the record the runner updates). One left queued or running by a server that stopped reads as failed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tuneforge.serve.errors import APIError
from tuneforge.serve.jobs_state import JobsState
from tuneforge.utils.io import atomic_write_json

ACTIVE: dict[str, dict] = {}  # evaluations queued or running in this process: id -> record
ACTIVE_LOCK = threading.Lock()


def eval_folder(jobs: JobsState, eval_id: str) -> Path:
    return jobs.storage / "evals" / eval_id


def save(jobs: JobsState, rec: dict) -> None:
    atomic_write_json(eval_folder(jobs, rec["id"]) / "eval.json", rec, indent=1)


def update(jobs: JobsState, rec: dict, **fields) -> None:
    """Change fields of an active record and save a snapshot of it."""
    with ACTIVE_LOCK:
        rec.update(fields)
        snapshot = json.loads(json.dumps(rec))
    save(jobs, snapshot)


def _load(jobs: JobsState, eval_id: str) -> dict | None:
    with ACTIVE_LOCK:
        live = ACTIVE.get(eval_id)
        if live is not None:
            return json.loads(json.dumps(live))
    try:
        rec = json.loads((eval_folder(jobs, eval_id) / "eval.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("status") in ("queued", "running"):  # left by a server that stopped
        rec.update(status="failed", error="the server stopped before this evaluation finished; run it again")
    return rec


def public(rec: dict) -> dict:
    """The record as answered: without the project and the job's run id."""
    return {k: v for k, v in rec.items() if k not in ("project", "job_run_id")}


def get_eval(jobs: JobsState, project: str, eval_id: str) -> dict:
    """The project's evaluation `eval_id` (404 when there is none, or it is another project's)."""
    rec = _load(jobs, eval_id) if eval_id.startswith("eval-") and eval_id[5:].isalnum() else None
    if rec is None or rec.get("project") != project:
        raise APIError(404, f"no evaluation {eval_id}", code="not_found")
    return rec


def list_evals(jobs: JobsState, project: str, model: str | None, limit: int) -> list[dict]:
    """The project's evaluations (of `model`), newest first."""
    root = jobs.storage / "evals"
    ids = sorted((p.name for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []
    out = []
    for eval_id in ids:
        rec = _load(jobs, eval_id)
        if rec and rec.get("project") == project and (model is None or rec.get("model") == model):
            out.append(rec)
    out.sort(key=lambda r: -r["created_at"])
    return out[:limit]
