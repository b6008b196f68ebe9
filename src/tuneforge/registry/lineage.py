"""Lineage of a run: from the datasets it was trained on, through parent/child runs (SFT → DPO → export), to the
models and other artifacts they produced. Links are `parent_run_id` and each run's artifacts."""

from __future__ import annotations

from typing import Any

from tuneforge.registry import queries
from tuneforge.registry.store import Store

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
