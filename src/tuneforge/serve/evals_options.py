"""What can be evaluated (GET /tf/v1/evals/options, routes_eval; evals_plan checks a request against it): the
default file of a model's job, the uploaded files task metrics can read, the labels a file's answers suggest, and
the multiple-choice benchmarks whose data are on this machine.
"""

from __future__ import annotations

from tuneforge.jobs import store as js
from tuneforge.jobs.files import Checked
from tuneforge.serve.errors import invalid
from tuneforge.serve.jobs_state import JobsState
from tuneforge.serve.storage_paths import hide_storage
from tuneforge.utils.errors import TuneforgeError

DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
SEED = 0  # the row sample of `limit`, the same for both models (paired)
MAX_LABELS, MAX_LABEL_CHARS = 10, 24
MEMORIZATION = ("Scored on the training data: this measures how well the model memorized it, not how it does on "
                "new data. Upload a held-out file (or give the job a validation file) to measure generalization.")


def benchmarks() -> list[dict]:
    """The multiple-choice benchmarks whose data are on this machine (offline)."""
    from tuneforge.eval.tasks import BUILTINS, benchmarks_dir

    root = benchmarks_dir()
    out = []
    for name, info in BUILTINS.items():
        if info.style == "generate" or root is None or not (root / info.folder / "test.jsonl").is_file():
            continue
        out.append({"name": name, "style": info.style, "language": info.lang})
    return out


def fits(row) -> bool:
    """A file task metrics can read: conversations (alpaca, sharegpt, openai) that end with an answer."""
    return row.purpose == "fine-tune" and row.status == "processed" and \
        Checked(row.data_format or "", row.n_rows or 0, [], 0).kind == "chat"


def job_of(jobs: JobsState, project: str, model: str):
    """The fine-tuning job that made `model`, or None."""
    found = js.find_model(jobs.store, project, model)
    return found[0] if found else None


def default_file(job) -> tuple[str | None, str | None]:
    """(file id, "validation" or "training"): the job's validation file, else its training file."""
    if job is None:
        return None, None
    return (job.validation_file, "validation") if job.validation_file else (job.training_file, "training")


def split_of(job, file_id: str) -> str:
    """What the file was to the job: "validation", "training" or "other"."""
    if job is not None and file_id == job.validation_file:
        return "validation"
    if job is not None and file_id == job.training_file:
        return "training"
    return "other"


def suggest_labels(references: list[str]) -> list[str] | None:
    """The label set when the answers look like classification: 2 to 10 distinct short answers, each seen at least
    three times on average; None for free text."""
    refs = [r.strip() for r in references]
    distinct = sorted(set(refs))
    if not 2 <= len(distinct) <= MAX_LABELS or len(refs) < 3 * len(distinct):
        return None
    if any(not lab or len(lab) > MAX_LABEL_CHARS or "\n" in lab for lab in distinct):
        return None
    return distinct


def read_task(jobs: JobsState, row):
    """The file's records (validated for task metrics; errors name the uploaded file, not the storage path)."""
    from tuneforge.eval.taskdata import load_task_data

    path = str(jobs.storage / row.path)
    try:
        return load_task_data(path, None, "score", None, SEED)
    except TuneforgeError as err:
        raise invalid("file_id", hide_storage(str(err), jobs.storage, path, row.filename)) from None


def eval_options(jobs: JobsState, project: str, model: str | None, file_id: str | None) -> dict:
    """GET /tf/v1/evals/options's answer for `model` (and the chosen `file_id`, default the job's file)."""
    job = job_of(jobs, project, model) if model else None
    default_id, default_split = default_file(job)
    files = [{"id": f.id, "filename": f.filename, "rows": f.n_rows, "format": f.data_format,
              "split": split_of(job, f.id)}
             for f in js.list_files(jobs.store, project, limit=100)[0] if fits(f)]
    if default_id and not file_id and default_id not in [f["id"] for f in files]:
        default_id = default_split = None  # deleted since the job trained, or not readable for task metrics
    chosen = file_id or default_id
    labels = None
    if chosen:
        data = read_task(jobs, js.get_file(jobs.store, project, chosen))
        from tuneforge.eval.taskdata import split_record

        labels = suggest_labels([split_record(r)[1] for r in data.records])
    return {"object": "tf.eval.options", "kinds": ["task", "benchmark"], "default_file_id": default_id,
            "default_split": default_split, "file_id": chosen, "files": files, "suggested_labels": labels,
            "benchmarks": benchmarks(), "default_limit": DEFAULT_LIMIT, "max_limit": MAX_LIMIT,
            "memorization_note": MEMORIZATION}
