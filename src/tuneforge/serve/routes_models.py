"""GET /v1/models and GET /v1/models/{id}: the base and every fine-tuned model this server answers to, each with
`parent` (the base it applies to) and `root` (the folder served), as vLLM lists them."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request

from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.catalog import ModelEntry, folder_context_length
from tuneforge.serve.errors import model_not_found
from tuneforge.serve.schemas import Model, ModelList

router = APIRouter()


def _model(entry: ModelEntry, base_context: int | None) -> Model:
    context = folder_context_length(entry.root) if entry.kind == "model" else base_context
    return Model(id=entry.id, created=entry.created, root=entry.root, parent=entry.parent, max_model_len=context)


@router.get("/v1/models")
async def list_models(request: Request, caller: Caller = Depends(require_api_key)) -> ModelList:
    state = request.app.state.tuneforge
    entries = await anyio.to_thread.run_sync(state.catalog.entries, caller.project)
    return ModelList(data=[_model(e, state.base_context) for e in entries])


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> Model:
    state = request.app.state.tuneforge
    entry = await anyio.to_thread.run_sync(state.catalog.find, model_id, caller.project)
    if entry is None:
        raise model_not_found(model_id)
    return _model(entry, state.base_context)
