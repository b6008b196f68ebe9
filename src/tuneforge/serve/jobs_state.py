"""What the files and jobs routes share: the registry, the storage folder and the scheduler of one server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from tuneforge.serve.errors import APIError


@dataclass
class JobsState:
    settings: object  # ServeSettings
    store: object  # tuneforge.registry.store.Store
    storage: Path
    scheduler: object  # tuneforge.jobs.scheduler.Scheduler

    @property
    def files_dir(self) -> Path:
        return self.storage / "files"

    def job_dir(self, job_id: str) -> Path:
        return self.storage / "jobs" / job_id


def jobs_state(request: Request) -> JobsState:
    jobs = request.app.state.tuneforge.jobs
    if jobs is None:
        raise APIError(404, "files and fine-tuning jobs are switched off on this server (serve --no-jobs)",
                       code="not_found")
    return jobs
