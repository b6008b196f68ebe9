"""/tf/v1/runs...: the run registry for the web UI's Runs section (tuneforge.ui), from the library functions
`tuneforge runs` and `tuneforge export` use:

    GET  /tf/v1/runs                  runs newest first: status, stage and method, base, times, final metrics,
                                      parent and children, the fine-tuning job that made it
    GET  /tf/v1/runs/{id}             one run: its config as YAML, metric series, lineage tree, evals, artifacts
                                      and which actions apply (with the reason when one does not)
    POST /tf/v1/runs/{id}/export      merge the run's adapter into its base (or re-save a full model) into a new
                                      folder beside the run and check parity (`tuneforge export`); never overwrites
    POST /tf/v1/runs/{id}/resume      continue the job that made the run: a paused job resumes; a failed or
                                      cancelled one that left a checkpoint continues from it as a new job

Training goes through the jobs scheduler only: resume creates or requeues a job, it never trains here.

This module is the HTTP layer only; the work runs in a thread, in: runs_view (who sees which run, a run's row),
runs_detail (one run), runs_actions (which actions apply, and why), runs_export and runs_resume.
"""

from __future__ import annotations

from typing import Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.errors import APIError, invalid
from tuneforge.serve import runs_detail, runs_export, runs_resume, runs_view
from tuneforge.serve.jobs_state import jobs_state
from tuneforge.serve.storage_paths import hide_storage
from tuneforge.utils.errors import TuneforgeError

router = APIRouter()


@router.get("/tf/v1/runs")
async def list_runs(request: Request, limit: int = Query(50, ge=1, le=500), status: str | None = None,
                    kind: str | None = None, caller: Caller = Depends(require_api_key)) -> dict:
    """The caller's runs, newest first (`status`, `kind` filter them), each with its final metrics and links."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(runs_view.list_page, state, jobs_state(request), caller.project, limit,
                                          status, kind)


@router.get("/tf/v1/runs/{run_id}")
async def get_run(run_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """One run with its config (YAML), loss series, lineage, evals, artifacts and the actions that apply to it."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(runs_detail.run_detail, state, jobs_state(request), caller.project, run_id)


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    name: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$",
                             description="the export's folder name under the run's exports/ (default merged, "
                                         "merged-2, ...)")
    check_samples: int = Field(4, ge=1, le=16)


@router.post("/tf/v1/runs/{run_id}/export")
async def export_run(run_id: str, request: Request, req: ExportRequest | None = None,
                     caller: Caller = Depends(require_api_key)) -> dict:
    """Merge the run's adapter into its base (a full fine-tune: re-save it) as a standalone Hugging Face folder in
    the run's exports/ and check it reproduces the run's model (`tuneforge export`); recorded as a child run."""
    from tuneforge.export.parity import ParityError

    state, jobs, req = request.app.state.tuneforge, jobs_state(request), req or ExportRequest()
    try:
        return await anyio.to_thread.run_sync(runs_export.export_run, state, jobs, caller.project, run_id,
                                              req.dtype, req.name, req.check_samples)
    except ParityError as err:
        raise APIError(422, hide_storage(err.message, jobs.storage), code="parity_failed") from None
    except TuneforgeError as err:
        message = err.one_line
        raise invalid(None, hide_storage(message, jobs.storage), code="export_failed") from None


@router.post("/tf/v1/runs/{run_id}/resume")
async def resume_run(run_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """Continue the fine-tuning job that made the run, through the jobs scheduler: a paused job resumes (as
    POST /v1/fine_tuning/jobs/{id}/resume); a failed or cancelled one that left a checkpoint continues from it as
    a new job with the same file and settings (the old job stays as it ended; its new run is a child of the old)."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(runs_resume.resume_run, state, jobs_state(request), caller.project, run_id)
