"""/tf/v1 routes that make a training file another way than uploading it as it is (the web UI's data step):

    GET  /tf/v1/files/{id}/mapping     the format detected from the file's first row, the column of each role, the
                                       row's columns (what `tuneforge data preview` reads the file as)
    POST /tf/v1/files/{id}/remap       {format, columns}: the file read with this mapping, stored as a NEW file of
                                       canonical rows (the original stays as it was)
    POST /tf/v1/files/mapped           multipart file + format + columns (JSON): an upload whose format cannot be
                                       detected, read with the given mapping and stored as a new canonical file
    GET  /tf/v1/datasets               the datasets of the server's dataset_info.json (`--dataset-info`)
    POST /tf/v1/datasets/{name}/import a registered dataset read as `tuneforge train` reads it (its formatting,
                                       columns and tags), stored as a new canonical file

A mapping that leaves rows unreadable is refused naming the first bad lines, and nothing is stored.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.jobs import store as js
from tuneforge.jobs.canonical import canonical_lines, detect_mapping, read_mapped
from tuneforge.jobs.files import UploadTooLarge, display_name, save_stream, storage_suffix
from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.errors import APIError, invalid
from tuneforge.serve.jobs_objects import file_object
from tuneforge.serve.jobs_state import jobs_state
from tuneforge.serve.routes_files import add_checked_file, store_and_check, upload_chunks
from tuneforge.utils.errors import DataError

router = APIRouter()
ROLES = ("prompt", "query", "response", "history", "system", "messages", "chosen", "rejected", "kto_tag", "text",
         "tools")


class Remap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = Field("auto", max_length=32)
    columns: dict[str, str] = Field(default_factory=dict)


def _formats() -> list[str]:
    from tuneforge.data.formats import FORMATS

    return list(FORMATS)


def _mapped_name(filename: str) -> str:
    return f"{Path(filename).stem}.mapped.jsonl"


def _store_records(jobs, project: str, records, name: str) -> dict:
    """Write the records as a new canonical JSONL file in storage, check it like an upload, and add it."""
    file_id, saved, checked = store_and_check(canonical_lines(records), name, jobs.files_dir, ".jsonl", math.inf)
    return file_object(add_checked_file(jobs, project, file_id, name, saved, checked))


def _refused(err: DataError) -> APIError:
    return invalid(err.field or "columns", err.one_line, code="invalid_mapping")


@router.get("/tf/v1/files/{file_id}/mapping")
async def file_mapping(file_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """How the file is read: detected format, role → column, and the columns its first row has."""
    jobs = jobs_state(request)
    row = await anyio.to_thread.run_sync(js.get_file, jobs.store, caller.project, file_id)
    try:
        mapping = await anyio.to_thread.run_sync(detect_mapping, jobs.storage / row.path)
    except DataError as err:
        raise _refused(err) from None
    return {"file_id": file_id, "filename": row.filename, **mapping.as_dict(), "formats": _formats(),
            "roles": list(ROLES)}


def _remap(jobs, project: str, file_id: str, body: Remap) -> dict:
    row = js.get_file(jobs.store, project, file_id)
    records = read_mapped(jobs.storage / row.path, body.format, body.columns, row.filename)
    return _store_records(jobs, project, records, _mapped_name(row.filename))


@router.post("/tf/v1/files/{file_id}/remap")
async def remap_file(file_id: str, body: Remap, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """A new file: this one read with `format` and `columns` (role → column), as canonical rows."""
    try:
        return await anyio.to_thread.run_sync(_remap, jobs_state(request), caller.project, file_id, body)
    except DataError as err:
        raise _refused(err) from None


def _mapped_upload(jobs, project: str, upload: UploadFile, name: str, body: Remap) -> dict:
    limit = jobs.settings.max_upload_mb * 2**20
    with tempfile.TemporaryDirectory(dir=jobs.storage) as tmp:
        saved = save_stream(upload_chunks(upload), Path(tmp), "upload", storage_suffix(name), limit)
        records = read_mapped(saved.path, body.format, body.columns, name)
    return _store_records(jobs, project, records, _mapped_name(name))


@router.post("/tf/v1/files/mapped")
async def upload_mapped(request: Request, file: UploadFile = File(...), format: str = Form("auto"),
                        columns: str = Form("{}"), caller: Caller = Depends(require_api_key)) -> dict:
    """An upload read with the given mapping (for a file whose format cannot be detected); the raw upload is not
    kept, the canonical rows are."""
    jobs = jobs_state(request)
    try:
        body = Remap(format=format, columns=json.loads(columns))
    except (ValueError, TypeError) as err:
        raise invalid("columns", f"columns must be a JSON object of role → column name ({err})") from None
    name = display_name(file.filename)
    try:
        return await anyio.to_thread.run_sync(_mapped_upload, jobs, caller.project, file, name, body)
    except UploadTooLarge as err:
        raise APIError(413, f"{name}: {err}", param="file", code="file_too_large") from None
    except DataError as err:
        raise _refused(err) from None


def _registry(request: Request):
    return request.app.state.tuneforge.settings.dataset_info


def _datasets(dataset_info) -> list[dict]:
    from tuneforge.data.catalog import info_path, read_dataset_info

    path = info_path(dataset_info)
    if path is None:
        return []
    out = []
    for name, entry in read_dataset_info(path).items():
        local = bool(entry.get("file_name")) and (path.parent / entry["file_name"]).exists()
        out.append({"name": name, "formatting": entry.get("formatting", "alpaca"),
                    "ranking": bool(entry.get("ranking")), "kto": "kto_tag" in (entry.get("columns") or {}),
                    "local": local, "source": entry.get("file_name") or entry.get("hf_hub_url")
                    or entry.get("ms_hub_url")})
    return out


@router.get("/tf/v1/datasets")
async def list_datasets(request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """The datasets registered in the server's dataset_info.json; `local` ones can be imported offline."""
    try:
        data = await anyio.to_thread.run_sync(_datasets, _registry(request))
    except DataError as err:
        raise invalid("dataset_info", err.one_line, code="invalid_dataset_info") from None
    return {"object": "list", "data": data}


def _import(jobs, project: str, dataset_info, name: str) -> dict:
    from tuneforge.data.catalog import load_dataset

    if name not in {d["name"] for d in _datasets(dataset_info)}:
        raise APIError(404, f"no dataset named {name!r} in the server's dataset_info.json", param="name",
                       code="dataset_not_found")
    try:
        result = load_dataset({"name": name}, dataset_info=dataset_info)
    except OSError as err:  # a hub dataset on a server without the network
        raise DataError(f"{name} could not be read: {err}", field="name",
                        hint="registered local files import offline; a hub dataset needs the network") from None
    return _store_records(jobs, project, result.records, f"{name}.jsonl")


@router.post("/tf/v1/datasets/{name}/import")
async def import_dataset(name: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    """A registered dataset as a new file, read as a config naming it would read it."""
    try:
        return await anyio.to_thread.run_sync(_import, jobs_state(request), caller.project, _registry(request), name)
    except DataError as err:
        raise invalid("name", err.one_line, code="invalid_dataset") from None
