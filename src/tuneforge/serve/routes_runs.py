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

Who sees a run: one made by a fine-tuning job (its `job:ID` tag), or descending from one (its export), belongs to
that job's project. Runs without a job (`tuneforge train` writing to the same registry) are the machine owner's:
they are shown to the default project of a server that does not require API keys, and to nobody else. Paths inside
the server's storage folder are shown relative to it (`<storage>/...`), as the file routes show uploads by name.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.jobs import store as js
from tuneforge.jobs.spec import METHOD_STAGES
from tuneforge.serve.auth import DEFAULT_PROJECT, Caller, require_api_key
from tuneforge.serve.errors import APIError, invalid
from tuneforge.serve.jobs_objects import job_object
from tuneforge.serve.jobs_state import jobs_state
from tuneforge.utils.errors import TuneforgeError

router = APIRouter()
JOB_TAG = "job:"
STORAGE = "<storage>"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# The final values a run's row shows (registry keys as the trainer logs them), in this order.
SHOWN_METRICS = ("loss", "eval_loss", "mean_token_accuracy", "eval_mean_token_accuracy", "rewards/accuracies",
                 "rewards/margins", "reward")
SERIES_KEYS = ("loss", "eval_loss")
_MAX_POINTS = 400
_STAGE_JOBS = {stage: method for method, stage in METHOD_STAGES.items()}
_exporting: set[str] = set()  # runs being exported right now (one export of a run at a time)
_exporting_lock = threading.Lock()


# --- who sees what --------------------------------------------------------------------------------------------------


