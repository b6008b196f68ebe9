"""The model ids of fine-tuning jobs, for the catalog: `ft:<base>:<suffix>:<job>` once a job has succeeded, and
`…:ckpt-step-N` for each checkpoint still on disk. Only the project that owns the job can see or call them."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.jobs import store as js
from tuneforge.models.addons import is_adapter_dir
from tuneforge.serve.catalog import ModelEntry, final_dir, is_lora_adapter


class FinetunedModels:
    def __init__(self, store, base_id: str):
        self.store, self.base_id = store, base_id

    def find(self, model_id: str, project: str) -> ModelEntry | None:
        found = js.find_model(self.store, project, model_id)
        return self._entry(*found) if found else None

    def find_base(self, model_id: str, project: str) -> ModelEntry | None:
        """Another base one of `project`'s jobs fine-tuned (`ServeSettings.other_bases`), served as its own copy so
        the fine-tuned model can be compared with it."""
        job = js.job_with_base(self.store, project, model_id)
        source = _job_base(job) if job is not None and model_id != self.base_id else None
        return ModelEntry(model_id, "model", source, None, 0) if source else None

    def entries(self, project: str) -> list[ModelEntry]:
        found = [self._entry(job, ckpt) for job, ckpt in js.project_models(self.store, project)]
        return sorted((e for e in found if e is not None), key=lambda e: e.id)

    def _entry(self, job, ckpt) -> ModelEntry | None:
        if ckpt is not None:
            folder, model_id, created = Path(ckpt.path), ckpt.model_id, js.epoch(ckpt.created_at)
        else:
            folder, model_id, created = _job_final(job), job.fine_tuned_model, js.epoch(job.finished_at)
        if folder is None or not folder.is_dir():
            return None
        other = job.model != self.base_id
        parent, base = (job.model, _job_base(job)) if other else (self.base_id, None)
        if is_adapter_dir(folder):
            return ModelEntry(model_id, "adapter", str(folder.resolve()), parent, created or 0,
                              is_lora_adapter(folder), base)
        return ModelEntry(model_id, "model", str(folder.resolve()), parent, created or 0)


def _job_base(job) -> str | None:
    """What the job's config loaded as its base (the resolved alias, folder, GGUF file or hub id)."""
    config = (job.resolved or {}).get("config") or {}
    return (config.get("model") or {}).get("name")


def _job_final(job) -> Path | None:
    run = Path(job.run_dir or "")
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return final_dir(run, info) if isinstance(info, dict) else None
