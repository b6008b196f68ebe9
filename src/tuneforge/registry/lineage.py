"""Lineage of a run: from the datasets it was trained on, through parent/child runs (SFT → DPO → export), to the
models and other artifacts they produced. Links are `parent_run_id` and each run's artifacts.

`producing_run(store, path)` finds the training run a model / adapter folder came from, so an eval or export of
that folder can name it as its parent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.registry import queries
from tuneforge.registry.records import Run
from tuneforge.registry.store import Store

RUN_FILE = "run.json"  # written by the training runner into its output folder, with the registry's run_id

_MAX_DEPTH = 50


def _root_of(store: Store, run_id: str) -> str:
    seen, current = {run_id}, run_id
    for _ in range(_MAX_DEPTH):
        parent = queries.get_run(store, current).parent_run_id
        if not parent or parent in seen:
            break
        seen.add(parent)
        current = parent
    return current


def _node(store: Store, run_id: str, focus: str, depth: int, seen: set[str]) -> dict[str, Any]:
    seen.add(run_id)
    r = queries.get_run(store, run_id)
    node = {
        "id": r.id, "kind": r.kind, "status": r.status, "stage": r.stage, "method": r.method,
        "base_model": r.base_model, "datasets": r.datasets, "artifacts": queries.artifacts(store, r.id),
        "evals": [{"name": e["name"], "metrics": e["metrics"]} for e in queries.evals(store, r.id)],
        "focus": r.id == focus, "children": [],
    }
    if depth < _MAX_DEPTH:
        for child in queries.children(store, run_id):
            if child not in seen:
                node["children"].append(_node(store, child, focus, depth + 1, seen))
    return node


def lineage(store: Store, id_or_prefix: str) -> dict[str, Any]:
    """{"focus": id, "root": id, "datasets": [...root run's datasets], "tree": nested run nodes}."""
    focus = queries.resolve_run_id(store, id_or_prefix)
    root = _root_of(store, focus)
    tree = _node(store, root, focus, 0, set())
    return {"focus": focus, "root": root, "datasets": tree["datasets"], "tree": tree}


def find_run_file(path: str | Path | None) -> tuple[Path, dict] | None:
    """The training run folder that is `path` or holds it (`runs/X` or `runs/X/adapter`) and its parsed run.json;
    None when `path` is not inside a tuneforge run."""
    if not path:
        return None
    for folder in (Path(path).expanduser(), Path(path).expanduser().parent):
        try:
            info = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict):
            return folder, info
    return None


def producing_run(store: Store, path: str | Path | None) -> str | None:
    """The registry id of the run whose output folder is `path` or holds it (`runs/X` or `runs/X/adapter`): read
    from that folder's run.json; None when there is none, it has no run_id, or the registry does not know it."""
    found = find_run_file(path)
    run_id = found[1].get("run_id") if found else None
    if not run_id:
        return None
    with store.session() as s:
        return str(run_id) if s.get(Run, str(run_id)) is not None else None
    for folder in (Path(path).expanduser(), Path(path).expanduser().parent):
        try:
            run_id = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("run_id")
        except (OSError, ValueError, AttributeError):
            continue
        if not run_id:
            continue
        with store.session() as s:
            return str(run_id) if s.get(Run, str(run_id)) is not None else None
    return None
