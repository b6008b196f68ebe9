"""Fine-tuning jobs through `tuneforge serve`, driven by the official openai client: upload, create, watch, chat with
the result; cancel, pause and resume; a bad file; a worker killed outright and a server restarted mid-job.

Jobs train the 656K TinyStories base (served as "tiny" with the chatml template) in real worker processes, as
`tuneforge serve` runs them, with LoRA and a few dozen steps (the `tuneforge` extension sets train.max_steps).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import openai
import pytest
from openai import OpenAI

from tuneforge.infer.engine import Engine
from tuneforge.jobs import store as js
from tuneforge.registry.store import open_store
from tuneforge.serve.app import create_app
from tuneforge.serve.settings import ServeSettings

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(600)]

SKY = [{"role": "user", "content": "What color is the sky?"}]
ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("What color is the sky?", "Blue."), ("What color is grass?", "Green."),
                     ("What color is the sun?", "Yellow."), ("What color is snow?", "White.")]] * 4
FAST = {"train.max_steps": 12, "train.learning_rate": 5e-3, "train.warmup_ratio": 0, "train.save_steps": 4,
        "method.r": 4, "data.cutoff_len": 64}


def start_server(settings: ServeSettings):
    import uvicorn

    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]

    def stop():
        srv.should_exit = True
        thread.join(timeout=30)

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    return SimpleNamespace(app=app, client=client, stop=stop, url=f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def settings(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                         storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}")


@pytest.fixture(scope="module")
def server(settings):
    srv = start_server(settings)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return server.client


@pytest.fixture(scope="module")
def training_file(client, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "colors.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    with path.open("rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


def wait_for(client, job_id: str, statuses: tuple[str, ...], timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert job.status not in ("failed",) or "failed" in statuses, job.error
        assert time.monotonic() < deadline, f"job {job_id} still {job.status} after {timeout} s"
        time.sleep(0.2)


def metric_steps(client, job_id: str) -> list[int]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return sorted(e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data)


def messages(client, job_id: str) -> list[str]:
    return [e.message for e in reversed(client.fine_tuning.jobs.list_events(job_id, limit=1000).data)]


def create(client, training_file, **overrides):
    return client.fine_tuning.jobs.create(model="tiny", training_file=training_file.id, suffix="colors",
                                          extra_body={"tuneforge": {**FAST, **overrides}})


@pytest.fixture(scope="module")
def finished(client, training_file):
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=training_file.id, suffix="colors", seed=7, metadata={"team": "sky"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
        extra_body={"tuneforge": FAST})
    assert job.status == "queued" and job.object == "fine_tuning.job" and job.hyperparameters.batch_size == 4
    return wait_for(client, job.id, ("succeeded",))


def test_a_file_is_validated_on_upload_naming_its_bad_lines(client, training_file, tmp_path):
    assert training_file.status == "processed" and training_file.purpose == "fine-tune"
    assert training_file.filename == "colors.jsonl" and training_file.bytes > 0
    assert client.files.retrieve(training_file.id).id == training_file.id
    assert client.files.content(training_file.id).content.decode().splitlines()[0] == json.dumps(ROWS[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"messages": [{"role": "user", "content": "hi"}]})
                   + "\n{not json\n")
    with pytest.raises(openai.BadRequestError) as err, bad.open("rb") as f:
        client.files.create(file=f, purpose="fine-tune")
    message = err.value.body["message"]
    assert "bad.jsonl" in message and "line 2" in message and "line 3" in message and err.value.code == "invalid_file"
    assert [f.id for f in client.files.list()] == [training_file.id]  # the bad file was not kept
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-000000000000000000000000")


def test_a_job_trains_a_model_the_server_then_answers_with(client, finished, training_file, settings):
    assert finished.fine_tuned_model.startswith("ft:tiny:colors:") and finished.trained_tokens > 0
    assert finished.finished_at >= finished.created_at and finished.error is None and finished.seed == 7
    assert finished.hyperparameters.n_epochs is not None and finished.metadata == {"team": "sky"}
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "sky"})] == [finished.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "other"}).data == []
    assert metric_steps(client, finished.id) == list(range(1, 13))
    losses = [e.data["train_loss"] for e in client.fine_tuning.jobs.list_events(finished.id, limit=100).data
              if e.type == "metrics"][::-1]
    assert losses[-1] < losses[0]
    log = messages(client, finished.id)
    assert log[0].startswith("Validating training file") and "successfully completed" in log[-1]
    csv = client.files.content(finished.result_files[0]).content.decode().splitlines()
    header = csv[0].split(",")
    assert header[0] == "step" and "train_loss" in header and len(csv) == 1 + 12 + 1  # 12 steps + the summary row

    checkpoints = client.fine_tuning.jobs.checkpoints.list(finished.id).data
    assert [c.step_number for c in checkpoints] == [12, 8, 4]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{finished.fine_tuned_model}:ckpt-step-12"
    assert checkpoints[0].metrics.train_loss is not None

    ids = {m.id for m in client.models.list()}
    assert finished.fine_tuned_model in ids and checkpoints[-1].fine_tuned_model_checkpoint in ids
    r = client.chat.completions.create(model=finished.fine_tuned_model, messages=SKY, temperature=0, max_tokens=8)
    run_dir = js.get_job(open_store(settings.registry_url), None, finished.id).run_dir
    engine = Engine.load(settings.model, os.path.join(run_dir, "adapter"), device="cpu")  # as `tuneforge chat` does
    assert r.choices[0].message.content == engine.generate([SKY], max_new_tokens=8)[0].text
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=finished.fine_tuned_model, messages=SKY, temperature=0, max_tokens=8, stream=True) if c.choices)
    assert streamed == r.choices[0].message.content
    ckpt = client.chat.completions.create(model=checkpoints[-1].fine_tuned_model_checkpoint, messages=SKY,
                                          temperature=0, max_tokens=8)
    assert ckpt.choices[0].message.content  # an early checkpoint answers too


def test_projects_see_only_their_own_files_jobs_and_models(server, client, settings, finished, training_file):
    from tuneforge.registry.keys import create_key

    _, secret = create_key(open_store(settings.registry_url), "team-b")
    other = OpenAI(base_url=f"{server.url}/v1", api_key=secret, max_retries=0, timeout=60)
    for call in (lambda: other.files.retrieve(training_file.id), lambda: other.files.content(training_file.id),
                 lambda: other.files.delete(training_file.id), lambda: other.fine_tuning.jobs.retrieve(finished.id),
                 lambda: other.fine_tuning.jobs.cancel(finished.id),
                 lambda: other.fine_tuning.jobs.list_events(finished.id),
                 lambda: other.fine_tuning.jobs.checkpoints.list(finished.id),
                 lambda: other.chat.completions.create(model=finished.fine_tuned_model, messages=SKY, max_tokens=2)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as err:
        other.fine_tuning.jobs.create(model="tiny", training_file=training_file.id)
    assert err.value.code == "file_not_found"
    assert other.files.list().data == [] and other.fine_tuning.jobs.list().data == []
    assert finished.fine_tuned_model not in {m.id for m in other.models.list()}
    assert "tiny" in {m.id for m in other.models.list()}  # the base is everyone's
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.exe", b"MZ"), purpose="fine-tune")  # not a data file type


def test_upload_names_never_become_paths_and_sizes_are_limited(settings, tmp_path):
    small = start_server(dataclasses.replace(settings, max_upload_mb=1))
    try:
        row = json.dumps(ROWS[0]) + "\n"
        sneaky = small.client.files.create(file=("../../../etc/cron.d/evil.jsonl", row.encode()), purpose="fine-tune")
        assert sneaky.filename == "evil.jsonl"
        stored = js.get_file(open_store(settings.registry_url), "default", sneaky.id)
        assert stored.path == f"files/{sneaky.id}.jsonl" and (settings.storage_dir / stored.path).is_file()
        windows = small.client.files.create(file=("..\\..\\boot.ini.jsonl", row.encode()), purpose="fine-tune")
        assert windows.filename == "boot.ini.jsonl"
        with pytest.raises(openai.APIStatusError) as err:
            small.client.files.create(file=("big.jsonl", row.encode() * (2**20 // len(row) + 10)),
                                      purpose="fine-tune")
        assert err.value.status_code == 413
        assert not list((settings.storage_dir / "files").glob(".*.part"))  # nothing half-written is left
        with pytest.raises(openai.BadRequestError) as err:
            small.client.files.create(file=("a.jsonl", row.encode()), purpose="assistants")
        assert err.value.param == "purpose"
    finally:
        small.stop()


def registry_job(settings, job_id):
    return js.get_job(open_store(settings.registry_url), None, job_id)


def wait_for_step(client, job_id: str, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(s >= step for s in metric_steps(client, job_id)):
        assert client.fine_tuning.jobs.retrieve(job_id).status in ("queued", "running"), "the job ended early"
        assert time.monotonic() < deadline, f"job {job_id} did not reach step {step}"
        time.sleep(0.1)


def wait_until_worker_gone(settings, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while registry_job(settings, job_id).worker_pid is not None:
        assert time.monotonic() < deadline, "the worker did not stop"
        time.sleep(0.1)


def test_cancel_stops_the_worker_and_a_cancelled_job_stays_cancelled(client, training_file, settings, finished):
    job = create(client, training_file, **{"train.max_steps": 5000, "train.save_steps": 0})
    wait_for_step(client, job.id, 2)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    wait_until_worker_gone(settings, job.id)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert max(metric_steps(client, job.id)) < 5000 and client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model is None
    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.cancel(job.id)
    assert "cancelled already" in err.value.body["message"]
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)


def test_pause_saves_a_checkpoint_and_resume_continues_from_it(client, training_file, settings, finished):
    job = create(client, training_file, **{"train.max_steps": 400, "train.save_steps": 0})
    wait_for_step(client, job.id, 2)
    assert client.fine_tuning.jobs.pause(job.id).status == "pausing"
    paused = wait_for(client, job.id, ("paused",), timeout=120)
    wait_until_worker_gone(settings, job.id)
    at = max(metric_steps(client, job.id))
    assert at < 400 and f"paused at step {at}" in messages(client, job.id)[-1]
    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.pause(job.id)
    assert "paused already" in err.value.body["message"]
    with pytest.raises(openai.ConflictError) as err:  # an unfinished job's data cannot go from under it
        client.files.delete(training_file.id)
    assert job.id in err.value.body["message"]
    assert client.fine_tuning.jobs.resume(paused.id).status == "queued"
    done = wait_for(client, job.id, ("succeeded",))
    steps = metric_steps(client, job.id)
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == 400 and len(steps) == 400  # none twice
    assert f"Resuming from checkpoint step {at}" in messages(client, job.id)
    assert done.fine_tuned_model and registry_job(settings, job.id).attempts == 2


def test_a_killed_worker_is_restarted_from_its_last_checkpoint(client, training_file, settings, finished):
    job = create(client, training_file, **{"train.max_steps": 300, "train.save_steps": 20})
    wait_for_step(client, job.id, 45)
    os.kill(registry_job(settings, job.id).worker_pid, signal.SIGKILL)
    done = wait_for(client, job.id, ("succeeded", "failed"))
    assert done.status == "succeeded", done.error
    log = messages(client, job.id)
    restarted = next(m for m in log if "stopped unexpectedly" in m)
    assert "killed by SIGKILL" in restarted and "restarts from checkpoint step" in restarted
    assert any(m.startswith("Resuming from checkpoint step") for m in log)
    assert registry_job(settings, job.id).attempts == 2


def test_tuneforges_own_method_types_train_kto_and_pretraining_jobs(client, tmp_path, finished):
    kto, text = tmp_path / "kto.jsonl", tmp_path / "stories.jsonl"
    kto.write_text("".join(json.dumps({**r, "label": i % 2 == 0}) + "\n" for i, r in enumerate(ROWS)))
    text.write_text("".join(json.dumps({"text": f"The sky is blue and the grass is green. {i}"}) + "\n"
                            for i in range(8)))
    started = []
    for path, kind in ((kto, "kto"), (text, "pretraining")):
        with path.open("rb") as f:
            uploaded = client.files.create(file=f, purpose="fine-tune")
        with pytest.raises(openai.BadRequestError):  # the data decide which method types can train on them
            client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, method={"type": "dpo"})
        started.append(client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, method={"type": kind},
                                                      extra_body={"tuneforge": {**FAST, "train.max_steps": 3}}))
    for job in started:
        done = wait_for(client, job.id, ("succeeded", "failed"))
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model.startswith("ft:tiny:")
        assert any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data)


def test_a_reinforcement_job_trains_grpo_with_an_openai_grader(client, tmp_path, finished):
    prompts = tmp_path / "rl.jsonl"
    prompts.write_text("".join(json.dumps({"messages": r["messages"][:1], "answer": r["messages"][1]["content"]})
                               + "\n" for r in ROWS))
    with prompts.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    check = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
             "reference": "{{item.answer}}", "operation": "ilike"}
    grader = {"type": "multi", "name": "both", "calculate_output": "0.5 * exact + 0.5 * close",
              "graders": {"exact": check, "close": {**check, "type": "text_similarity", "name": "close",
                                                    "evaluation_metric": "fuzzy_match"}}}
    rl = {"train.max_steps": 2, "train.batch_size": 4, "stage.num_generations": 2,
          "stage.max_completion_length": 6, "method.r": 4, "data.cutoff_len": 64}
    job = client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id,
                                         method={"type": "reinforcement", "reinforcement": {"grader": grader}},
                                         extra_body={"tuneforge": rl})
    done = wait_for(client, job.id, ("succeeded", "failed"))
    assert done.status == "succeeded", done.error
    rewards = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
    assert rewards and all(0 <= e["reward"] <= 1 for e in rewards)
    for bad, why in (({"type": "python", "name": "p", "source": "def grade(s, i): return 1"}, "switched off"),
                     ({"type": "score_model", "name": "m", "model": "x", "input": []}, "not supported"),
                     ({**grader, "calculate_output": "__import__('os')"}, "calculate_output")):
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id,
                                           method={"type": "reinforcement", "reinforcement": {"grader": bad}})
        assert why in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:  # prompts without answers cannot train SFT
        client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id)
    assert err.value.body["param"] == "training_file"


def test_a_restarted_server_adopts_a_live_worker_and_restarts_a_dead_ones_job(settings, training_file, finished,
                                                                              server):
    """Server A stops while its worker trains on: server B adopts the worker (no second start). Server B then dies
    together with its worker (a machine crash) and leaves a job `running`: server C, on the same registry and
    storage, restarts it from its last checkpoint."""
    server.stop()
    a = start_server(settings)
    job = create(a.client, training_file, **{"train.max_steps": 300, "train.save_steps": 0})
    wait_for_step(a.client, job.id, 3)
    a.stop()
    assert registry_job(settings, job.id).status == "running"
    b = start_server(settings)
    try:
        done = wait_for(b.client, job.id, ("succeeded", "failed"))
        assert done.status == "succeeded" and registry_job(settings, job.id).attempts == 1, done.error
        crashed = create(b.client, training_file, **{"train.max_steps": 200, "train.save_steps": 10})
        wait_for_step(b.client, crashed.id, 25)
    finally:
        b.stop()
    os.kill(registry_job(settings, crashed.id).worker_pid, signal.SIGKILL)
    assert registry_job(settings, crashed.id).status == "running"
    c = start_server(settings)
    try:
        done = wait_for(c.client, crashed.id, ("succeeded", "failed"))
        assert done.status == "succeeded", done.error
        assert any("restarts from checkpoint step" in m for m in messages(c.client, crashed.id))
    finally:
        c.stop()
