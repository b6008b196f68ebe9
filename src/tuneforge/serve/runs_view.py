"""Which runs a caller sees, and a run's row as GET /tf/v1/runs answers it (routes_runs; runs_detail adds to it).

A run made by a fine-tuning job (its `job:ID` tag), or descending from one (its export), belongs to that job's
project. Runs without a job (`tuneforge train` writing to the same registry) are the machine owner's: they are shown
to the default project of a server that does not require API keys, and to nobody else. Paths inside the server's
storage folder are shown relative to it (`<storage>/...`, storage_paths).
"""

from __future__ import annotations

import re
from pathlib import Path

from tuneforge.jobs import store as js
from tuneforge.serve.auth import DEFAULT_PROJECT
from tuneforge.serve.errors import APIError
from tuneforge.serve.storage_paths import hide_storage

JOB_TAG = "job:"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# The final values a run's row shows (registry keys as the trainer logs them), in this order.
SHOWN_METRICS = ("loss", "eval_loss", "mean_token_accuracy", "eval_mean_token_accuracy", "rewards/accuracies",
                 "rewards/margins", "reward")


class CallerRuns:
    """The runs a caller may see, with the job each belongs to (read once per request)."""

    def __init__(self, state, jobs, project: str):
        from tuneforge.registry import queries

        self.state, self.jobs, self.project = state, jobs, project
        self.storage = str(jobs.storage)
        every = queries.list_runs(jobs.store)  # newest first; reaps runs whose process died
        self.all = {r.id: r for r in every}
        rows, _ = js.list_jobs(jobs.store, project, limit=1 << 30)
        self.job_rows = {j.id: j for j in rows}
        local = not state.settings.require_keys and project == DEFAULT_PROJECT
        self.job_of: dict[str, str | None] = {}
        self.runs = [r for r in every if self._visible(r, local)]
        self.by_id = {r.id: r for r in self.runs}

    def _owner(self, run) -> str | None:
        """The job id of the run or of its nearest ancestor made by a job."""
        seen = set()
        while run is not None and run.id not in seen:
            seen.add(run.id)
            tag = next((t for t in run.tags if t.startswith(JOB_TAG)), None)
            if tag:
                return tag[len(JOB_TAG):]
            run = self.all.get(run.parent_run_id) if run.parent_run_id else None
        return None

    def _visible(self, run, local: bool) -> bool:
        job_id = self._owner(run)
        self.job_of[run.id] = job_id
        return job_id in self.job_rows if job_id else local

    def job(self, run_id: str):
        """The fine-tuning job row that made this run itself (not an ancestor's), or None."""
        run = self.by_id[run_id]
        tag = next((t for t in run.tags if t.startswith(JOB_TAG)), None)
        return self.job_rows.get(tag[len(JOB_TAG):]) if tag else None

    def get(self, run_id: str):
        if not _RUN_ID.match(run_id) or run_id not in self.by_id:
            raise APIError(404, f"No such run: {run_id}", code="not_found")  # another project's run too
        return self.by_id[run_id]

    def config(self, run_id: str) -> dict:
        from tuneforge.registry import queries

        return queries.get_run(self.jobs.store, run_id).config or {}

    def children(self, run_id: str) -> list[str]:
        return [r.id for r in reversed(self.runs) if r.parent_run_id == run_id]

    def shown(self, text):
        """A string with the server's storage folder written as <storage> (for runs of jobs)."""
        return hide_storage(text, self.storage) if isinstance(text, str) else text

    def shown_deep(self, obj):
        if isinstance(obj, dict):
            return {k: self.shown_deep(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.shown_deep(v) for v in obj]
        return self.shown(obj)

    def base_name(self, base: str | None) -> str | None:
        cat = self.state.catalog.base
        return cat.id if base in (cat.root, cat.id, self.state.settings.model) else base

    def file_of(self, path: str | None):
        """The uploaded file (of this project) stored at `path`, or None."""
        if not path:
            return None
        try:
            rel = str(Path(path).resolve().relative_to(self.jobs.storage))
        except ValueError:
            return None
        rows, _ = js.list_files(self.jobs.store, self.project)
        return next((f for f in rows if f.path == rel), None)

    def file_by_id(self, file_id: str | None):
        """The uploaded file (of this project) with this id, or None."""
        try:
            return js.get_file(self.jobs.store, self.project, file_id) if file_id else None
        except js.NotFound:
            return None

    def run_folder(self, r) -> Path | None:
        """The run's output folder, absolute: where its adapter or model was recorded (output_dir may be relative to
        wherever `tuneforge train` ran), else output_dir when it is absolute."""
        from tuneforge.registry import queries

        for a in queries.artifacts(self.jobs.store, r.id):
            if a["kind"] in ("adapter", "model"):
                return Path(a["path"]).parent
        return Path(r.output_dir) if r.output_dir and Path(r.output_dir).is_absolute() else None


def _epoch(t) -> int | None:
    return int(t.timestamp()) if t is not None else None


def _final(store, run_id: str) -> tuple[dict, int | None]:
    from tuneforge.registry import queries

    series = queries.metric_series(store, run_id)
    values = {k: series[k][-1][2] for k in SHOWN_METRICS if k in series and series[k][-1][2] is not None}
    steps = max((rows[-1][0] for rows in series.values() if rows), default=None)
    return values, steps


def run_row(w: CallerRuns, r) -> dict:
    """A run as the list shows it: status, stage and method, base, times, final metrics, lineage links, its job."""
    job = w.job(r.id)
    owner = w.job_of.get(r.id)
    metrics, steps = _final(w.jobs.store, r.id)
    name = (job.suffix or job.id) if job else (Path(r.output_dir).name if r.output_dir else r.id)
    datasets = [{"name": _dataset_name(w, d["name"]), "n_records": d["n_records"], "role": d["role"]}
                for d in r.datasets]
    return {"id": r.id, "object": "tuneforge.run", "name": name, "kind": r.kind, "status": r.status,
            "stage": r.stage, "method": r.method, "base_model": w.base_name(r.base_model),
            "created_at": _epoch(r.created_at), "started_at": _epoch(r.started_at), "ended_at": _epoch(r.ended_at),
            "duration_s": r.duration_s, "metrics": metrics, "steps": steps, "error": w.shown(r.error),
            "parent_id": r.parent_run_id if r.parent_run_id in w.by_id else None, "children": w.children(r.id),
            "job": ({"id": job.id, "status": job.status, "fine_tuned_model": job.fine_tuned_model,
                     "training_file": job.training_file} if job else None),
            "owner_job_id": owner, "tags": [t for t in r.tags if not t.startswith(JOB_TAG)], "datasets": datasets}


def _dataset_name(w: CallerRuns, name: str | None) -> str | None:
    """An uploaded file's dataset (named by its stored file, `file-…`) by the name it was uploaded as."""
    found = w.file_by_id(name) if name and name.startswith("file-") else None
    found = found or (w.file_of(name) if name and w.storage in name else None)
    return found.filename if found else w.shown(name)


def list_page(state, jobs, project: str, limit: int, status: str | None, kind: str | None) -> dict:
    """GET /tf/v1/runs's answer: the caller's runs newest first, filtered by `status` and `kind`."""
    w = CallerRuns(state, jobs, project)
    rows = [r for r in w.runs if (not status or r.status == status) and (not kind or r.kind == kind)]
    return {"object": "list", "data": [run_row(w, r) for r in rows[:limit]], "has_more": len(rows) > limit}
