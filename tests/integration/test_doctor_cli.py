"""`tuneforge doctor`: versions, devices, and the memory estimate of a config against free memory."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app, doctor_cmd
from tuneforge.models.memory import LOGIT_COPIES


@pytest.fixture()
def config(tmp_path, tiny_model):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}", "output": str(i)}) + "\n" for i in range(10)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model:\n  name: {tiny_model}\n  device: cpu\ndata:\n  train: [train.jsonl]\n  cutoff_len: 512\n"
                   "method:\n  type: full\n")
    return cfg


def test_versions_and_devices():
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"python", "torch", "transformers", "peft", "trl", "tuneforge"} <= set(report["versions"])
    assert report["versions"]["torch"] and report["devices"]["cpu"]["cores"] >= 1
    assert 0 < report["devices"]["cpu"]["ram_available"] <= report["devices"]["cpu"]["ram_total"]
    assert report["memory"] is None


def test_memory_estimate_of_a_config_that_fits(config):
    result = CliRunner().invoke(app, ["doctor", str(config), "train.batch_size=2", "--json"])
    assert result.exit_code == 0, result.output
    mem = json.loads(result.stdout)["memory"]
    assert mem["fits"] and mem["suggestions"] == [] and mem["device"] == "cpu"
    assert mem["shape"]["n_params"] == 656_000 and mem["trainable_params"] == 656_000
    assert mem["terms"]["logits"] == 2 * 512 * 2048 * 4 * LOGIT_COPIES
    assert mem["total"] == sum(mem["terms"].values()) and mem["free"] > mem["total"]


def test_a_config_that_does_not_fit_gets_cheaper_settings(config, monkeypatch):
    real = doctor_cmd.devices

    def small_machine():
        dev = real()
        dev["cpu"]["ram_available"] = 900 * 2 ** 20
        return dev

    monkeypatch.setattr(doctor_cmd, "devices", small_machine)
    result = CliRunner().invoke(app, ["doctor", str(config), "train.batch_size=8"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    out = result.stderr
    assert "will NOT fit" in out and "available RAM" in out and "logits" in out
    assert "try method.type=lora" in out and "train.batch_size=2 train.grad_accum=4" in out
    assert "data.cutoff_len=256" in out and "gradient_checkpointing=true" in out
