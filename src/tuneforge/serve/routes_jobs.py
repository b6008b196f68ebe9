"""/v1/fine_tuning/jobs: create (checked at once: files, method, settings), list, retrieve, cancel, pause,
resume, events and checkpoints. Jobs train in worker processes (tuneforge.jobs); these routes only read and write
the job's record and wake the scheduler."""

from __future__ import annotations

import re
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.jobs import store as js
from tuneforge.jobs.files import new_id
from tuneforge.jobs.spec import FILE_KINDS, JobInputs, normalize_method, run_config, validate_config
from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.errors import invalid
from tuneforge.serve.jobs_objects import checkpoint_object, event_object, job_object, on_disk, page
from tuneforge.serve.jobs_state import jobs_state
from tuneforge.utils.errors import ConfigError, ModelError

router = APIRouter()
_METADATA = re.compile(r"^metadata\[(.+)\]$")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.\-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    method: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    integrations: list[Any] | None = None
    tuneforge: dict[str, Any] | None = Field(None, description="tuneforge config keys, e.g. {'method.type': 'full'}")


def _training_file(jobs, project: str, file_id: str, param: str, kinds: tuple[str, ...], method: str):
    from tuneforge.jobs.files import Checked

    try:
        row = js.get_file(jobs.store, project, file_id)
    except js.NotFound:
        raise invalid(param, f"{param} {file_id} does not exist (upload it with POST /v1/files)",
                      code="file_not_found") from None
    kind = Checked(row.data_format or "", row.n_rows or 0, [], 0).kind
    if kind not in kinds:
        need = {"chat": "conversations ending with an assistant answer", "pairwise": "preference pairs"}
        raise invalid(param, f"{param} {file_id} ({row.filename}) holds {row.data_format} rows; a {method} job "
                             f"trains on {' or '.join(need.get(k, k) for k in kinds)}", code="invalid_file_format")
    return jobs.storage / row.path


def base_source(req: JobCreate, jobs, state) -> tuple[str, str]:
    """(what the job's config loads as its base, its chat template): the served base, or with `other_bases` any
    model this machine can load."""
    from tuneforge.serve.other_bases import resolve_base

    base_id = state.catalog.base.id
    if req.model == base_id:
        return state.catalog.base.root, jobs.settings.template
    if not jobs.settings.other_bases:
        raise invalid("model", f"this server fine-tunes the model it serves, `{base_id}`; got `{req.model}` (start "
                               f"it with --other-bases to fine-tune other models)", code="model_not_available")
    try:
        return resolve_base(req.model), "auto"
    except ModelError as err:
        raise invalid("model", err.one_line, code="model_not_found") from None


def _check_request(req: JobCreate) -> None:
    if req.integrations:
        raise invalid("integrations", "integrations (W&B) are not supported; tuneforge records every job in its "
                                      "registry (and output.report_to can feed trackers)", code="unsupported_parameter")
    for key in req.metadata or {}:
        if len(key) > 64 or len(req.metadata[key]) > 512:
            raise invalid("metadata", "metadata keys are at most 64 characters and values at most 512")


def _create(req: JobCreate, jobs, state, project: str) -> dict:
    from tuneforge.jobs.graders import grader_rewards

    source, template = base_source(req, jobs, state)  # a model this server cannot train is refused first
    _check_request(req)
    try:
        method = normalize_method(req.method, req.hyperparameters)
    except ConfigError as err:
        raise invalid("method", err.message) from None
    kinds = FILE_KINDS[method["type"]]
    train_path = _training_file(jobs, project, req.training_file, "training_file", kinds, method["type"])
    val_path = (_training_file(jobs, project, req.validation_file, "validation_file", kinds, method["type"])
                if req.validation_file else None)
    job_id = new_id("ftjob")
    seed = req.seed if req.seed is not None else 42
    inputs = JobInputs(source, template, str(train_path),
                       str(val_path) if val_path else None, str(jobs.job_dir(job_id) / "run"))
    try:
        rewards = grader_rewards(method, jobs.settings.python_grader) if method["type"] == "reinforcement" else None
        config = run_config(method, seed, req.tuneforge, inputs, rewards)
        validate_config(config)
    except ConfigError as err:
        param = "tuneforge" if req.tuneforge and "tuneforge" in err.message else "method"
        raise invalid(param, err.one_line, code="invalid_hyperparameters")
    job = js.add_job(jobs.store, id=job_id, project=project, model=req.model, training_file=req.training_file,
                     validation_file=req.validation_file, suffix=req.suffix or None, seed=seed, meta=req.metadata,
                     method=method, overrides=req.tuneforge, status="validating_files",
                     resolved={"config": config}, run_dir=inputs.run_dir)
    js.add_event(jobs.store, job_id, f"Validating training file: {req.training_file}"
                 + (f" and validation file: {req.validation_file}" if req.validation_file else ""))
    job = js.update_job(jobs.store, job_id, status="queued")
    js.add_event(jobs.store, job_id, "Files validated, moving job to queued state")
    jobs.scheduler.wake()
    return job_object(job)


@router.post("/v1/fine_tuning/jobs")
async def create_job(req: JobCreate, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    return await anyio.to_thread.run_sync(_create, req, jobs, request.app.state.tuneforge, caller.project)


@router.get("/v1/fine_tuning/jobs")
async def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                    caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    metadata = {m.group(1): v for k, v in request.query_params.items() if (m := _METADATA.match(k))}
    rows, more = await anyio.to_thread.run_sync(lambda: js.list_jobs(jobs.store, caller.project, after=after,
                                                                     limit=limit, metadata=metadata))
    return page([job_object(r) for r in rows], more)


@router.get("/v1/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    return job_object(await anyio.to_thread.run_sync(js.get_job, jobs.store, caller.project, job_id))


async def _act(job_id: str, request: Request, caller: Caller, action: str) -> dict:
    jobs = jobs_state(request)
    job = await anyio.to_thread.run_sync(js.transition, jobs.store, caller.project, job_id, action)
    jobs.scheduler.wake()
    return job_object(job)


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    return await _act(job_id, request, caller, "cancel")


@router.post("/v1/fine_tuning/jobs/{job_id}/pause")
async def pause_job(job_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    return await _act(job_id, request, caller, "pause")


@router.post("/v1/fine_tuning/jobs/{job_id}/resume")
async def resume_job(job_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    return await _act(job_id, request, caller, "resume")


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
async def list_events(job_id: str, request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=1000),
                      caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)

    def read():
        js.get_job(jobs.store, caller.project, job_id)
        return js.list_events(jobs.store, job_id, after=after, limit=limit)

    rows, more = await anyio.to_thread.run_sync(read)
    return page([event_object(r) for r in rows], more)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(job_id: str, request: Request, after: str | None = None,
                           limit: int = Query(10, ge=1, le=100), caller: Caller = Depends(require_api_key)) -> dict:
    """Checkpoints still on disk (a run keeps its last few), newest first; each id is a servable model."""
    jobs = jobs_state(request)

    def read():
        js.get_job(jobs.store, caller.project, job_id)
        rows, more = js.list_checkpoints(jobs.store, job_id, after=after, limit=limit)
        return [r for r in rows if on_disk(r.path)], more

    rows, more = await anyio.to_thread.run_sync(read)
    return page([checkpoint_object(r) for r in rows], more, ids=True)
