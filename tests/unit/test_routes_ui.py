"""The read-only /tf/v1 routes the web UI reads (serve.routes_ui), on the 656K base without a running scheduler:
each answer must equal what the library function it wraps says, and nothing may leak the server's storage paths."""

from __future__ import annotations

import json

import pytest
import yaml
from fastapi.testclient import TestClient

from tuneforge.config import compat
from tuneforge.config.auto import auto_epochs
from tuneforge.serve.app import create_app
from tuneforge.serve.settings import ServeSettings
from tuneforge.ui.app import mount_ui

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("What color is the sky?", "Blue."), ("What color is grass?", "Green.")]] * 3
PAIR = {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}


@pytest.fixture(scope="module")
def settings(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    return ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                         storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}")


@pytest.fixture(scope="module")
def client(settings):
    app = create_app(settings)  # no `with`: the scheduler never starts, so no job ever runs here
    mount_ui(app)
    return TestClient(app)


def upload(client, name: str, rows: list[dict], key: str | None = None) -> str:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = client.post("/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


@pytest.fixture(scope="module")
def chat_file(client) -> str:
    return upload(client, "colors.jsonl", ROWS)


def test_the_base_is_described_from_the_loaded_model(client, settings):
    base = client.get("/tf/v1/base").json()
    assert base["id"] == "tiny" and base["parameters"] == 656_000 and base["context_length"] == 512
    assert base["chat_template"] is True and base["template"] == "chatml" and base["device"] == "cpu"
    assert base["log_requests"] is False and base["jobs"] is True


def test_the_preview_marks_only_the_answers_as_trained(client, chat_file, settings):
    preview = client.get(f"/tf/v1/files/{chat_file}/preview", params={"n": 2}).json()
    assert preview["format"] == "openai" and preview["kind"] == "chat" and preview["stage"] == "sft"
    assert preview["rows"] == 6 and len(preview["samples"]) == 2
    first = preview["samples"][0]
    trained = "".join(s["text"] for s in first["segments"] if s["trained"])
    context = "".join(s["text"] for s in first["segments"] if not s["trained"])
    assert trained.startswith("Blue.") and "What color is the sky?" in context and "Blue." not in context
    assert first["source"] == "colors.jsonl:1" and first["tokens"] > 0
    assert preview["tokens"]["n"] == 6 and preview["trained_tokens"]["max"] >= 1
    assert str(settings.storage_dir) not in json.dumps(preview)


def test_the_doctor_summary_names_lines_by_the_uploaded_name(client, chat_file, settings):
    doctor = client.get(f"/tf/v1/files/{chat_file}/doctor").json()
    assert doctor["dataset"]["name"] == "colors.jsonl" and doctor["dataset"]["rows"] == 6
    dups = next(f for f in doctor["findings"] if f["check"] == "exact_duplicates")
    assert dups["count"] == 4 and "colors.jsonl:3" in dups["examples"][0]["sources"]
    assert doctor["stats"]["lengths"]["tokens"]["template"] == "chatml"
    assert str(settings.storage_dir) not in json.dumps(doctor)


def test_options_come_from_the_compatibility_table_and_the_data(client, chat_file):
    options = client.get("/tf/v1/options", params={"file_id": chat_file}).json()
    stages = {s["method"]: s for s in options["stages"]}
    assert options["kind"] == "chat" and stages["supervised"]["fits_data"] and not stages["dpo"]["fits_data"]
    for s in options["stages"]:
        assert s["methods"] == [m["name"] for m in options["methods"]
                                if compat.supported(s["stage"], m["name"], device="cpu")]
    assert "prompt" in stages["supervised"]["methods"] and "prompt" not in stages["dpo"]["methods"]
    assert all(m["description"] for m in options["methods"]) and options["default"]["type"] == "lora"
    pairs = upload(client, "pairs.jsonl", [PAIR] * 3)
    assert client.get("/tf/v1/options", params={"file_id": pairs}).json()["kind"] == "pairwise"
    preview = client.get(f"/tf/v1/files/{pairs}/preview", params={"n": 2}).json()
    assert preview["stage"] == "dpo" and [s["source"] for s in preview["samples"]] == ["pairs.jsonl:1 · chosen",
                                                                                      "pairs.jsonl:1 · rejected"]


def test_tuneforges_own_method_types_are_offered_for_the_data_they_train_on(client):
    kto = upload(client, "kto.jsonl", [{**ROWS[0], "label": True}, {**ROWS[1], "label": False}])
    text = upload(client, "stories.jsonl", [{"text": "Once upon a time."}, {"text": "The end."}])
    for file_id, kind, stage in ((kto, "kto", "kto"), (text, "pretraining", "pt")):
        options = client.get("/tf/v1/options", params={"file_id": file_id}).json()
        assert [s["method"] for s in options["stages"] if s["fits_data"]] == [kind]
        assert client.get(f"/tf/v1/files/{file_id}/preview").json()["stage"] == stage
        plan = client.post("/tf/v1/plan", json={"model": "tiny", "training_file": file_id, "method": {"type": kind}})
        assert yaml.safe_load(plan.json()["yaml"])["stage"] == {"type": stage}
    pairs = upload(client, "pairs.jsonl", [PAIR] * 2)
    fitting = [s["method"] for s in client.get("/tf/v1/options", params={"file_id": pairs}).json()["stages"]
               if s["fits_data"]]
    assert fitting == ["dpo", "orpo", "simpo"]


def test_reinforcement_prompts_preview_and_plan_with_the_grader_the_page_builds(client):
    prompts = upload(client, "rl.jsonl", [{"messages": [{"role": "user", "content": "Sky?"}], "answer": "Blue"}])
    assert client.get("/tf/v1/options", params={"file_id": prompts}).json()["kind"] == "prompts"
    preview = client.get(f"/tf/v1/files/{prompts}/preview").json()
    segments = preview["samples"][0]["segments"]
    assert preview["stage"] == "grpo" and "Sky?" in segments[0]["text"] and not any(s["trained"] for s in segments)
    doctor = client.get(f"/tf/v1/files/{prompts}/doctor")
    assert doctor.status_code == 200, doctor.text
    assert doctor.json()["dataset"]["rows"] == 1
    grader = {"type": "string_check", "name": "reference", "operation": "ilike", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}"}
    request = {"model": "tiny", "training_file": prompts,
               "method": {"type": "reinforcement", "reinforcement": {"grader": grader}}}
    plan = client.post("/tf/v1/plan", json=request)
    assert plan.status_code == 200, plan.text
    rewards = yaml.safe_load(plan.json()["yaml"])["stage"]["rewards"]
    assert rewards == [{"name": "grader", "grader": grader, "allow_python": False}]
    bare = client.post("/tf/v1/plan", json={**request, "method": {"type": "reinforcement"}})
    assert bare.status_code == 400 and "grader is required" in bare.json()["error"]["message"]


def test_the_plan_is_the_config_a_job_would_run(client, chat_file, settings):
    request = {"model": "tiny", "training_file": chat_file, "tuneforge": {"train.max_steps": 5, "method.r": 4},
               "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 2}}}}
    plan = client.post("/tf/v1/plan", json=request).json()
    config = yaml.safe_load(plan["yaml"])
    assert config["train"]["max_steps"] == 5 and config["train"]["batch_size"] == 2
    assert config["method"] == {"type": "lora", "r": 4} and config["stage"] == {"type": "sft"}
    assert config["data"]["train"][0]["path"].startswith(str(settings.storage_dir))
    assert plan["resolved"]["epochs"] == auto_epochs(6) and plan["resolved"]["batch_size"] == 2
    assert "epochs" in plan["resolved"]["chosen"] and "batch_size" not in plan["resolved"]["chosen"]
    assert 0 < plan["memory"]["trainable_share"] < 1 and plan["memory"]["bytes"] > 0
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []  # planning creates nothing

    typo = client.post("/tf/v1/plan", json={**request, "tuneforge": {"train.max_stepz": 5}})
    assert typo.status_code == 400 and "did you mean 'train.max_steps'" in typo.json()["error"]["message"]
    dpo = client.post("/tf/v1/plan", json={"model": "tiny", "training_file": chat_file, "method": {"type": "dpo"}})
    assert dpo.status_code == 400 and dpo.json()["error"]["code"] == "invalid_file_format"


def test_another_projects_file_is_not_found(client, settings, chat_file):
    from tuneforge.registry.keys import create_key
    from tuneforge.registry.store import open_store

    _, secret = create_key(open_store(settings.registry_url), "team-b")
    for path in (f"/tf/v1/files/{chat_file}/preview", f"/tf/v1/files/{chat_file}/doctor"):
        assert client.get(path, headers={"Authorization": f"Bearer {secret}"}).status_code == 404


def test_the_ui_is_served_at_the_root_and_the_api_still_answers(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>tuneforge</title>" in page.text and 'src="app.js"' in page.text
    assert client.get("/app.js").status_code == 200 and client.get("/i18n.js").status_code == 200
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny" and client.get("/health").status_code == 200
