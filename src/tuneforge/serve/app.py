"""The FastAPI application of `tuneforge serve`: `create_app(settings)` loads the base model and wires the routes.

State shared by the routes lives on `app.state.tuneforge` (a ServeState): the settings, the catalog of model ids and
the pool of loaded models. API keys will plug in as a dependency (serve.auth); files and fine-tuning jobs will be
more routers beside these.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from fastapi import FastAPI

from tuneforge import __version__
from tuneforge.models.source import resolve_model
from tuneforge.serve import routes_chat, routes_feedback, routes_files, routes_jobs, routes_models
from tuneforge.serve.catalog import Catalog
from tuneforge.serve.errors import install_handlers
from tuneforge.serve.pool import ModelPool, context_length
from tuneforge.serve.settings import ServeSettings


@dataclass
class ServeState:
    settings: ServeSettings
    catalog: Catalog
    pool: ModelPool
    fingerprint: str  # system_fingerprint: changes when the code, the base or where it runs changes
    base_context: int | None


def _fingerprint(pool: ModelPool, base_source: str) -> str:
    import torch

    engine = pool.base
    key = f"{__version__}|{torch.__version__}|{base_source}|{engine.device}|{engine.model.dtype}"
    return "fp_" + hashlib.sha256(key.encode()).hexdigest()[:10]


def create_app(settings: ServeSettings, *, pool: ModelPool | None = None) -> FastAPI:
    """The server application. The adapters and runs are checked first (fast), then the base model is loaded, so
    a wrong setting fails at start, not on the first request. `pool`: an already loaded one (tests)."""
    base_source = resolve_model(settings.model).path
    catalog = Catalog(settings, base_source, int(time.time()))
    pool = pool or ModelPool(settings)
    app = FastAPI(title="tuneforge serve", version=__version__,
                  description="OpenAI-compatible chat and text completions for a base model and its fine-tunes")
    app.state.tuneforge = ServeState(settings, catalog, pool, _fingerprint(pool, base_source),
                                     context_length(pool.base.model))
    install_handlers(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok"}

    app.include_router(routes_models.router)
    app.include_router(routes_chat.router)
    app.include_router(routes_files.router)
    app.include_router(routes_jobs.router)
    app.include_router(routes_feedback.router)
    return app
