"""Exporting a run (POST /tf/v1/runs/{id}/export, routes_runs): merge its adapter into its base, or re-save a full
model, into a new folder in the run's exports/ and check parity (`tuneforge export`, recorded as a child run).
Exports never overwrite, and one export of a run runs at a time. The merge's own errors (ParityError, other
TuneforgeErrors) reach the route, which answers them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tuneforge.serve.errors import APIError
from tuneforge.serve.runs_actions import can_export, final_model
from tuneforge.serve.runs_view import CallerRuns

_exporting: set[str] = set()  # runs being exported right now (one export of a run at a time)
_exporting_lock = threading.Lock()


def _destination(run_folder: Path, name: str | None) -> Path:
    """exports/NAME (409 when it exists), or the first free of exports/merged, merged-2, ..."""
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


def export_run(state, jobs, project: str, run_id: str, dtype: str, name: str | None, check_samples: int) -> dict:
    """Export the run into exports/`name` (default merged, merged-2, ...); answers the export object."""
    from tuneforge.export.merge import merge_adapter

    w = CallerRuns(state, jobs, project)
    r = w.get(run_id)
    can = can_export(w, r)
    if not can["ok"]:
        raise APIError(409, f"run {r.id} cannot be exported: {can['why']}", code="conflict")
    with _exporting_lock:
        if r.id in _exporting:
            raise APIError(409, f"run {r.id} is being exported already; wait for that export", code="conflict")
        _exporting.add(r.id)
    try:
        dest = _destination(w.run_folder(r), name)
        model, adapter = final_model(w, r)
        device = "cpu" if str(state.pool.base.device).startswith("cpu") else "auto"
        # template auto: the one the run trained with, saved beside its adapter or model
        report = merge_adapter(model, str(adapter) if adapter else None, str(dest), dtype=dtype,
                               check_samples=check_samples, template="auto", device=device,
                               registry_url=jobs.store.url)
    finally:
        with _exporting_lock:
            _exporting.discard(r.id)
    return {"object": "tuneforge.export", "run_id": report.run_id, "source_run_id": r.id,
            "folder": f"exports/{dest.name}", "path": w.shown(report.out),
            "dtype": report.dtype, "passed": report.passed, "parity": report.parity.as_dict()}
