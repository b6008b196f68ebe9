"""Every example really trains, through `tuneforge train`, on a fresh install (no shared demo folder): one optimizer
step with short sequences, output in a temporary folder. The README quickstart runs in full in test_quickstart.py.

All examples run in one process, so the embedded model is dequantized once (cached under TUNEFORGE_HOME).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.config.load import load_config
from tuneforge.methods import METHODS


EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")
                  if p.name != "quickstart.yaml")
ONE_STEP = ["train.max_steps=1", "train.batch_size=4", "data.cutoff_len=64", "eval.preview_prompts=[]"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_trains_one_step(example, tmp_path, fresh_install):
    from tuneforge.cli import app

    out = tmp_path / example.stem
    classifies = "classification:" in example.read_text()
    extra = ["eval.classification.max_samples=4"] if classifies else []
    if "max_completion_length:" in example.read_text():  # RL: the prompts must leave room for the completion
        # and no held-out rewards: sampling them costs most of the run (the two-step test below measures them)
        extra += ["data.cutoff_len=128", "data.val_size=0"]
    res = CliRunner().invoke(app, ["train", str(example), *ONE_STEP, *extra, f"output.dir={out}"])
    assert res.exit_code == 0, res.output + repr(res.exception)

    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "succeeded", run
    final = out / METHODS[load_config(example).method.type].artifact
    assert any(final.glob("*.safetensors")), sorted(p.name for p in out.rglob("*"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses), rows
    if classifies:  # the classification examples measured their dev set
        assert any(k.startswith("eval_cls/") for r in rows for k in r), rows


def test_hello_changes_the_answer_to_its_preview_prompt(tmp_path, fresh_install):
    """The README's one-minute tour: after 12 LoRA steps the base model greets like a pirate."""
    from tuneforge.cli import app

    example = EXAMPLES[0].parent / "hello.yaml"
    res = CliRunner().invoke(app, ["train", str(example), f"output.dir={tmp_path / 'hello'}"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    (row,) = json.loads((tmp_path / "hello" / "preview.json").read_text())
    assert "Ahoy" not in row["before"] and "Ahoy, matey!" in row["after"], row


STAGE_EXAMPLES = [p for p in EXAMPLES if p.stem in ("rm", "dpo", "simpo", "orpo", "kto", "grpo", "ppo")]


@pytest.mark.parametrize("example", STAGE_EXAMPLES, ids=[p.stem for p in STAGE_EXAMPLES])
def test_stage_example_runs_two_steps_on_the_tiny_model(example, tmp_path, tiny_model_dir):
    from tuneforge.cli import app

    out = tmp_path / example.stem
    res = CliRunner().invoke(app, ["train", str(example), f"model.name={tiny_model_dir}", "model.template=chatml",
                                   "train.max_steps=2", f"output.dir={out}"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "succeeded" and run["stage"] == example.stem
    assert any(k.startswith("eval_") for k in run["metrics"]), run["metrics"]  # val_size rows were evaluated


METHOD_EXAMPLES = [p for p in EXAMPLES if p.stem.startswith("sft_")]


@pytest.mark.parametrize("example", METHOD_EXAMPLES, ids=[p.stem for p in METHOD_EXAMPLES])
def test_method_example_runs_two_steps_on_the_tiny_model(example, tmp_path, tiny_model_dir):
    from tuneforge.cli import app

    out = tmp_path / example.stem
    res = CliRunner().invoke(app, ["train", str(example), f"model.name={tiny_model_dir}", "model.template=chatml",
                                   "train.max_steps=2", "data.cutoff_len=64", "eval.classification.max_samples=4"
                                   if "classification:" in example.read_text() else "eval.preview_prompts=[]",
                                   f"output.dir={out}"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "succeeded" and f"sft_{run['method']}" in (example.stem, "sft_lora")
