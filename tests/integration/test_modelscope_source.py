"""`modelscope:ORG/NAME` as a model and a dataset, without a network: the `modelscope` package is replaced by a
stand-in whose snapshot_download serves a local folder laid out like ModelScope's cache ($MODELSCOPE_CACHE/hub/
models/ORG/NAME, …/datasets/ORG/NAME). Everything after the download is tuneforge's real code path."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from train_helpers import tiny_config
from tuneforge.data.catalog import load_dataset
from tuneforge.models.source import resolve_model
from tuneforge.utils.errors import DataError, ModelError

ROWS = [{"instruction": f"What is {i} plus {i}?", "output": str(2 * i)} for i in range(8)]


@pytest.fixture
def modelscope_cache(tmp_path, monkeypatch, tiny_model_dir):
    cache = tmp_path / "ms-cache"
    shutil.copytree(tiny_model_dir, cache / "hub" / "models" / "tuneforge" / "tiny")
    data = cache / "hub" / "datasets" / "tuneforge" / "sums"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:6]))
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[6:]))
    calls = []

    def snapshot_download(model_id, repo_type="model", cache_dir=None, revision=None):
        calls.append((model_id, repo_type, cache_dir))
        folder = Path(cache_dir) / "hub" / f"{repo_type}s" / model_id
        if not folder.is_dir():
            raise ConnectionError(f"cannot reach modelscope.cn for {model_id}")
        return str(folder)

    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(snapshot_download=snapshot_download))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    return types.SimpleNamespace(root=cache, data=data, calls=calls)


def test_a_modelscope_model_loads_like_the_same_local_folder(modelscope_cache, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    src = resolve_model("modelscope:tuneforge/tiny")
    assert src.kind == "dir" and src.name == "modelscope:tuneforge/tiny"
    assert Path(src.path) == (modelscope_cache.root / "hub/models/tuneforge/tiny").resolve()
    assert modelscope_cache.calls == [("tuneforge/tiny", "model", str(modelscope_cache.root))]
    ids = torch.tensor([[1, 5, 10, 20, 30]])
    ours = AutoModelForCausalLM.from_pretrained(src.path)(ids).logits
    local = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert torch.equal(ours, local)


def test_a_modelscope_dataset_reads_like_the_local_files(modelscope_cache):
    ms = load_dataset({"path": "modelscope:tuneforge/sums"})
    local = load_dataset({"path": str(modelscope_cache.data / "train.jsonl")})
    assert ms.fingerprint == local.fingerprint and len(ms.records) == 6  # the train split, not test.jsonl
    test = load_dataset({"path": "modelscope:tuneforge/sums", "split": "test"})
    assert [r.messages[-1]["content"] for r in test.records] == ["12", "14"]


def test_a_run_trains_from_modelscope_model_and_data(modelscope_cache, tmp_path):
    from tuneforge.train.runner import train

    cfg = tiny_config(tmp_path, Path("unused"), "model.name=modelscope:tuneforge/tiny",
                      "data.train=modelscope:tuneforge/sums", "train.max_steps=2")
    assert cfg.model.name == "modelscope:tuneforge/tiny" and cfg.data.train[0].path == "modelscope:tuneforge/sums"
    result = train(cfg)
    assert result.status == "succeeded"
    info = json.loads((result.output_dir / "run.json").read_text())
    assert info["base_model"] == "modelscope:tuneforge/tiny" and info["datasets"]


def test_missing_package_unknown_ids_and_no_network_are_clear_errors(modelscope_cache, monkeypatch):
    with pytest.raises(ModelError) as err:
        resolve_model("modelscope:tuneforge/missing")
    assert "download failed" in err.value.message and "offline" in err.value.hint
    with pytest.raises(DataError) as err:
        load_dataset({"path": "modelscope:tuneforge/nothing"})
    assert "modelscope:tuneforge/nothing" in str(err.value)
    with pytest.raises(ModelError) as err:
        resolve_model("modelscope:no-org-here")
    assert "ORG/NAME" in err.value.hint
    monkeypatch.setitem(sys.modules, "modelscope", None)  # not installed
    with pytest.raises(ModelError) as err:
        resolve_model("modelscope:tuneforge/tiny")
    assert "pip install modelscope" in err.value.hint
