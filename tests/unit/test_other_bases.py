"""Fine-tuning another base than the served one (`ServeSettings.other_bases`, on in `tuneforge ui`): refused unless
on; described without loading its weights; a job's config loads it; that base and an adapter trained on it are served
as their own copies of the weights, never stacked on the shared base."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from tuneforge.models.load import load_for_inference
from tuneforge.serve.app import create_app
from tuneforge.serve.catalog import ModelEntry
from tuneforge.serve.pool import ModelPool
from tuneforge.serve.settings import ServeSettings

pytestmark = pytest.mark.usefixtures("one_thread")
ROWS = [{"messages": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}]}] * 4


@pytest.fixture(scope="module")
def other_base(tiny_model_dir, tmp_path_factory):
    """The 656K model under another folder: a base the server does not serve."""
    folder = tmp_path_factory.mktemp("other") / "tiny-copy"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def make_client(tiny_model_dir, root, other_bases: bool) -> TestClient:
    settings = ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                             storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}",
                             other_bases=other_bases)
    return TestClient(create_app(settings))  # no scheduler: jobs are created, never run


def job_request(client, model: str) -> dict:
    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    file_id = client.post("/v1/files", files={"file": ("sky.jsonl", body)}, data={"purpose": "fine-tune"}).json()["id"]
    return {"model": model, "training_file": file_id, "tuneforge": {"train.max_steps": 2}}


def test_another_base_is_refused_unless_the_server_allows_it(tiny_model_dir, other_base, tmp_path):
    client = make_client(tiny_model_dir, tmp_path, other_bases=False)
    refused = client.post("/v1/fine_tuning/jobs", json=job_request(client, str(other_base)))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_available"
    assert "--other-bases" in refused.json()["error"]["message"]
    assert client.get("/tf/v1/base").json()["other_bases"] is False
    assert client.get("/tf/v1/models/describe", params={"name": str(other_base)}).status_code == 400


def test_a_job_on_another_base_trains_it_and_the_base_is_served_as_its_own_copy(tiny_model_dir, other_base,
                                                                                tmp_path):
    client = make_client(tiny_model_dir, tmp_path, other_bases=True)
    facts = client.get("/tf/v1/models/describe", params={"name": str(other_base)}).json()
    assert facts["parameters"] == 656_000 and facts["context_length"] == 512 and facts["kind"] == "dir"
    missing = client.get("/tf/v1/models/describe", params={"name": str(tmp_path / "nothing")})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "model_not_found"

    request = job_request(client, str(other_base))
    plan = client.post("/tf/v1/plan", json=request).json()
    assert yaml.safe_load(plan["yaml"])["model"] == {"name": str(other_base), "template": "auto"}
    job = client.post("/v1/fine_tuning/jobs", json=request)
    assert job.status_code == 200, job.text
    assert job.json()["model"] == str(other_base)

    # the job's base is a model id of its project now: served as its own copy, beside the shared base
    assert client.get(f"/v1/models/{other_base}").json()["root"] == str(other_base)
    answer = client.post("/v1/completions", json={"model": str(other_base), "prompt": "Once upon a time",
                                                  "max_tokens": 4, "temperature": 0})
    assert answer.status_code == 200, answer.text
    served = client.post("/v1/completions", json={"model": "tiny", "prompt": "Once upon a time", "max_tokens": 4,
                                                  "temperature": 0}).json()
    assert answer.json()["choices"][0]["text"] == served["choices"][0]["text"]  # the same weights, another folder
    assert client.app.state.tuneforge.pool.loaded()["copies"] == [str(other_base)]


def test_an_adapter_of_another_base_loads_on_that_base_not_on_the_served_one(tiny_model_dir, other_base, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(other_base)
    with torch.no_grad():  # make the other base differ from the served one
        for p in model.parameters():
            p.mul_(1.5)
    model.save_pretrained(other_base)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")

    pool = ModelPool(ServeSettings(model=str(tiny_model_dir), template="chatml", device="cpu", runs_dir=None))
    entry = ModelEntry("ft:other", "adapter", str(tmp_path / "adapter"), str(other_base), 0, lora=True,
                       base=str(other_base))
    ids = torch.tensor([[1, 2, 3, 4]])
    with pool.lease(entry) as engine:
        got = engine.model(input_ids=ids).logits
    want_model, _ = load_for_inference(str(other_base), str(tmp_path / "adapter"), device="cpu")
    on_served, _ = load_for_inference(str(tiny_model_dir), str(tmp_path / "adapter"), device="cpu")
    with torch.no_grad():
        want, wrong = want_model(input_ids=ids).logits, on_served(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, wrong, atol=1e-3)
    assert pool.loaded() == {"adapters": [], "copies": ["ft:other"]}
