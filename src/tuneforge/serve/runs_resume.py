"""Resuming a run (POST /tf/v1/runs/{id}/resume, routes_runs) through the jobs scheduler, never training here: a
paused job resumes; a failed or cancelled one that left a checkpoint continues from it as a new job with the same
file and settings (the old job stays as it ended; the new job's run is a child of the old job's newest run).
"""

from __future__ import annotations

from tuneforge.jobs import store as js
from tuneforge.serve.errors import APIError
from tuneforge.serve.jobs_objects import job_object
from tuneforge.serve.runs_actions import can_resume, checkpoint
from tuneforge.serve.runs_view import JOB_TAG, CallerRuns


def _continue_job(w: CallerRuns, old, step: int) -> dict:
    """A new queued job that continues `old` from its latest checkpoint (at `step`)."""
    from tuneforge.jobs.files import new_id
    from tuneforge.jobs.spec import continuation

    jobs, project = w.jobs, w.project
    if w.file_by_id(old.training_file) is None:
        raise APIError(409, f"{old.id}'s training file {old.training_file} was deleted; upload it again and start "
                            f"a new run from this config", code="conflict")
    job_id = new_id("ftjob")
    run_dir = str(jobs.job_dir(job_id) / "run")
    config = continuation(old.resolved["config"], run_dir, str(checkpoint(old)))
    parent = next((x.id for x in w.runs if f"{JOB_TAG}{old.id}" in x.tags), None)  # the job's newest run
    resolved = {"config": config, "continues": {"job": old.id, "step": step}, "parent_run_id": parent}
    job = js.add_job(jobs.store, id=job_id, project=project, model=old.model, training_file=old.training_file,
                     validation_file=old.validation_file, suffix=old.suffix, seed=old.seed, meta=old.meta,
                     method=old.method, overrides=old.overrides, status="queued", resolved=resolved, run_dir=run_dir)
    js.add_event(jobs.store, job_id, f"Continues {old.id} from its checkpoint step {step}; queued")
    js.add_event(jobs.store, old.id, f"Continued as {job_id} from checkpoint step {step}")
    jobs.scheduler.wake()
    return {"action": "continued", "job": job_object(job), "continues": old.id, "step": step}


def resume_run(state, jobs, project: str, run_id: str) -> dict:
    """Resume or continue the job that made the run (409 with the reason when neither applies)."""
    w = CallerRuns(state, jobs, project)
    r = w.get(run_id)
    can = can_resume(w, r)
    if not can["ok"]:
        raise APIError(409, f"run {r.id} cannot be resumed: {can['why']}", code="conflict")
    if can["action"] == "resume":
        job = js.transition(jobs.store, project, can["job_id"], "resume")
        jobs.scheduler.wake()
        return {"action": "resumed", "job": job_object(job)}
    return _continue_job(w, w.job_rows[can["job_id"]], can["step"])