class _World:
    """The runs a caller may see, with the job each belongs to (read once per request)."""

    def __init__(self, state, jobs, project: str):
        from tuneforge.registry import queries

        self.state, self.jobs, self.project = state, jobs, project
        self.storage = str(jobs.storage)
        every = queries.list_runs(jobs.store)  # newest first; reaps runs whose process died
        self.all = {r.id: r for r in every}
        rows, _ = js.list_jobs(jobs.store, project, limit=1 << 30)
        self.job_rows = {j.id: j for j in rows}
        local = not state.settings.require_keys and project == DEFAULT_PROJECT
        self.job_of: dict[str, str | None] = {}
        self.runs = [r for r in every if self._visible(r, local)]
        self.by_id = {r.id: r for r in self.runs}

    def _owner(self, run) -> str | None:
        """The job id of the run or of its nearest ancestor made by a job."""
        seen = set()
        while run is not None and run.id not in seen:
            seen.add(run.id)
            tag = next((t for t in run.tags if t.startswith(JOB_TAG)), None)
            if tag:
                return tag[len(JOB_TAG):]
            run = self.all.get(run.parent_run_id) if run.parent_run_id else None
        return None

    def _visible(self, run, local: bool) -> bool:
        job_id = self._owner(run)
        self.job_of[run.id] = job_id
        return job_id in self.job_rows if job_id else local

    def job(self, run_id: str):
        """The fine-tuning job row that made this run itself (not an ancestor's), or None."""
        run = self.by_id[run_id]
        tag = next((t for t in run.tags if t.startswith(JOB_TAG)), None)
        return self.job_rows.get(tag[len(JOB_TAG):]) if tag else None

    def get(self, run_id: str):
        if not _RUN_ID.match(run_id) or run_id not in self.by_id:
            raise APIError(404, f"No such run: {run_id}", code="not_found")  # another project's run too
        return self.by_id[run_id]

    def config(self, run_id: str) -> dict:
        from tuneforge.registry import queries

        return queries.get_run(self.jobs.store, run_id).config or {}

    def children(self, run_id: str) -> list[str]:
        return [r.id for r in reversed(self.runs) if r.parent_run_id == run_id]

    def shown(self, text):
        """A string with the server's storage folder written as <storage> (for runs of jobs)."""
        return text.replace(self.storage, STORAGE) if isinstance(text, str) else text

    def shown_deep(self, obj):
        if isinstance(obj, dict):
            return {k: self.shown_deep(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.shown_deep(v) for v in obj]
        return self.shown(obj)

    def base_name(self, base: str | None) -> str | None:
        cat = self.state.catalog.base
        return cat.id if base in (cat.root, cat.id, self.state.settings.model) else base

    def file_of(self, path: str | None):
        """The uploaded file (of this project) stored at `path`, or None."""
        if not path:
            return None
        try:
            rel = str(Path(path).resolve().relative_to(self.jobs.storage))
        except ValueError:
            return None
        rows, _ = js.list_files(self.jobs.store, self.project)
        return next((f for f in rows if f.path == rel), None)


def _epoch(t) -> int | None:
    return int(t.timestamp()) if t is not None else None


def _final(store, run_id: str) -> tuple[dict, int | None]:
    from tuneforge.registry import queries

    series = queries.metric_series(store, run_id)
    values = {k: series[k][-1][2] for k in SHOWN_METRICS if k in series and series[k][-1][2] is not None}
    steps = max((rows[-1][0] for rows in series.values() if rows), default=None)
    return values, steps


def _summary(w: _World, r) -> dict:
    job = w.job(r.id)
    owner = w.job_of.get(r.id)
    metrics, steps = _final(w.jobs.store, r.id)
    name = (job.suffix or job.id) if job else (Path(r.output_dir).name if r.output_dir else r.id)
    datasets = [{"name": _dataset_name(w, d["name"]), "n_records": d["n_records"], "role": d["role"]}
                for d in r.datasets]
    return {"id": r.id, "object": "tuneforge.run", "name": name, "kind": r.kind, "status": r.status,
            "stage": r.stage, "method": r.method, "base_model": w.base_name(r.base_model),
            "created_at": _epoch(r.created_at), "started_at": _epoch(r.started_at), "ended_at": _epoch(r.ended_at),
            "duration_s": r.duration_s, "metrics": metrics, "steps": steps, "error": w.shown(r.error),
            "parent_id": r.parent_run_id if r.parent_run_id in w.by_id else None, "children": w.children(r.id),
            "job": ({"id": job.id, "status": job.status, "fine_tuned_model": job.fine_tuned_model,
                     "training_file": job.training_file} if job else None),
            "owner_job_id": owner, "tags": [t for t in r.tags if not t.startswith(JOB_TAG)], "datasets": datasets}


def _dataset_name(w: _World, name: str | None) -> str | None:
    """An uploaded file's dataset (named by its stored file, `file-…`) by the name it was uploaded as."""
    found = _file_or_none(w, name) if name and name.startswith("file-") else None
    found = found or (w.file_of(name) if name and w.storage in name else None)
    return found.filename if found else w.shown(name)


# --- list and detail ------------------------------------------------------------------------------------------------


def _list(state, jobs, project: str, limit: int, status: str | None, kind: str | None) -> dict:
    w = _World(state, jobs, project)
    rows = [r for r in w.runs if (not status or r.status == status) and (not kind or r.kind == kind)]
    return {"object": "list", "data": [_summary(w, r) for r in rows[:limit]], "has_more": len(rows) > limit}


@router.get("/tf/v1/runs")
async def list_runs(request: Request, limit: int = Query(50, ge=1, le=500), status: str | None = None,
                    kind: str | None = None, caller: Caller = Depends(require_api_key)) -> dict:
    """The caller's runs, newest first (`status`, `kind` filter them), each with its final metrics and links."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(_list, state, jobs_state(request), caller.project, limit, status, kind)


def _series(store, run_id: str) -> dict:
    from tuneforge.registry import queries

    out = {}
    for key, rows in queries.metric_series(store, run_id, list(SERIES_KEYS)).items():
        points = [[step, value] for step, _epoch_, value, _t in rows if value is not None]
        by_step = {}
        for step, value in points:  # a step redone after a resume: the last value counts
            by_step[step] = value
        points = sorted(by_step.items())
        stride = max(1, -(-len(points) // _MAX_POINTS))
        out[key] = [list(p) for p in points[::stride]] + ([list(points[-1])] if (len(points) - 1) % stride else [])
    return out


def _tree(w: _World, node: dict) -> dict | None:
    if node["id"] not in w.by_id:
        return None
    kids = [c for c in (_tree(w, k) for k in node["children"]) if c]
    return {"id": node["id"], "kind": node["kind"], "status": node["status"], "stage": node["stage"],
            "method": node["method"], "focus": node["focus"], "children": kids}


def _visible_tree(w: _World, node: dict) -> dict | None:
    """The lineage from the topmost run the caller may see that leads to the focus run."""
    def holds_focus(n: dict) -> bool:
        return n["focus"] or any(holds_focus(c) for c in n["children"])

    if node["id"] in w.by_id:
        return _tree(w, node)
    return next((_visible_tree(w, c) for c in node["children"] if holds_focus(c)), None)


def _artifacts(w: _World, r) -> list[dict]:
    from tuneforge.registry import queries

    out = []
    root = _run_folder(w, r)
    for a in queries.artifacts(w.jobs.store, r.id):
        path = Path(a["path"])
        name = str(path.relative_to(root)) if root and path.is_relative_to(root) else w.shown(a["path"])
        out.append({"kind": a["kind"], "name": name, "size_bytes": a["size_bytes"], "exists": path.exists()})
    return out


def _detail(state, jobs, project: str, run_id: str) -> dict:
    import yaml

    from tuneforge.registry import lineage, queries

    w = _World(state, jobs, project)
    r = w.get(run_id)
    full = queries.get_run(jobs.store, r.id)
    tree = lineage.lineage(jobs.store, r.id)["tree"]
    return {**_summary(w, r),
            "config_yaml": yaml.safe_dump(w.shown_deep(full.config), sort_keys=False, allow_unicode=True)
            if full.config else None,
            "series": _series(jobs.store, r.id), "lineage": _visible_tree(w, tree),
            "evals": queries.evals(jobs.store, r.id), "artifacts": _artifacts(w, r), "parity": _parity_of(r),
            "actions": {"resume": _can_resume(w, r), "export": _can_export(w, r), "new_run": _new_run(w, r, full)}}


@router.get("/tf/v1/runs/{run_id}")
async def get_run(run_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """One run with its config (YAML), loss series, lineage, evals, artifacts and the actions that apply to it."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(_detail, state, jobs_state(request), caller.project, run_id)


def _parity_of(r) -> dict | None:
    """An export run's parity check, as it wrote it beside the exported model."""
    import json

    from tuneforge.export.merge import EXPORT_META

    if r.kind != "export" or not r.output_dir:
        return None
    try:
        return json.loads((Path(r.output_dir) / EXPORT_META).read_text(encoding="utf-8")).get("parity")
    except (OSError, ValueError, AttributeError):
        return None


# --- what applies to a run ------------------------------------------------------------------------------------------


def _no(why: str, **extra) -> dict:
    return {"ok": False, "why": why, **extra}


def _checkpoint(job) -> Path | None:
    from tuneforge.train.output import latest_checkpoint

    return latest_checkpoint(Path(job.run_dir)) if job and job.run_dir else None


def _can_resume(w: _World, r) -> dict:
    from tuneforge.train.output import checkpoint_step

    job = w.job_rows.get(w.job_of.get(r.id) or "") if r.kind == "train" else None
    if r.kind != "train":
        return _no(f"a {r.kind} run has no training to resume")
    if job is None:
        return _no("this run was not made by a fine-tuning job; resume it where it ran: `tuneforge train` with "
                   "its config (train.resume=auto)")
    if job.status == "paused":
        return {"ok": True, "why": f"{job.id} is paused: resume continues it from its last checkpoint",
                "action": "resume", "job_id": job.id}
    if job.status in ("failed", "cancelled"):
        later = next((j.id for j in w.job_rows.values() if ((j.resolved or {}).get("continues") or {}).get("job")
                      == job.id), None)
        if later:
            return _no(f"{job.id} was continued already as {later}; open that job's run")
        if job.worker_pid is not None or job.worker_ref is not None:
            return _no(f"{job.id} is still stopping; try again in a moment")
        ckpt = _checkpoint(job)
        if ckpt is None:
            return _no(f"{job.id} {job.status} before its first checkpoint: start a new run from its config")
        return {"ok": True, "action": "continue", "job_id": job.id, "step": checkpoint_step(ckpt),
                "why": f"{job.id} {job.status}: a new job continues it from its checkpoint step "
                       f"{checkpoint_step(ckpt)}"}
    if job.status == "succeeded":
        return _no(f"{job.id} finished: start a new run from its config to train again")
    return _no(f"{job.id} is {job.status}: it goes on by itself")


def _run_folder(w: _World, r) -> Path | None:
    """The run's output folder, absolute: where its adapter or model was recorded (output_dir may be relative to
    wherever `tuneforge train` ran), else output_dir when it is absolute."""
    from tuneforge.registry import queries

    for a in queries.artifacts(w.jobs.store, r.id):
        if a["kind"] in ("adapter", "model"):
            return Path(a["path"]).parent
    return Path(r.output_dir) if r.output_dir and Path(r.output_dir).is_absolute() else None


def _final_model(w: _World, r) -> tuple[str | None, Path | None]:
    """(base, adapter folder) or (model folder, None) of a finished training run; (None, None) when missing."""
    from tuneforge.models.addons import is_adapter_dir

    out = _run_folder(w, r)
    if out is not None and is_adapter_dir(out / "adapter"):
        return (w.config(r.id).get("model") or {}).get("name"), out / "adapter"
    if out is not None and (out / "model" / "config.json").is_file():
        return str(out / "model"), None
    return None, None


def _can_export(w: _World, r) -> dict:
    from tuneforge.methods import METHODS

    if r.kind != "train":
        return _no(f"a {r.kind} run has no trained model to export")
    if r.status != "succeeded":
        return _no(f"the run is {r.status}: only a finished training run has a final model to export")
    method = METHODS.get(r.method or "")
    if method is not None and method.artifact == "adapter" and not method.mergeable:
        return _no(f"a {r.method} adapter cannot be merged into its base")
    base, _ = _final_model(w, r)
    if base is None:
        return _no("its adapter or model folder is gone from disk")
    return {"ok": True, "why": "merge into a standalone model and check its logits against the run's model"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _config_keys(config: dict) -> dict:
    """The run config's keys that differ from the defaults, without what the server sets for every job."""
    from tuneforge.config.load import validate
    from tuneforge.jobs.spec import _FIXED

    stage = (config.get("stage") or {}).get("type", "sft")
    method = (config.get("method") or {}).get("type", "lora")
    try:
        defaults = validate({"model": {"name": "x"}, "data": {"train": [{"path": "x.jsonl"}]},
                             "stage": {"type": stage}, "method": {"type": method}}, "defaults").model_dump(mode="json")
    except TuneforgeError:
        defaults = {}
    flat_default = _flat(defaults)
    keys = {}
    for key, value in _flat(config).items():
        if any(key == f or key.startswith(f + ".") for f in _FIXED) or key == "method.type":
            continue
        if key in flat_default and flat_default[key] == value or value is None:
            continue
        keys[key] = value
    return keys


def _new_run(w: _World, r, full) -> dict:
    """What the page's settings need to start a new job like this run: its training file, stage, method,
    hyperparameters and the config keys it set."""
    if r.kind != "train" or not full.config:
        return _no(f"a {r.kind} run has no training config; open the training run it comes from")
    config = full.config
    job_method = _STAGE_JOBS.get(r.stage or "")
    if job_method is None:
        return _no(f"jobs train the stages {', '.join(METHOD_STAGES.values())}; this run trained {r.stage}")
    base = ((config.get("model") or {}).get("name"))
    if w.base_name(base) != w.state.catalog.base.id:
        return _no(f"it trained {base}; this server fine-tunes {w.state.catalog.base.id}")
    job = w.job(r.id)
    hp = {"n_epochs": "auto", "learning_rate_multiplier": "auto", "batch_size": "auto"}
    if job is not None:
        from tuneforge.jobs.spec import hyperparameters

        hp.update({k: v for k, v in hyperparameters(job.method).items() if k in hp and v is not None})
        keys = {k: v for k, v in (job.overrides or {}).items() if k != "method.type"}
        if job.seed != 42:
            keys["train.seed"] = job.seed
        file_row = _file_or_none(w, job.training_file)
    else:
        keys = _config_keys(config)
        train = config.get("train") or {}
        for key, name in (("epochs", "n_epochs"), ("batch_size", "batch_size")):
            if train.get(key) not in (None, "auto"):
                hp[name] = train[key]
                keys.pop(f"train.{key}", None)
        train_data = (config.get("data") or {}).get("train") or []
        file_row = w.file_of(train_data[0].get("path")) if len(train_data) == 1 and isinstance(
            train_data[0], dict) else None
    out = {"stage": job_method, "method": r.method, "hyperparameters": hp, "overrides": keys,
           "suffix": job.suffix if job is not None else None,
           "training_file": {"id": file_row.id, "filename": file_row.filename} if file_row else None}
    if job_method == "reinforcement":
        return _no("reinforcement jobs need a grader, which the page cannot set yet: use the API", **out)
    if file_row is None:
        trained = ", ".join(str(w.shown(d.get("path") if isinstance(d, dict) else d))
                            for d in (config.get("data") or {}).get("train") or []) or "?"
        return _no(f"its training data ({trained}) is not a file uploaded to this server: upload it, then pick it",
                   **out)
    return {"ok": True, "why": "fills the data step and the settings with this run's file and keys", **out}


def _file_or_none(w: _World, file_id: str | None):
    try:
        return js.get_file(w.jobs.store, w.project, file_id) if file_id else None
    except js.NotFound:
        return None


# --- export ---------------------------------------------------------------------------------------------------------


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    name: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$",
                             description="the export's folder name under the run's exports/ (default merged, "
                                         "merged-2, ...)")
    check_samples: int = Field(4, ge=1, le=16)


def _destination(run_folder: Path, name: str | None) -> Path:
    folder = run_folder / "exports"
    if name:
        dest = folder / name
        if dest.exists():
            raise APIError(409, f"exports/{name} exists already; exports never overwrite: choose another name",
                           param="name", code="conflict")
        return dest
    n = 1
    while (folder / ("merged" if n == 1 else f"merged-{n}")).exists():
        n += 1
    return folder / ("merged" if n == 1 else f"merged-{n}")


def _export(state, jobs, project: str, run_id: str, req: ExportRequest) -> dict:
    from tuneforge.export.merge import merge_adapter
    from tuneforge.export.parity import ParityError

    w = _World(state, jobs, project)
    r = w.get(run_id)
    can = _can_export(w, r)
    if not can["ok"]:
        raise APIError(409, f"run {r.id} cannot be exported: {can['why']}", code="conflict")
    with _exporting_lock:
        if r.id in _exporting:
            raise APIError(409, f"run {r.id} is being exported already; wait for that export", code="conflict")
        _exporting.add(r.id)
    try:
        dest = _destination(_run_folder(w, r), req.name)
        model, adapter = _final_model(w, r)
        device = "cpu" if str(state.pool.base.device).startswith("cpu") else "auto"
        # template auto: the one the run trained with, saved beside its adapter or model
        report = merge_adapter(model, str(adapter) if adapter else None, str(dest), dtype=req.dtype,
                               check_samples=req.check_samples, template="auto", device=device,
                               registry_url=jobs.store.url)
    except ParityError as err:
        raise APIError(422, w.shown(err.message), code="parity_failed") from None
    except TuneforgeError as err:
        raise invalid(None, w.shown(err.message + (f" ({err.hint})" if err.hint else "")), code="export_failed")
    finally:
        with _exporting_lock:
            _exporting.discard(r.id)
    return {"object": "tuneforge.export", "run_id": report.run_id, "source_run_id": r.id,
            "folder": f"exports/{dest.name}", "path": w.shown(report.out),
            "dtype": report.dtype, "passed": report.passed, "parity": report.parity.as_dict()}


@router.post("/tf/v1/runs/{run_id}/export")
async def export_run(run_id: str, request: Request, req: ExportRequest | None = None,
                     caller: Caller = Depends(require_api_key)) -> dict:
    """Merge the run's adapter into its base (a full fine-tune: re-save it) as a standalone Hugging Face folder in
    the run's exports/ and check it reproduces the run's model (`tuneforge export`); recorded as a child run."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(_export, state, jobs_state(request), caller.project, run_id,
                                          req or ExportRequest())


# --- resume ---------------------------------------------------------------------------------------------------------


def _resume(state, jobs, project: str, run_id: str) -> dict:
    from tuneforge.jobs.spec import continuation

    w = _World(state, jobs, project)
    r = w.get(run_id)
    can = _can_resume(w, r)
    if not can["ok"]:
        raise APIError(409, f"run {r.id} cannot be resumed: {can['why']}", code="conflict")
    if can["action"] == "resume":
        job = js.transition(jobs.store, project, can["job_id"], "resume")
        jobs.scheduler.wake()
        return {"action": "resumed", "job": job_object(job)}
    old = w.job_rows[can["job_id"]]
    if _file_or_none(w, old.training_file) is None:
        raise APIError(409, f"{old.id}'s training file {old.training_file} was deleted; upload it again and start "
                            f"a new run from this config", code="conflict")
    from tuneforge.jobs.files import new_id

    job_id = new_id("ftjob")
    run_dir = str(jobs.job_dir(job_id) / "run")
    ckpt = _checkpoint(old)
    config = continuation(old.resolved["config"], run_dir, str(ckpt))
    parent = next((x.id for x in w.runs if f"{JOB_TAG}{old.id}" in x.tags), None)  # the job's newest run
    resolved = {"config": config, "continues": {"job": old.id, "step": can["step"]}, "parent_run_id": parent}
    job = js.add_job(jobs.store, id=job_id, project=project, model=old.model, training_file=old.training_file,
                     validation_file=old.validation_file, suffix=old.suffix, seed=old.seed, meta=old.meta,
                     method=old.method, overrides=old.overrides, status="queued", resolved=resolved, run_dir=run_dir)
    js.add_event(jobs.store, job_id, f"Continues {old.id} from its checkpoint step {can['step']}; queued")
    js.add_event(jobs.store, old.id, f"Continued as {job_id} from checkpoint step {can['step']}")
    jobs.scheduler.wake()
    return {"action": "continued", "job": job_object(job), "continues": old.id, "step": can["step"]}


@router.post("/tf/v1/runs/{run_id}/resume")
async def resume_run(run_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """Continue the fine-tuning job that made the run, through the jobs scheduler: a paused job resumes (as
    POST /v1/fine_tuning/jobs/{id}/resume); a failed or cancelled one that left a checkpoint continues from it as
    a new job with the same file and settings (the old job stays as it ended; its new run is a child of the old)."""
    state = request.app.state.tuneforge
    return await anyio.to_thread.run_sync(_resume, state, jobs_state(request), caller.project, run_id)
