"""The FastAPI application of `tuneforge serve`: `create_app(settings)` loads the base model and wires the routes.

State shared by the routes lives on `app.state.tuneforge` (a ServeState): the settings, the catalog of model ids and
the pool of loaded models. API keys will plug in as a dependency (serve.auth); files and fine-tuning jobs will be
more routers beside these.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from tuneforge import __version__
from tuneforge.models.source import resolve_model
from tuneforge.serve import (routes_chat, routes_data, routes_eval, routes_feedback, routes_files, routes_jobs,
                             routes_models, routes_runs, routes_ui)
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.errors import install_handlers
from tuneforge.serve.jobs_state import JobsState
from tuneforge.serve.limits import BodySizeLimit
from tuneforge.serve.pool import ModelPool, context_length
from tuneforge.serve.settings import ServeSettings


@dataclass
class ServeState:
    settings: ServeSettings
    catalog: Catalog
    pool: ModelPool
    fingerprint: str  # system_fingerprint: changes when the code, the base or where it runs changes
    base_context: int | None
    jobs: JobsState | None = None  # files and fine-tuning jobs (None with --no-jobs)


def _fingerprint(pool: ModelPool, base_source: str) -> str:
    import torch

    engine = pool.base
    key = f"{__version__}|{torch.__version__}|{base_source}|{engine.device}|{engine.model.dtype}"
    return "fp_" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _jobs(settings: ServeSettings, catalog: Catalog) -> JobsState:
    """The registry, storage folder and scheduler of the files and jobs API; the catalog learns the jobs' models."""
    from tuneforge.jobs.executors import make_executor
    from tuneforge.jobs.scheduler import Scheduler
    from tuneforge.registry.store import open_store
    from tuneforge.serve.finetuned import FinetunedModels

    store = open_store(settings.registry_url)
    storage = settings.storage_dir
    storage.mkdir(parents=True, exist_ok=True)
    scheduler = Scheduler(store, make_executor(settings.executor, settings.ray_address), storage,
                          concurrency=settings.concurrency, max_attempts=settings.max_attempts)
    catalog.finetuned = FinetunedModels(store, catalog.base.id)
    return JobsState(settings, store, storage, scheduler)


def create_app(settings: ServeSettings, *, pool: ModelPool | None = None) -> FastAPI:
    """The server application. The adapters and runs are checked first (fast), then the base model is loaded, so
    a wrong setting fails at start, not on the first request. `pool`: an already loaded one (tests)."""
    base_source = resolve_model(settings.model).path
    catalog = Catalog(settings, base_source, int(time.time()))
    pool = pool or ModelPool(settings)
    jobs = _jobs(settings, catalog) if settings.jobs else None

    @asynccontextmanager
    async def lifespan(app):
        if jobs is not None:
            jobs.scheduler.start()  # settles what an earlier server left, then runs queued jobs
        yield
        if jobs is not None:
            jobs.scheduler.stop()  # running workers go on; the next server adopts them

    app = FastAPI(title="tuneforge serve", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible chat and text completions for a base model and its fine-tunes, "
                              "and OpenAI's files and fine-tuning jobs API")
    app.state.tuneforge = ServeState(settings, catalog, pool, _fingerprint(pool, base_source),
                                     context_length(pool.base.model), jobs)
    install_handlers(app)
    app.add_middleware(BodySizeLimit)  # 413 for a too large body, before it is read

    @app.get("/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok"}

    app.include_router(routes_models.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_files.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_feedback.router)
    app.include_router(routes_ui.router)  # /tf/v1: read-only answers for the web UI (tuneforge.ui)
    app.include_router(routes_data.router)  # /tf/v1: column mapping, registered datasets → new files
    app.include_router(routes_eval.router)  # /tf/v1/evals: before/after evaluations of a job's model
    app.include_router(routes_runs.router)  # /tf/v1/runs: the registry's runs, export
    return app
