"""Export: LoRA merge on the 656K TinyStories model, reload parity, refusal to overwrite, corrupted weights caught."""

from __future__ import annotations

import json

import pytest
import torch

from train_helpers import train_sky_adapter
from tuneforge.data.templates import template_stop_token_ids
from tuneforge.export import merge as merge_mod
from tuneforge.export.merge import merge_adapter, verify_export
from tuneforge.export.parity import ParityError
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.utils.errors import ModelError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter trained for a few steps with plain PEFT, saved with its chatml tokenizer like a run does."""
    out = tmp_path_factory.mktemp("run") / "adapter"
    model = train_sky_adapter(tiny_model_dir, out, steps=4)
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    return out


@pytest.fixture(scope="module")
def exported(tiny_model_dir, adapter_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "merged"
    return merge_adapter(str(tiny_model_dir), str(adapter_dir), str(out), device="cpu"), out


def test_merged_export_matches_base_plus_adapter(exported, tiny_model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    report, out = exported
    assert report.passed and report.max_abs_diff < 1e-4 and report.dtype == "float32"
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "README.md",
            "tuneforge_export.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "adapter_config.json").exists()
    meta = json.loads((out / "tuneforge_export.json").read_text())
    assert meta["adapter"] == str(adapter_dir) and meta["chat_template"] == "chatml" and meta["parity"]["passed"]

    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no peft
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == load_tokenizer(str(adapter_dir)).chat_template
    eos = GenerationConfig.from_pretrained(out).eos_token_id
    assert set(template_stop_token_ids(tok)) <= set(eos if isinstance(eos, list) else [eos])
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "Hello"}],
                                                add_generation_prompt=True)["input_ids"]])
    ref = PeftModel.from_pretrained(load_model(str(tiny_model_dir), device="cpu"), str(adapter_dir)).eval()
    base = load_model(str(tiny_model_dir), device="cpu").eval()
    with torch.inference_mode():
        a, b, c = merged(ids).logits, ref(ids).logits, base(ids).logits
    assert (a - b).abs().max() < 1e-4
    assert (a - c).abs().max() > 1e-2  # the adapter really changed the model


def test_corrupted_export_fails_the_check(exported, tiny_model_dir, adapter_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _, out = exported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "layers.0.self_attn.q_proj" in k)
    weights[name] = weights[name] + 0.05
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    assert verify_export(str(out), str(tiny_model_dir), str(adapter_dir), device="cpu").passed
    report = verify_export(str(broken), str(tiny_model_dir), str(adapter_dir), device="cpu")
    assert not report.passed and report.export_diff > 1e-3
    with pytest.raises(ParityError, match="parity check FAILED"):
        report.raise_if_failed(str(broken))


def test_a_wrong_merge_raises_and_writes_nothing(tiny_model_dir, adapter_dir, tmp_path, monkeypatch):
    real = merge_mod._merge

    def bad_merge(model, adapter):
        merged = real(model, adapter)
        with torch.no_grad():
            merged.model.layers[1].mlp.down_proj.weight.mul_(1.5)
        return merged

    monkeypatch.setattr(merge_mod, "_merge", bad_merge)
    out = tmp_path / "merged"
    with pytest.raises(ParityError, match="merged weights differ"):
        merge_adapter(str(tiny_model_dir), str(adapter_dir), str(out), device="cpu")
    assert not out.exists()
    assert (tmp_path / ".merged.tuneforge-partial" / "tuneforge_export.json").is_file()  # kept for inspection


def test_refuses_non_empty_destination(tiny_model_dir, adapter_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(ModelError, match="not empty; refusing to overwrite"):
        merge_adapter(str(tiny_model_dir), str(adapter_dir), str(out), device="cpu")
    assert (out / "notes.txt").read_text() == "my notes"
    with pytest.raises(ModelError, match="would destroy the source"):
        merge_adapter(str(tiny_model_dir), str(adapter_dir), str(adapter_dir.parent), overwrite=True, device="cpu")
    report = merge_adapter(str(tiny_model_dir), str(adapter_dir), str(out), overwrite=True, dtype="bfloat16",
                           device="cpu")
    assert report.passed and report.dtype == "bfloat16" and not (out / "notes.txt").exists()
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_full_model_export_is_identical(tiny_model_dir, adapter_dir, tmp_path):
    report = merge_adapter(str(tiny_model_dir), None, str(tmp_path / "full"), template="chatml", device="cpu")
    assert report.passed and report.max_abs_diff == 0.0
    assert json.loads((tmp_path / "full" / "tuneforge_export.json").read_text())["kind"] == "full"
    with pytest.raises(ModelError, match="is an adapter folder"):
        merge_adapter(str(adapter_dir), None, str(tmp_path / "x"))


def test_export_of_a_run_is_recorded_as_its_child(tiny_model_dir, adapter_dir, tmp_path, monkeypatch):
    import shutil

    from tuneforge.registry.api import RunRecorder
    from tuneforge.registry.lineage import lineage
    from tuneforge.registry.store import open_store
    from tuneforge.registry.testing import temp_registry_url

    run = tmp_path / "run"
    shutil.copytree(adapter_dir, run / "adapter")
    with temp_registry_url("sqlite", tmp_path) as url:
        monkeypatch.setenv("TUNEFORGE_REGISTRY_URL", url)
        train = RunRecorder.start(kind="train", base_model=str(tiny_model_dir), output_dir=str(run))
        train.finish("succeeded")
        (run / "run.json").write_text(json.dumps({"status": "succeeded", "run_id": train.run_id}))
        report = merge_adapter(str(tiny_model_dir), str(run / "adapter"), str(tmp_path / "merged"), device="cpu")
        tree = lineage(open_store(url), train.run_id)["tree"]
    assert tree["id"] == train.run_id and [c["id"] for c in tree["children"]] == [report.run_id]
    child = tree["children"][0]
    assert child["kind"] == "export" and child["status"] == "succeeded"
    assert [(a["kind"], a["path"]) for a in child["artifacts"]] == [("merged", str(tmp_path / "merged"))]


def test_a_mixture_of_depths_model_is_refused(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "mod"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "mixture_of_depths": {"capacity": 0.5, "every": 2}}))
    with pytest.raises(ModelError, match="Mixture-of-Depths"):
        merge_adapter(str(folder), None, str(tmp_path / "out"), device="cpu")
    assert not (tmp_path / "out").exists()
