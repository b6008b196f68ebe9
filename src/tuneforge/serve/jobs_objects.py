"""The OpenAI objects of the files and fine-tuning API, built from registry rows, field by field as the
openai-python types define them (`file`, `fine_tuning.job`, `fine_tuning.job.event`,
`fine_tuning.job.checkpoint`, and the `list` pages around them)."""

from __future__ import annotations

from pathlib import Path

from tuneforge.jobs.spec import hyperparameters
from tuneforge.jobs.store import epoch


def file_object(row) -> dict:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": epoch(row.created_at),
            "filename": row.filename, "purpose": row.purpose, "status": row.status,
            "status_details": row.status_details, "expires_at": None}


def _hyperparameters(row) -> dict:
    """As resolved by the run once it started, else as asked ("auto" where not given)."""
    asked = hyperparameters(row.method)
    keys = ["batch_size", "learning_rate_multiplier", "n_epochs"] + (["beta"] if row.method["type"] == "dpo" else [])
    found = dict((row.resolved or {}).get("hyperparameters") or {})
    return {k: found.get(k) if found.get(k) is not None else asked.get(k, "auto") for k in keys}


def job_object(row) -> dict:
    hp = _hyperparameters(row)
    kind = row.method["type"]
    method = {"type": kind, kind: {**(row.method.get(kind) or {}), "hyperparameters": hp}}
    return {"id": row.id, "object": "fine_tuning.job", "created_at": epoch(row.created_at), "error": row.error,
            "fine_tuned_model": row.fine_tuned_model, "finished_at": epoch(row.finished_at),
            "hyperparameters": {k: hp[k] for k in ("batch_size", "learning_rate_multiplier", "n_epochs")},
            "model": row.model, "organization_id": row.project, "result_files": list(row.result_files or []),
            "seed": row.seed, "status": row.status, "trained_tokens": row.trained_tokens,
            "training_file": row.training_file, "validation_file": row.validation_file,
            "estimated_finish": row.estimated_finish if row.status in ("running", "pausing") else None,
            "integrations": [], "metadata": row.meta, "method": method, "user_provided_suffix": row.suffix}


def event_object(row) -> dict:
    return {"id": f"ftevent-{row.id}", "object": "fine_tuning.job.event", "created_at": epoch(row.created_at),
            "level": row.level, "message": row.message, "data": row.data or {}, "type": row.type}


def checkpoint_object(row) -> dict:
    metrics = {k: v for k, v in (row.metrics or {}).items()
               if k in ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
                        "full_valid_loss", "full_valid_mean_token_accuracy")}
    return {"id": f"ftckpt-{row.id}", "object": "fine_tuning.job.checkpoint", "created_at": epoch(row.created_at),
            "fine_tuned_model_checkpoint": row.model_id, "fine_tuning_job_id": row.job_id, "metrics": metrics,
            "step_number": row.step}


def page(items: list[dict], has_more: bool, *, ids: bool = False) -> dict:
    out = {"object": "list", "data": items, "has_more": has_more}
    if ids:
        out.update(first_id=items[0]["id"] if items else None, last_id=items[-1]["id"] if items else None)
    return out


def on_disk(path: str) -> bool:
    return Path(path).is_dir()
