"""One run as GET /tf/v1/runs/{id} answers it (routes_runs): its row (runs_view) with its config as YAML, loss
series, the lineage the caller may see, evals, artifacts, an export's parity check and the actions that apply
(runs_actions).
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.serve.runs_actions import can_export, can_resume, new_run
from tuneforge.serve.runs_view import CallerRuns, run_row

SERIES_KEYS = ("loss", "eval_loss")
_MAX_POINTS = 400


def _series(store, run_id: str) -> dict:
    """The loss curves, one value a step (the last one when a resume redid it), thinned to about _MAX_POINTS."""
    from tuneforge.registry import queries

    out = {}
    for key, rows in queries.metric_series(store, run_id, list(SERIES_KEYS)).items():
        points = [[step, value] for step, _epoch_, value, _t in rows if value is not None]
        by_step = {}
        for step, value in points:  # a step redone after a resume: the last value counts
            by_step[step] = value
        points = sorted(by_step.items())
        stride = max(1, -(-len(points) // _MAX_POINTS))
        out[key] = [list(p) for p in points[::stride]] + ([list(points[-1])] if (len(points) - 1) % stride else [])
    return out


def _tree(w: CallerRuns, node: dict) -> dict | None:
    if node["id"] not in w.by_id:
        return None
    kids = [c for c in (_tree(w, k) for k in node["children"]) if c]
    return {"id": node["id"], "kind": node["kind"], "status": node["status"], "stage": node["stage"],
            "method": node["method"], "focus": node["focus"], "children": kids}


def _visible_tree(w: CallerRuns, node: dict) -> dict | None:
    """The lineage from the topmost run the caller may see that leads to the focus run."""
    def holds_focus(n: dict) -> bool:
        return n["focus"] or any(holds_focus(c) for c in n["children"])

    if node["id"] in w.by_id:
        return _tree(w, node)
    return next((_visible_tree(w, c) for c in node["children"] if holds_focus(c)), None)


def _artifacts(w: CallerRuns, r) -> list[dict]:
    from tuneforge.registry import queries

    out = []
    root = w.run_folder(r)
    for a in queries.artifacts(w.jobs.store, r.id):
        path = Path(a["path"])
        name = str(path.relative_to(root)) if root and path.is_relative_to(root) else w.shown(a["path"])
        out.append({"kind": a["kind"], "name": name, "size_bytes": a["size_bytes"], "exists": path.exists()})
    return out


def _parity_of(r) -> dict | None:
    """An export run's parity check, as it wrote it beside the exported model."""
    import json

    from tuneforge.export.merge import EXPORT_META

    if r.kind != "export" or not r.output_dir:
        return None
    try:
        return json.loads((Path(r.output_dir) / EXPORT_META).read_text(encoding="utf-8")).get("parity")
    except (OSError, ValueError, AttributeError):
        return None


def run_detail(state, jobs, project: str, run_id: str) -> dict:
    """GET /tf/v1/runs/{id}'s answer (404 for a run the caller may not see)."""
    import yaml

    from tuneforge.registry import lineage, queries

    w = CallerRuns(state, jobs, project)
    r = w.get(run_id)
    full = queries.get_run(jobs.store, r.id)
    tree = lineage.lineage(jobs.store, r.id)["tree"]
    return {**run_row(w, r),
            "config_yaml": yaml.safe_dump(w.shown_deep(full.config), sort_keys=False, allow_unicode=True)
            if full.config else None,
            "series": _series(jobs.store, r.id), "lineage": _visible_tree(w, tree),
            "evals": queries.evals(jobs.store, r.id), "artifacts": _artifacts(w, r), "parity": _parity_of(r),
            "actions": {"resume": can_resume(w, r), "export": can_export(w, r), "new_run": new_run(w, r, full)}}
