"""The /tf/v1/runs routes the web UI's Runs section reads (serve.routes_runs), on the 656K base with the jobs
scheduler running: runs come from real jobs trained in worker processes, and every answer must equal what the
registry library says (`tuneforge runs`), show the server's storage folder only as <storage>, and keep another
project's runs out of sight. Export is the library's merge + parity check; resume goes through the jobs scheduler.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from tuneforge.registry import queries
from tuneforge.serve.app import create_app
from tuneforge.serve.settings import ServeSettings

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("What color is the sky?", "Blue."), ("What color is grass?", "Green."),
                     ("What color is the sun?", "Yellow."), ("What color is snow?", "White.")]] * 4
FAST = {"train.max_steps": 8, "train.learning_rate": 5e-3, "train.warmup_ratio": 0, "train.save_steps": 4,
        "method.r": 4, "data.cutoff_len": 64}


@pytest.fixture(scope="module")
def settings(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                         storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}",
                         concurrency=2)  # the finished job and the one cancelled later train side by side


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as c:  # `with`: the lifespan starts the jobs scheduler
        yield c


@pytest.fixture(scope="module")
def store(client):
    return client.app.state.tuneforge.jobs.store


@pytest.fixture(scope="module")
def training_file(client) -> str:
    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    answer = client.post("/v1/files", files={"file": ("colors.jsonl", body)}, data={"purpose": "fine-tune"})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def create_job(client, training_file, **extra) -> str:
    request = {"model": "tiny", "training_file": training_file, "suffix": "colors", "tuneforge": {**FAST, **extra},
               "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 2}}}}
    answer = client.post("/v1/fine_tuning/jobs", json=request)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def wait_for(check, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout} s for {what}")


def job(client, job_id: str) -> dict:
    return client.get(f"/v1/fine_tuning/jobs/{job_id}").json()


def run_of(client, job_id: str) -> dict | None:
    return next((r for r in client.get("/tf/v1/runs").json()["data"] if (r["job"] or {}).get("id") == job_id),
                None)


@pytest.fixture(scope="module")
def two_jobs(client, training_file) -> tuple[str, str]:
    """One that finishes and one long one (cancelled by a test): started together, they train at once."""
    return create_job(client, training_file), create_job(client, training_file, **{"train.max_steps": 400})


@pytest.fixture(scope="module")
def finished(client, two_jobs) -> dict:
    job_id = two_jobs[0]
    wait_for(lambda: job(client, job_id)["status"] in ("succeeded", "failed"), "the job to finish")
    assert job(client, job_id)["status"] == "succeeded", job(client, job_id)["error"]
    return wait_for(lambda: run_of(client, job_id), "the job's run")


def test_a_finished_job_is_listed_with_its_final_metrics(client, store, finished, settings):
    listed = client.get("/tf/v1/runs").json()
    assert listed["object"] == "list" and listed["has_more"] is False
    run = finished
    assert run["kind"] == "train" and run["status"] == "succeeded" and run["stage"] == "sft"
    assert run["method"] == "lora" and run["base_model"] == "tiny" and run["name"] == "colors"
    assert run["job"]["status"] == "succeeded" and run["job"]["fine_tuned_model"].startswith("ft:tiny:colors:")
    final = queries.final_metrics(store, run["id"])
    assert run["metrics"]["loss"] == final["loss"] and run["steps"] == 8
    assert run["created_at"] <= run["ended_at"] and run["duration_s"] > 0
    assert run["datasets"][0]["name"] == "colors.jsonl" and run["datasets"][0]["role"] == "train"
    assert str(settings.storage_dir) not in json.dumps(listed)
    assert client.get("/tf/v1/runs", params={"status": "failed"}).json()["data"] == []


def test_a_run_opens_with_its_config_loss_series_lineage_and_actions(client, store, finished, training_file,
                                                                     settings):
    detail = client.get(f"/tf/v1/runs/{finished['id']}").json()
    config = yaml.safe_load(detail["config_yaml"])
    assert config["train"]["max_steps"] == 8 and config["method"]["r"] == 4
    assert config["output"]["dir"].startswith("<storage>/jobs/") and str(settings.storage_dir) not in json.dumps(detail)
    losses = [row[2] for row in queries.metric_series(store, finished["id"], ["loss"])["loss"]]
    assert [v for _, v in detail["series"]["loss"]] == losses and len(losses) >= 2
    assert detail["lineage"]["id"] == finished["id"] and detail["lineage"]["focus"] is True
    assert {a["kind"] for a in detail["artifacts"]} >= {"adapter"} and all(a["exists"] for a in detail["artifacts"]
                                                                          if a["kind"] == "adapter")
    assert next(a for a in detail["artifacts"] if a["kind"] == "adapter")["name"] == "adapter"
    actions = detail["actions"]
    assert actions["export"]["ok"], actions["export"]
    assert actions["export"]["ok"] and not actions["resume"]["ok"] and "finished" in actions["resume"]["why"]
    new = actions["new_run"]
    assert new["ok"] and new["training_file"] == {"id": training_file, "filename": "colors.jsonl"}
    assert new["stage"] == "supervised" and new["method"] == "lora" and new["overrides"] == FAST
    assert new["suffix"] == "colors"
    assert new["hyperparameters"] == {"n_epochs": "auto", "learning_rate_multiplier": "auto", "batch_size": 2}
    # what the page fills in is a valid job request: the plan of it has the run's settings
    request = {"model": "tiny", "training_file": new["training_file"]["id"], "tuneforge": new["overrides"],
               "method": {"type": new["stage"], new["stage"]: {"hyperparameters": new["hyperparameters"]}}}
    planned = yaml.safe_load(client.post("/tf/v1/plan", json=request).json()["yaml"])
    assert planned["train"]["max_steps"] == 8 and planned["train"]["batch_size"] == 2
    assert client.get("/tf/v1/runs/nope").status_code == 404
    assert client.get("/tf/v1/runs/..%2F..%2Fetc").status_code == 404


def test_export_merges_checks_parity_and_never_overwrites(client, finished):
    answer = client.post(f"/tf/v1/runs/{finished['id']}/export", json={"dtype": "float32"})
    assert answer.status_code == 200, answer.text
    export = answer.json()
    assert export["passed"] and export["parity"]["max_abs_diff"] <= 1e-3 and export["dtype"] == "float32"
    assert export["folder"] == "exports/merged" and export["path"].startswith("<storage>/jobs/")
    child = client.get(f"/tf/v1/runs/{export['run_id']}").json()
    assert child["kind"] == "export" and child["status"] == "succeeded" and child["parent_id"] == finished["id"]
    assert child["parity"]["passed"] and not child["actions"]["export"]["ok"]
    assert not child["actions"]["new_run"]["ok"] and not child["actions"]["resume"]["ok"]
    assert export["run_id"] in client.get(f"/tf/v1/runs/{finished['id']}").json()["children"]
    again = client.post(f"/tf/v1/runs/{finished['id']}/export", json={"name": "merged"})
    assert again.status_code == 409 and "never overwrite" in again.json()["error"]["message"]
    bad = client.post(f"/tf/v1/runs/{finished['id']}/export", json={"name": "../x"})
    assert bad.status_code == 400


def test_another_project_sees_none_of_these_runs(client, store, finished):
    from tuneforge.registry.keys import create_key

    key = create_key(store, "other")[1]
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/tf/v1/runs", headers=headers).json()["data"] == []
    assert client.get(f"/tf/v1/runs/{finished['id']}", headers=headers).status_code == 404
    assert client.post(f"/tf/v1/runs/{finished['id']}/export", headers=headers).status_code == 404
    assert client.post(f"/tf/v1/runs/{finished['id']}/resume", headers=headers).status_code == 404


def test_a_run_without_a_job_is_the_local_users_and_says_what_cannot_apply(client, store, settings, tmp_path):
    from tuneforge.registry.api import RunRecorder
    from tuneforge.registry.keys import create_key

    config = {"model": {"name": "/elsewhere/model"}, "data": {"train": [{"path": str(tmp_path / "d.jsonl")}]},
              "stage": {"type": "sft"}, "method": {"type": "lora", "r": 4}, "train": {"max_steps": 3}}
    rec = RunRecorder.start(kind="train", config=config, base_model="/elsewhere/model", stage="sft", method="lora",
                            output_dir=str(tmp_path / "cli-run"), url=store.url)
    rec.log_metrics(1, {"loss": 2.5})
    rec.finish("failed", "RuntimeError: boom")
    run = client.get(f"/tf/v1/runs/{rec.run_id}").json()
    assert run["status"] == "failed" and run["job"] is None and run["name"] == "cli-run" and run["error"]
    assert run["metrics"] == {"loss": 2.5}
    assert not run["actions"]["resume"]["ok"] and "tuneforge train" in run["actions"]["resume"]["why"]
    assert not run["actions"]["export"]["ok"] and "failed" in run["actions"]["export"]["why"]
    assert not run["actions"]["new_run"]["ok"] and "this server fine-tunes tiny" in run["actions"]["new_run"]["why"]
    key = create_key(store, "another")[1]
    assert client.get(f"/tf/v1/runs/{rec.run_id}", headers={"Authorization": f"Bearer {key}"}).status_code == 404


def test_a_cancelled_job_continues_from_its_checkpoint_as_a_new_job(client, two_jobs):
    old = two_jobs[1]
    ckpt = wait_for(lambda: client.get(f"/v1/fine_tuning/jobs/{old}/checkpoints").json()["data"], "a checkpoint")
    # paused: resuming its run resumes the job (as POST /v1/fine_tuning/jobs/{id}/resume does)
    assert client.post(f"/v1/fine_tuning/jobs/{old}/pause").status_code == 200
    wait_for(lambda: job(client, old)["status"] == "paused", "the job to pause")
    paused = run_of(client, old)
    assert paused["status"] == "interrupted" and paused["job"]["status"] == "paused"
    assert client.get(f"/tf/v1/runs/{paused['id']}").json()["actions"]["resume"]["action"] == "resume"
    answer = client.post(f"/tf/v1/runs/{paused['id']}/resume")
    assert answer.status_code == 200 and answer.json()["action"] == "resumed"
    assert answer.json()["job"]["id"] == old and answer.json()["job"]["status"] == "queued"
    # cancelled (a failed job is the same case): its run continues from its last checkpoint as a new job
    assert client.post(f"/v1/fine_tuning/jobs/{old}/cancel").status_code == 200
    run = wait_for(lambda: (r := run_of(client, old)) and r["status"] != "running" and r, "the run to stop")
    wait_for(lambda: client.get(f"/tf/v1/runs/{run['id']}").json()["actions"]["resume"]["ok"], "no worker left")
    step = client.get(f"/tf/v1/runs/{run['id']}").json()["actions"]["resume"]["step"]
    assert step >= ckpt[-1]["step_number"]
    answer = client.post(f"/tf/v1/runs/{run['id']}/resume")
    assert answer.status_code == 200, answer.text
    assert answer.json()["action"] == "continued" and answer.json()["step"] == step
    new = answer.json()["job"]["id"]
    assert job(client, old)["status"] == "cancelled"  # the old job stays as it ended

    def first_metrics():
        events = client.get(f"/v1/fine_tuning/jobs/{new}/events", params={"limit": 100}).json()["data"]
        return [e for e in events if e["type"] == "metrics"]

    metrics = wait_for(first_metrics, "the new job's first step")
    client.post(f"/v1/fine_tuning/jobs/{new}/cancel")
    assert min(e["data"]["step"] for e in metrics) > step  # it went on from the checkpoint, not from step 0
    messages = [e["message"] for e in client.get(f"/v1/fine_tuning/jobs/{new}/events").json()["data"]]
    assert f"Training started from {old}'s checkpoint step {step}" in messages
    continued = wait_for(lambda: run_of(client, new), "the new job's run")
    assert continued["parent_id"] == run["id"] and continued["id"] in client.get(
        f"/tf/v1/runs/{run['id']}").json()["children"]
    again = client.post(f"/tf/v1/runs/{run['id']}/resume")  # one continuation per ended job
    assert again.status_code == 409 and f"continued already as {new}" in again.json()["error"]["message"]
    wait_for(lambda: run_of(client, new)["status"] != "running", "the new job's worker to stop")  # no orphan
