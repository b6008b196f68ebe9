"""/tf/v1/...: read-only answers the web UI (tuneforge.ui) needs beside the OpenAI API, each from the library
function the CLI uses for the same question, so the UI never has its own idea of what a run does:

    GET  /tf/v1/base                       the served base: parameters, context length, chat template
    GET  /tf/v1/options                    the stages a job can train × the methods the compatibility table allows,
                                           one sentence each (`tuneforge stages` / `tuneforge methods`)
    GET  /tf/v1/files/{id}/preview         rendered samples with trained tokens marked (`tuneforge data preview`)
    GET  /tf/v1/files/{id}/doctor          the dataset doctor's findings (`tuneforge data check`)
    POST /tf/v1/plan                       the YAML a job request would run, its resolved "auto" values and memory
                                           estimate (`tuneforge doctor CONFIG`); creates nothing

Training itself goes through POST /v1/fine_tuning/jobs only.
"""

from __future__ import annotations

import json

import anyio
from fastapi import APIRouter, Depends, Query, Request

from tuneforge.jobs import store as js
from tuneforge.jobs.files import Checked
from tuneforge.jobs.spec import FILE_KINDS, METHOD_STAGES, JobInputs, normalize_method, run_config
from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.errors import invalid
from tuneforge.serve.jobs_state import jobs_state
from tuneforge.serve.routes_jobs import JobCreate, base_source
from tuneforge.utils.errors import TuneforgeError

router = APIRouter()
_NEW_JOB = "ftjob-new"  # the run folder's job id before the job exists


def _device(state) -> str:
    return str(state.pool.base.device).split(":")[0]


def _parameters(state) -> int:
    return sum(p.numel() for p in state.pool.base.model.parameters())


