"""Which actions apply to a run, each as {"ok", "why", ...}: the reason is shown beside the button, also when it
does not apply. resume (continue the job that made it), export (merge its model) and new_run (what the page's
settings need to start a job like it). runs_detail shows them; runs_export and runs_resume act on them.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.jobs.spec import METHOD_STAGES
from tuneforge.serve.runs_view import CallerRuns
from tuneforge.utils.errors import TuneforgeError

_STAGE_JOBS = {stage: method for method, stage in METHOD_STAGES.items()}


def _no(why: str, **extra) -> dict:
    return {"ok": False, "why": why, **extra}


def checkpoint(job) -> Path | None:
    """The job's latest checkpoint folder, or None."""
    from tuneforge.train.output import latest_checkpoint

    return latest_checkpoint(Path(job.run_dir)) if job and job.run_dir else None


def can_resume(w: CallerRuns, r) -> dict:
    """Whether the job that made this training run goes on: a paused one resumes; a failed or cancelled one with a
    checkpoint continues as a new job (action "continue", from checkpoint `step`)."""
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
        ckpt = checkpoint(job)
        if ckpt is None:
            return _no(f"{job.id} {job.status} before its first checkpoint: start a new run from its config")
        return {"ok": True, "action": "continue", "job_id": job.id, "step": checkpoint_step(ckpt),
                "why": f"{job.id} {job.status}: a new job continues it from its checkpoint step "
                       f"{checkpoint_step(ckpt)}"}
    if job.status == "succeeded":
        return _no(f"{job.id} finished: start a new run from its config to train again")
    return _no(f"{job.id} is {job.status}: it goes on by itself")


def final_model(w: CallerRuns, r) -> tuple[str | None, Path | None]:
    """(base, adapter folder) or (model folder, None) of a finished training run; (None, None) when missing."""
    from tuneforge.models.addons import is_adapter_dir

    out = w.run_folder(r)
    if out is not None and is_adapter_dir(out / "adapter"):
        return (w.config(r.id).get("model") or {}).get("name"), out / "adapter"
    if out is not None and (out / "model" / "config.json").is_file():
        return str(out / "model"), None
    return None, None


def can_export(w: CallerRuns, r) -> dict:
    """Whether the run has a final model that can be merged into a standalone one."""
    from tuneforge.methods import METHODS

    if r.kind != "train":
        return _no(f"a {r.kind} run has no trained model to export")
    if r.status != "succeeded":
        return _no(f"the run is {r.status}: only a finished training run has a final model to export")
    method = METHODS.get(r.method or "")
    if method is not None and method.artifact == "adapter" and not method.mergeable:
        return _no(f"a {r.method} adapter cannot be merged into its base")
    base, _ = final_model(w, r)
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


def _job_settings(w: CallerRuns, job, config: dict) -> tuple[dict, dict, object]:
    """(hyperparameters, config keys, uploaded training file or None) of the run: its job's when a job made it,
    else read from its config."""
    hp = {"n_epochs": "auto", "learning_rate_multiplier": "auto", "batch_size": "auto"}
    if job is not None:
        from tuneforge.jobs.spec import hyperparameters

        hp.update({k: v for k, v in hyperparameters(job.method).items() if k in hp and v is not None})
        keys = {k: v for k, v in (job.overrides or {}).items() if k != "method.type"}
        if job.seed != 42:
            keys["train.seed"] = job.seed
        return hp, keys, w.file_by_id(job.training_file)
    keys = _config_keys(config)
    train = config.get("train") or {}
    for key, name in (("epochs", "n_epochs"), ("batch_size", "batch_size")):
        if train.get(key) not in (None, "auto"):
            hp[name] = train[key]
            keys.pop(f"train.{key}", None)
    train_data = (config.get("data") or {}).get("train") or []
    file_row = w.file_of(train_data[0].get("path")) if len(train_data) == 1 and isinstance(
        train_data[0], dict) else None
    return hp, keys, file_row


def new_run(w: CallerRuns, r, full) -> dict:
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
    hp, keys, file_row = _job_settings(w, job, config)
    out = {"stage": job_method, "method": r.method, "hyperparameters": hp, "overrides": keys,
           "suffix": job.suffix if job is not None else None,
           "training_file": {"id": file_row.id, "filename": file_row.filename} if file_row else None}
    if job_method == "reinforcement":
        return _no("a reinforcement run's grader is not carried over: pick its prompts file in step 2 and choose "
                   "the grader in step 3", **out)
    if file_row is None:
        trained = ", ".join(str(w.shown(d.get("path") if isinstance(d, dict) else d))
                            for d in (config.get("data") or {}).get("train") or []) or "?"
        return _no(f"its training data ({trained}) is not a file uploaded to this server: upload it, then pick it",
                   **out)
    return {"ok": True, "why": "fills the data step and the settings with this run's file and keys", **out}
