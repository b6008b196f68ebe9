"""/v1/files: upload (validated at once: a bad file is refused naming its first bad lines), list, retrieve,
delete and download. A file belongs to the caller's project; the client's file name is a label, never a path."""

from __future__ import annotations

from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tuneforge.jobs import store as js
from tuneforge.jobs.files import (Checked, Saved, UploadTooLarge, check_file, display_name, new_id, save_stream,
                                  storage_suffix)
from tuneforge.serve.auth import Caller, require_api_key
from tuneforge.serve.errors import APIError, invalid
from tuneforge.serve.jobs_objects import file_object, page
from tuneforge.serve.jobs_state import jobs_state
from tuneforge.utils.errors import DataError

router = APIRouter()
PURPOSES = ("fine-tune",)
_CHUNK = 1 << 20


def upload_chunks(upload: UploadFile):
    while True:
        chunk = upload.file.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def store_and_check(chunks, name: str, folder: Path, suffix: str, limit: float):
    """Store `chunks` (bytes) as a new file and read it with tuneforge's readers → (file id, Saved, Checked). A file
    that cannot be read, or has bad rows, is removed again (the caller refuses it)."""
    file_id = new_id("file")
    saved = save_stream(chunks, folder, file_id, suffix, limit)
    try:
        checked = check_file(saved.path, name)
    except DataError:
        saved.path.unlink(missing_ok=True)
        raise
    if checked.problems or not checked.n_rows:
        saved.path.unlink(missing_ok=True)
    return file_id, saved, checked


@router.post("/v1/files")
async def create_file(request: Request, file: UploadFile = File(...), purpose: str = Form(...),
                      caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    if purpose not in PURPOSES:
        raise invalid("purpose", f"purpose {purpose!r} is not served here: tuneforge stores files for fine-tuning "
                                 f"(purpose 'fine-tune')", code="invalid_purpose")
    name = display_name(file.filename)
    limit = jobs.settings.max_upload_mb * 2**20
    try:
        file_id, saved, checked = await anyio.to_thread.run_sync(
            store_and_check, upload_chunks(file), name, jobs.files_dir, storage_suffix(name), limit)
    except UploadTooLarge as err:
        raise APIError(413, f"{name}: {err}", param="file", code="file_too_large") from None
    except DataError as err:
        raise invalid("file", err.one_line, code="invalid_file") from None
    if checked.problems:
        more = f" (and {checked.n_bad - len(checked.problems)} more)" if checked.n_bad > len(checked.problems) else ""
        raise invalid("file", f"{name}: {checked.n_bad} bad row(s){more}; fix them and upload again. "
                              + "; ".join(checked.problems), code="invalid_file")
    row = await anyio.to_thread.run_sync(add_checked_file, jobs, caller.project, file_id, name, saved, checked)
    return file_object(row)


def add_checked_file(jobs, project: str, file_id: str, name: str, saved: Saved, checked: Checked):
    """The files table's row for a stored file that passed `check_file`."""
    return js.add_file(jobs.store, id=file_id, project=project, filename=name, purpose="fine-tune",
                       bytes=saved.bytes, sha256=saved.sha256, path=str(saved.path.relative_to(jobs.storage)),
                       status="processed", status_details=f"{checked.n_rows} rows, format {checked.data_format}",
                       data_format=checked.data_format, n_rows=checked.n_rows)


@router.get("/v1/files")
async def list_files(request: Request, purpose: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                     after: str | None = None, order: str = Query("desc", pattern="^(asc|desc)$"),
                     caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    rows, more = await anyio.to_thread.run_sync(lambda: js.list_files(
        jobs.store, caller.project, purpose=purpose, after=after, limit=limit, order=order))
    return page([file_object(r) for r in rows], more, ids=True)


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    return file_object(await anyio.to_thread.run_sync(js.get_file, jobs.store, caller.project, file_id))


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request, caller: Caller = Depends(require_api_key)) -> dict:
    jobs = jobs_state(request)
    row = await anyio.to_thread.run_sync(js.delete_file, jobs.store, caller.project, file_id)
    (jobs.storage / row.path).unlink(missing_ok=True)
    return {"id": row.id, "object": "file", "deleted": True}


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request, caller: Caller = Depends(require_api_key)):
    jobs = jobs_state(request)
    row = await anyio.to_thread.run_sync(js.get_file, jobs.store, caller.project, file_id)
    path = jobs.storage / row.path
    if not path.is_file():
        raise APIError(404, f"the content of {file_id} is missing from the server's storage", param="file_id")
    return FileResponse(path, media_type="application/octet-stream", filename=row.filename)
