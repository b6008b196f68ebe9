"""The web UI's other ways to make a training file (serve.routes_data): a file read with a hand-made column mapping,
an upload whose format cannot be detected, and a dataset registered in dataset_info.json, each stored as a NEW file
of canonical rows that trains like an upload; a mapping that leaves rows unreadable stores nothing."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tuneforge.data.catalog import load_dataset
from tuneforge.jobs.canonical import canonical_lines, read_mapped
from tuneforge.serve.app import create_app
from tuneforge.serve.settings import ServeSettings

pytestmark = pytest.mark.usefixtures("one_thread")

ALPACA = [{"instruction": "Sky color?", "input": "", "output": "Blue.", "better": "Blue, on a clear day."},
          {"instruction": "Grass color?", "input": "", "output": "Green.", "better": "Green, mostly."}]
QA_CSV = "question,answer\nWhat color is the sky?,Blue.\nWhat color is grass?,Green.\n"


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    (root / "qa.json").write_text(json.dumps([{"q": "Sky?", "a": "Blue."}, {"q": "Snow?", "a": "White."}]))
    (root / "dataset_info.json").write_text(json.dumps({
        "colors_qa": {"file_name": "qa.json", "columns": {"prompt": "q", "response": "a"}},
        "hub_only": {"hf_hub_url": "someone/not-reachable"}}))
    return root


@pytest.fixture(scope="module")
def settings(tiny_model_dir, tmp_path_factory, registry_dir):
    root = tmp_path_factory.mktemp("data")
    return ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                         storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}",
                         dataset_info=str(registry_dir))


@pytest.fixture(scope="module")
def client(settings):
    return TestClient(create_app(settings))  # no scheduler: nothing trains here


def upload(client, name: str, body: bytes):
    return client.post("/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"})


def n_files(client) -> int:
    return len(client.get("/v1/files").json()["data"])


def trained_text(client, file_id: str) -> str:
    preview = client.get(f"/tf/v1/files/{file_id}/preview", params={"n": 1}).json()
    return "".join(s["text"] for s in preview["samples"][0]["segments"] if s["trained"])


def test_the_detected_mapping_can_be_changed_by_hand_into_a_new_file(client, settings):
    file_id = upload(client, "colors.json", json.dumps(ALPACA).encode()).json()["id"]
    mapping = client.get(f"/tf/v1/files/{file_id}/mapping").json()
    assert mapping["format"] == "alpaca" and mapping["problem"] is None
    assert mapping["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}
    assert mapping["available"] == ["instruction", "input", "output", "better"] and "alpaca" in mapping["formats"]
    assert trained_text(client, file_id).startswith("Blue.")

    remapped = client.post(f"/tf/v1/files/{file_id}/remap",
                           json={"format": "alpaca", "columns": {"prompt": "instruction", "response": "better"}})
    assert remapped.status_code == 200, remapped.text
    new = remapped.json()
    assert new["id"] != file_id and new["filename"] == "colors.mapped.jsonl" and "2 rows" in new["status_details"]
    assert trained_text(client, new["id"]).startswith("Blue, on a clear day.")
    assert trained_text(client, file_id).startswith("Blue.")  # the original is unchanged
    assert str(settings.storage_dir) not in json.dumps(new)


def test_a_mapping_that_leaves_rows_unreadable_is_refused_and_stores_nothing(client, settings):
    file_id = upload(client, "colors.json", json.dumps(ALPACA).encode()).json()["id"]
    before = n_files(client)
    bad = client.post(f"/tf/v1/files/{file_id}/remap", json={"format": "alpaca", "columns": {"response": "answer"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_mapping"
    message = bad.json()["error"]["message"]
    assert "colors.json" in message and "'answer'" in message and str(settings.storage_dir) not in message
    typo = client.post(f"/tf/v1/files/{file_id}/remap", json={"format": "alpaca", "columns": {"answr": "output"}})
    assert typo.status_code == 400 and "unknown columns key 'answr'" in typo.json()["error"]["message"]
    assert n_files(client) == before


def test_an_undetectable_upload_trains_once_its_columns_are_mapped(client):
    refused = upload(client, "qa.csv", QA_CSV.encode())
    assert refused.status_code == 400 and "cannot detect the data format" in refused.json()["error"]["message"]
    mapped = client.post("/tf/v1/files/mapped", files={"file": ("qa.csv", QA_CSV.encode())},
                         data={"format": "alpaca", "columns": json.dumps({"prompt": "question", "response": "answer"})})
    assert mapped.status_code == 200, mapped.text
    new = mapped.json()
    assert new["filename"] == "qa.mapped.jsonl" and "2 rows, format openai" in new["status_details"]
    assert trained_text(client, new["id"]).startswith("Blue.")
    wrong = client.post("/tf/v1/files/mapped", files={"file": ("qa.csv", QA_CSV.encode())},
                        data={"format": "alpaca", "columns": "{not json"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "columns"


def test_registered_datasets_are_listed_and_imported_as_files(client):
    listed = {d["name"]: d for d in client.get("/tf/v1/datasets").json()["data"]}
    assert listed["colors_qa"]["local"] and not listed["hub_only"]["local"]
    imported = client.post("/tf/v1/datasets/colors_qa/import")
    assert imported.status_code == 200, imported.text
    assert imported.json()["filename"] == "colors_qa.jsonl" and "2 rows" in imported.json()["status_details"]
    assert trained_text(client, imported.json()["id"]).startswith("Blue.")
    assert client.post("/tf/v1/datasets/nope/import").status_code == 404


@pytest.mark.parametrize("name", ["alpaca_en_demo.json", "dpo_en_demo.json", "glaive_toolcall_en_demo.json",
                                  "kto_en_demo.json", "c4_demo.jsonl"])
def test_canonical_rows_read_back_as_the_same_records(shared, tmp_path, name):
    path = shared / "data" / "llamafactory_demo" / name
    records = read_mapped(path, "auto", {}, name)[:40]
    (tmp_path / "out.jsonl").write_bytes(b"".join(canonical_lines(records)))
    back = load_dataset({"path": str(tmp_path / "out.jsonl")}).records
    assert [r.normalized() for r in back] == [r.normalized() for r in records]
