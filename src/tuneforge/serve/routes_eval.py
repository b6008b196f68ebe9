"""/tf/v1/evals: before / after evaluations of a fine-tuned model against the served base, for the web UI's
Evaluate step (the same library as `tuneforge eval task` / `bench` / `compare`):

    GET  /tf/v1/evals/options?model=&file_id=   what can be evaluated: the default file of the model's job, the
                                                files that fit, the labels the file's answers suggest, and the
                                                benchmarks whose data are on this machine
    POST /tf/v1/evals                            start one in the background; answers the eval object (queued)
    GET  /tf/v1/evals?model=                     the caller's evaluations, newest first
    GET  /tf/v1/evals/{id}                       status, progress and, once done, the comparison

An evaluation scores the base and then the fine-tuned model on the same rows (task metrics of an uploaded file, or a
multiple-choice benchmark), a few rows at a time, so chat keeps answering while it runs; one runs at a time.

This module is the HTTP layer only; the work is in: evals_options (what can be evaluated), evals_plan (checking a
request), evals_runner (the background run) and evals_store (the records on disk and in memory).
"""

from __future__ import annotations

from typing import Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve import evals_options, evals_plan, evals_runner, evals_store
from tuneforge.serve.evals_options import DEFAULT_LIMIT, MAX_LIMIT
from tuneforge.serve.jobs_state import jobs_state

router = APIRouter()


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


@router.get("/tf/v1/evals/options")
async def eval_options(request: Request, model: str | None = None, file_id: str | None = None,
                       caller: Caller = Depends(require_api_key)) -> dict:
    """The default file of `model`'s job (validation, else training), the uploaded files task metrics can read,
    the label set the chosen file's answers suggest (null: free text), and the benchmarks available offline."""
    jobs = jobs_state(request)
    return await anyio.to_thread.run_sync(evals_options.eval_options, jobs, caller.project, model, file_id)


@router.post("/tf/v1/evals")
async def create_eval(req: EvalCreate, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """Check the request (model, file or benchmark, labels) and start the evaluation in the background; poll
    GET /tf/v1/evals/{id} for its progress and result."""
    state, jobs = request.app.state.tuneforge, jobs_state(request)
    rec, work = await anyio.to_thread.run_sync(evals_plan.plan_eval, state, jobs, caller.project, req)
    evals_runner.start(state, jobs, rec, work)
    return evals_store.public(rec)


@router.get("/tf/v1/evals")
async def list_evals(request: Request, model: str | None = None, limit: int = Query(20, ge=1, le=100),
                     caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    found = await anyio.to_thread.run_sync(evals_store.list_evals, jobs, caller.project, model, limit)
    return {"object": "list", "data": [evals_store.public(r) for r in found]}


@router.get("/tf/v1/evals/{eval_id}")
async def get_eval(eval_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    found = await anyio.to_thread.run_sync(evals_store.get_eval, jobs, caller.project, eval_id)
    return evals_store.public(found)
