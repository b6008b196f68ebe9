"""The /tf/v1/evals routes (serve.routes_eval) on the 656K base with one real tiny LoRA job: the before / after
comparison of the job's model with the base, benchmarks available offline, labels, errors, project scoping, and
evaluations that outlive the page (on disk, in the registry)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from tuneforge.serve.app import create_app
from tuneforge.serve.settings import ServeSettings

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

QA = [("What color is the sky?", "Blue."), ("What color is grass?", "Green."), ("What color is the sun?", "Yellow."),
      ("What color is snow?", "White.")]
ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
YES_NO = [{"instruction": "Is it an animal?", "input": w, "output": lab} for w, lab in
          [("cat", "yes"), ("dog", "yes"), ("stone", "no"), ("cup", "no"), ("horse", "yes"), ("chair", "no")]] * 2
FAST = {"train.max_steps": 60, "train.learning_rate": 1e-2, "train.warmup_ratio": 0, "train.save_steps": 0,
        "method.r": 8, "data.cutoff_len": 64, "train.batch_size": 4}


@pytest.fixture(scope="module")
def settings(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evals")
    return ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                         storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}")


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as client:  # `with`: the scheduler runs the job
        yield client


def upload(client, name: str, rows: list[dict], headers: dict | None = None) -> str:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    answer = client.post("/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"},
                         headers=headers or {})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def wait(client, path: str, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"waited {timeout} s for {path}: {body}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def job(client) -> dict:
    training = upload(client, "colors.jsonl", ROWS)
    created = client.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": training, "suffix": "ev",
                                                        "tuneforge": FAST})
    assert created.status_code == 200, created.text
    done = wait(client, f"/v1/fine_tuning/jobs/{created.json()['id']}",
                lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done.get("error")
    return done


def run_eval(client, body: dict) -> dict:
    started = client.post("/tf/v1/evals", json=body)
    assert started.status_code == 200, started.text
    first = started.json()
    assert first["status"] in ("queued", "running") and first["id"].startswith("eval-")
    return wait(client, f"/tf/v1/evals/{first['id']}", lambda e: e["status"] in ("succeeded", "failed"))


def test_before_after_on_the_jobs_training_data(client, job, settings):
    options = client.get("/tf/v1/evals/options", params={"model": job["fine_tuned_model"]}).json()
    assert options["default_file_id"] == job["training_file"] and options["default_split"] == "training"
    assert options["suggested_labels"] is None  # four different answers: free text
    assert [f["id"] for f in options["files"]] == [job["training_file"]]

    done = run_eval(client, {"model": job["fine_tuned_model"], "kind": "task"})
    assert done["status"] == "succeeded", done["error"]
    assert done["file_id"] == job["training_file"] and done["filename"] == "colors.jsonl"
    assert done["split"] == "training" and "memorized" in done["note"] and done["scoring"] == "generation"
    assert done["n"] == 4 and done["progress"] == {"done": 8, "total": 8, "phase": "done"}
    result = done["result"]
    metrics = {m["name"]: m for m in result["metrics"]}
    assert set(metrics) == {"bleu", "rouge1", "rouge2", "rougeL", "exact_match"}
    em = metrics["exact_match"]
    assert em["unit"] == "percent" and em["tuned"] > em["base"] and em["delta"] == em["tuned"] - em["base"]
    assert em["tuned"] >= 75  # the four rows are memorized
    assert result["wins"] + result["losses"] + result["ties"] == 4 and result["wins"] >= 3
    improved = {b["reference"]: b for b in result["better"]}
    assert len(improved) == result["wins"] and all(b["gain"] > 0 for b in result["better"])
    sky = improved["Blue."]
    assert "What color is the sky?" in sky["prompt"] and sky["tuned"].strip() == "Blue." and sky["base"] != "Blue."
    assert str(settings.storage_dir) not in json.dumps(done)

    listed = client.get("/tf/v1/evals", params={"model": job["fine_tuned_model"]}).json()["data"]
    assert done["id"] in [e["id"] for e in listed]
    assert client.get("/tf/v1/evals", params={"model": "ft:other"}).json()["data"] == []

    from tuneforge.registry import queries
    from tuneforge.registry.store import open_store

    store = open_store(settings.registry_url)
    recorded = queries.evals(store, done["run_id"])
    assert recorded[0]["name"] == "colors" and recorded[0]["metrics"]["exact_match"] == em["tuned"]
    assert recorded[0]["metrics"]["base_exact_match"] == em["base"]
    from tuneforge.jobs.store import get_job

    trained = get_job(store, None, job["id"]).run_id
    assert trained and queries.get_run(store, done["run_id"]).parent_run_id == trained


def test_labels_are_scored_in_parts_with_the_numbers_of_one_piece(client, job, settings):
    from tuneforge.eval.task_eval import classify
    from tuneforge.eval.taskdata import load_task_data

    labelled = upload(client, "animals.jsonl", YES_NO)
    options = client.get("/tf/v1/evals/options", params={"model": job["fine_tuned_model"], "file_id": labelled})
    assert options.json()["suggested_labels"] == ["no", "yes"]
    done = run_eval(client, {"model": job["fine_tuned_model"], "file_id": labelled})
    assert done["status"] == "succeeded", done["error"]
    assert done["scoring"] == "classification" and done["labels"] == ["no", "yes"] and done["split"] == "other"
    assert done["note"] is None and done["n"] == 12  # 12 rows: two parts of 8 and 4
    metrics = {m["name"]: m for m in done["result"]["metrics"]}
    assert set(metrics) == {"accuracy", "macro_f1", "n_unparseable"}
    assert not metrics["n_unparseable"]["higher_is_better"] and metrics["n_unparseable"]["unit"] == "count"
    storage = settings.storage_dir
    path = next((storage / "files").glob(f"{labelled}*"))
    whole = classify(client.app.state.tuneforge.pool.base, None, load_task_data(str(path), None, "score", None)
                     .records, ["no", "yes"], "score")
    assert metrics["accuracy"]["base"] == whole["metrics"]["accuracy"]
    assert metrics["macro_f1"]["base"] == whole["metrics"]["macro_f1"]

    text = run_eval(client, {"model": job["fine_tuned_model"], "file_id": labelled, "scoring": "text", "limit": 3})
    assert text["scoring"] == "generation" and text["n"] == 3 and text["labels"] is None


def test_a_benchmark_available_offline(client, job):
    offered = [b["name"] for b in client.get("/tf/v1/evals/options").json()["benchmarks"]]
    if "arc_easy" not in offered:
        pytest.skip("no ARC-Easy data on this machine")
    assert "gsm8k" not in offered  # generative benchmarks are not offered (minutes per item on real models)
    done = run_eval(client, {"model": job["fine_tuned_model"], "kind": "benchmark", "benchmark": "arc_easy",
                             "limit": 10})
    assert done["status"] == "succeeded", done["error"]
    assert done["n"] == 10 and done["scoring"] == "multiple_choice" and done["file_id"] is None
    metrics = {m["name"]: m for m in done["result"]["metrics"]}
    assert set(metrics) == {"acc", "acc_norm"} and all(0 <= m["base"] <= 1 for m in metrics.values())
    r = done["result"]
    assert r["wins"] + r["losses"] + r["ties"] == 10 and len(r["worse"]) == r["losses"]


def test_bad_requests_are_refused_before_anything_runs(client, job, settings):
    model = job["fine_tuned_model"]
    base = client.post("/tf/v1/evals", json={"model": "tiny"})
    assert base.status_code == 400 and "fine-tuned" in base.json()["error"]["message"]
    assert client.post("/tf/v1/evals", json={"model": "ft:tiny:nope:x"}).status_code == 404
    bench = client.post("/tf/v1/evals", json={"model": model, "kind": "benchmark", "benchmark": "nope"})
    assert bench.status_code == 400 and bench.json()["error"]["param"] == "benchmark"
    pairs = upload(client, "pairs.jsonl", [{"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}] * 3)
    refused = client.post("/tf/v1/evals", json={"model": model, "file_id": pairs})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_file_format"
    free = client.post("/tf/v1/evals", json={"model": model, "scoring": "labels"})
    assert free.status_code == 400 and free.json()["error"]["param"] == "labels"
    assert client.post("/tf/v1/evals", json={"model": model, "limit": 0}).status_code == 400
    assert client.get("/tf/v1/evals/eval-nothere").status_code == 404


def test_another_project_sees_neither_the_model_nor_its_evaluations(client, job, settings):
    from tuneforge.registry.keys import create_key
    from tuneforge.registry.store import open_store

    _, secret = create_key(open_store(settings.registry_url), "team-b")
    other = {"Authorization": f"Bearer {secret}"}
    mine = client.get("/tf/v1/evals").json()["data"]
    assert mine
    assert client.get(f"/tf/v1/evals/{mine[0]['id']}", headers=other).status_code == 404
    assert client.get("/tf/v1/evals", headers=other).json()["data"] == []
    assert client.post("/tf/v1/evals", json={"model": job["fine_tuned_model"]}, headers=other).status_code == 404


def test_an_evaluation_the_server_stopped_during_reads_failed(client, settings):
    from tuneforge.serve import evals_store

    folder = settings.storage_dir / "evals" / "eval-20200101000000abcd"
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps({"id": folder.name, "project": "default", "status": "running",
                                                  "created_at": 1, "model": "ft:x"}))
    assert folder.name not in evals_store.ACTIVE
    left = client.get(f"/tf/v1/evals/{folder.name}").json()
    assert left["status"] == "failed" and "stopped" in left["error"]