@router.get("/tf/v1/base")
async def base_model(request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    from tuneforge.serve.other_bases import suggestions

    state = request.app.state.tuneforge
    engine = state.pool.base
    others = await anyio.to_thread.run_sync(suggestions) if state.settings.other_bases else []
    return {"id": state.catalog.base.id, "root": state.catalog.base.root, "parameters": _parameters(state),
            "other_bases": state.settings.other_bases, "suggestions": [m for m in others if m != state.catalog.base.id],
            "context_length": state.base_context, "chat_template": bool(engine.tokenizer.chat_template),
            "template": state.settings.template, "device": str(engine.device), "dtype": str(engine.model.dtype),
            "jobs": state.jobs is not None, "log_requests": state.settings.log_requests}


@router.get("/tf/v1/models/describe")
async def describe_model(request: Request, name: str = Query(..., min_length=1, max_length=1000),
                         caller: Caller = Depends(require_api_key)) -> dict:
    """Another base a job may fine-tune (`--other-bases`): its size, context length and chat template, read from
    its config and tokenizer without loading the weights."""
    from tuneforge.serve.other_bases import describe

    state = request.app.state.tuneforge
    if not state.settings.other_bases and name != state.catalog.base.id:
        raise invalid("name", "this server fine-tunes only the model it serves (start it with --other-bases)",
                      code="model_not_available")
    try:
        facts = await anyio.to_thread.run_sync(describe, name)
    except TuneforgeError as err:
        raise invalid("name", err.one_line, code="model_not_found") from None
    return facts


def _kind_of(row) -> str:
    return Checked(row.data_format or "", row.n_rows or 0, [], 0).kind


def _options(device: str, kind: str | None) -> dict:
    from tuneforge.config import compat
    from tuneforge.methods import METHODS
    from tuneforge.stages import STAGES

    stages = []
    for job_method, stage_name in METHOD_STAGES.items():
        stage = STAGES[stage_name]
        fits = kind is None or kind in FILE_KINDS[job_method]
        runs = [m for m in METHODS if compat.supported(stage_name, m, device=device)]
        stages.append({"method": job_method, "stage": stage_name, "description": stage.description,
                       "fits_data": fits, "methods": runs})
    methods = [{"name": m.name, "description": m.description, "artifact": m.artifact} for m in METHODS.values()]
    return {"stages": stages, "methods": methods, "default": {"method": "supervised", "type": "lora"}}


@router.get("/tf/v1/options")
async def options(request: Request, file_id: str | None = None, caller: Caller = Depends(require_api_key)) -> dict:
    """The stages a job can train (those whose data the file holds are marked) and, per stage, the methods the
    compatibility table lets run on this server's device."""
    state = request.app.state.tuneforge
    kind = None
    if file_id:
        jobs = jobs_state(request)
        kind = _kind_of(await anyio.to_thread.run_sync(js.get_file, jobs.store, caller.project, file_id))
    return {"kind": kind, **_options(_device(state), kind)}


def _default_method(kind: str) -> str:
    return next((m for m, kinds in FILE_KINDS.items() if kind in kinds), "supervised")


# A preview of reinforcement prompts renders them before any grader is chosen: this one only makes the config valid.
_PREVIEW_GRADER = {"type": "string_check", "name": "preview", "input": "{{sample.output_text}}", "reference": "",
                   "operation": "eq"}


def _rewards(method: dict, allow_python: bool, preview: bool) -> list[dict] | None:
    from tuneforge.jobs.graders import grader_rewards

    if method["type"] != "reinforcement":
        return None
    params = method.get("reinforcement") or {}
    if preview and not params.get("grader"):
        method = {**method, "reinforcement": {**params, "grader": _PREVIEW_GRADER}}
    return grader_rewards(method, allow_python)


def _config(state, jobs, row, method: dict, overrides: dict | None, run_dir: str, preview: bool = False,
            base: tuple[str, str] | None = None):
    """The validated RunConfig a job on this file would train (as routes_jobs builds it); `base`: (source,
    template) of another base than the served one."""
    from tuneforge.jobs.spec import validate_config

    source, template = base or (state.catalog.base.root, jobs.settings.template)
    inputs = JobInputs(source, template, str(jobs.storage / row.path), None, run_dir)
    try:
        config = run_config(method, 42, overrides, inputs, _rewards(method, jobs.settings.python_grader, preview))
        return config, validate_config(config)
    except TuneforgeError as err:
        raise invalid("tuneforge", err.one_line, code="invalid_hyperparameters") from None


def _shown_source(source: str, path, filename: str) -> str:
    """`STORAGE/files/file-….jsonl:3` → `name.jsonl:3`: the file as the person uploaded it, and its line."""
    return source.replace(str(path), filename)


def _preview(state, jobs, project: str, file_id: str, n: int) -> dict:
    from tuneforge.data.preview import segments
    from tuneforge.stages.preview import preview

    row = js.get_file(jobs.store, project, file_id)
    kind = _kind_of(row)
    method = {"type": _default_method(kind)}
    _, cfg = _config(state, jobs, row, method, None, str(jobs.job_dir(_NEW_JOB) / "run"), preview=True)
    try:
        samples, stats, tok = preview(cfg, n)
    except TuneforgeError as err:
        raise invalid("file_id", err.one_line) from None
    shown = [{"source": _shown_source(r.source, jobs.storage / row.path, row.filename), "tokens": len(r.input_ids),
              "truncated": bool(r.truncated),
              "segments": [{"text": s.text, "trained": s.trained} for s in segments(r, tok)]} for r in samples]
    return {"file_id": file_id, "filename": row.filename, "format": row.data_format, "kind": kind,
            "rows": row.n_rows, "stage": cfg.stage.type, "samples": shown,
            "tokens": stats["tokens"], "trained_tokens": stats["trained_tokens"]}


@router.get("/tf/v1/files/{file_id}/preview")
async def file_preview(file_id: str, request: Request, n: int = Query(3, ge=1, le=20),
                       caller: Caller = Depends(require_api_key)) -> dict:
    """The first n rows rendered as the stage for this data trains them: template, loss mask, truncation, EOS."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(_preview, state, jobs_state(request), caller.project, file_id, n)


def _doctor(state, jobs, project: str, file_id: str) -> dict:
    from tuneforge.data.doctor.check import check_dataset
    from tuneforge.data.doctor.result import CheckOptions

    row = js.get_file(jobs.store, project, file_id)
    opts = CheckOptions(model=state.catalog.base.root, template=jobs.settings.template,
                        prompts=_kind_of(row) == "prompts")
    try:
        res = check_dataset(str(jobs.storage / row.path), opts)
    except TuneforgeError as err:
        raise invalid("file_id", _shown_source(err.message, jobs.storage / row.path, row.filename)) from None
    summary = json.loads(json.dumps(res.summary()).replace(json.dumps(str(jobs.storage / row.path))[1:-1],
                                                          json.dumps(row.filename)[1:-1]))
    summary["dataset"] = {k: v for k, v in summary["dataset"].items() if k not in ("target", "files")}
    summary["dataset"]["name"] = row.filename
    return summary


@router.get("/tf/v1/files/{file_id}/doctor")
async def file_doctor(file_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """Duplicates, empty fields, lengths in the base's tokens, label balance, languages: what to fix first."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(_doctor, state, jobs_state(request), caller.project, file_id)


def _memory(cfg, resolved, device: str) -> dict:
    from tuneforge.methods import method_and_params
    from tuneforge.models.memory import TrainSetting, estimate_training_memory, read_model_shape

    shape = read_model_shape(cfg.model.name)
    method, params = method_and_params(cfg)
    setting = TrainSetting(method=method.name, batch_size=resolved.batch_size, seq_len=cfg.data.cutoff_len,
                           precision=resolved.precision, gradient_checkpointing=resolved.gradient_checkpointing,
                           device="cuda" if device == "cuda" else "cpu", frozen_base=method.frozen_base,
                           base_bytes_per_weight=method.base_bytes_per_weight(params),
                           trainable=method.estimate_trainable(shape, params),
                           trainable_layers=getattr(params, "trainable_layers", 2),
                           train_embeddings=getattr(params, "train_embeddings", False))
    est = estimate_training_memory(shape, setting)
    return {"bytes": est.total, "trainable_parameters": est.trainable_params,
            "trainable_share": est.trainable_params / max(shape.n_params, 1)}


def _plan(state, jobs, project: str, req: JobCreate) -> dict:
    import yaml

    from tuneforge.config.auto import resolve_auto
    from tuneforge.methods import method_and_params
    from tuneforge.models.memory import read_model_shape
    from tuneforge.stages import stage_and_params

    row = js.get_file(jobs.store, project, req.training_file)
    try:
        method = normalize_method(req.method, req.hyperparameters)
    except TuneforgeError as err:
        raise invalid("method", err.message) from None
    if _kind_of(row) not in FILE_KINDS[method["type"]]:
        raise invalid("method", f"{row.filename} holds {row.data_format} rows, which a {method['type']} job "
                                f"cannot train on", code="invalid_file_format")
    run_dir = str(jobs.job_dir(_NEW_JOB) / "run")
    base = base_source(req, jobs, state)
    config, cfg = _config(state, jobs, row, method, req.tuneforge, run_dir, base=base)
    config.pop("tags", None)
    device = _device(state)
    stage, _ = stage_and_params(cfg)
    served = base[0] == state.catalog.base.root
    resolved = resolve_auto(cfg.train, method_and_params(cfg)[0], row.n_rows or 1, device,
                            lr_scale=stage.lr_scale, model_params=_parameters(state) if served
                            else read_model_shape(cfg.model.name).n_params)
    try:
        memory = _memory(cfg, resolved, device)
    except (TuneforgeError, OSError, ValueError, KeyError):
        memory = None
    return {"yaml": yaml.safe_dump(config, sort_keys=False, allow_unicode=True), "run_dir": run_dir,
            "resolved": {"epochs": resolved.epochs, "batch_size": resolved.batch_size,
                         "learning_rate": resolved.learning_rate, "chosen": resolved.chosen},
            "memory": memory, "device": device}


@router.post("/tf/v1/plan")
async def plan(req: JobCreate, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """What POST /v1/fine_tuning/jobs with this body would train, without creating the job: the config as YAML
    (the same file works with `tuneforge train`), the resolved auto values before the data are tokenized (the
    run's own resolution, from token counts, may differ for short answers) and the training memory estimate."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(_plan, state, jobs_state(request), caller.project, req)

