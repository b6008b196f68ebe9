"""Reward modelling end to end on the 656K model: held-out pairwise accuracy well above chance, the reward head
and adapters trained, frozen weights untouched, and `tuneforge eval rm` scoring the result."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from stage_data import write_pairs
from train_helpers import tiny_config
from tuneforge.train.runner import train


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("rm")
    cfg = tiny_config(tmp, tiny_model_dir, "stage=rm", "data.val_size=12", "train.epochs=3", "train.eval_steps=3",
                      "train.learning_rate=5e-3", "train.load_best=null", data=write_pairs(tmp / "pairs.jsonl"))
    return train(cfg), tmp


def test_reward_model_learns_the_preference(rm_run):
    res, _ = rm_run
    evals = [r for r in _rows(res.output_dir) if "eval_accuracy" in r]
    assert evals and evals[-1]["eval_accuracy"] >= 0.9 and evals[-1]["eval_margin"] > evals[0]["eval_margin"]
    assert res.metrics["eval_accuracy"] >= 0.9
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["stage"] == "rm" and info["status"] == "succeeded"


def test_the_adapter_carries_a_trained_score_head(rm_run):
    res, _ = rm_run
    weights = load_file(str(res.final_dir / "adapter_model.safetensors"))
    heads = [k for k in weights if "score" in k]
    assert heads, sorted(weights)[:5]
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # every adapter moved away from its zero init


def test_eval_rm_scores_pairs(rm_run, tiny_model_dir):
    from typer.testing import CliRunner

    from tuneforge.cli import app

    res, tmp = rm_run
    r = CliRunner().invoke(app, ["eval", "rm", "--model", str(res.output_dir), "--data", str(tmp / "pairs.jsonl"),
                                 "--output", str(tmp / "rm_eval"), "--no-progress"])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp / "rm_eval" / "pairs_rm.json").read_text())
    assert result["n"] == 48 and result["accuracy"] >= 0.9
    from tuneforge.registry import queries
    from tuneforge.registry.store import open_store

    store = open_store()
    train_id = json.loads((res.output_dir / "run.json").read_text())["run_id"]
    (eval_id,) = queries.children(store, train_id)  # recorded as an evaluation of the rm run
    (ev,) = queries.evals(store, eval_id)
    assert ev["name"] == "rm:pairs" and ev["metrics"]["accuracy"] == result["accuracy"]


def test_a_trained_rm_run_is_a_reward_function_for_the_rl_stages(rm_run):
    from tuneforge.stages.rewards import RewardSpec, build_reward

    res, _ = rm_run
    score = build_reward(RewardSpec(name="rm", model=str(res.output_dir), batch_size=3))
    prompts = [[{"role": "user", "content": f"Tell me about the {a}."}] for a in ("owl", "seal", "crab", "bat")]
    kind = score(prompts, [[{"role": "assistant", "content": f"The {a} was happy and kind to everyone."}]
                           for a in ("owl", "seal", "crab", "bat")])
    unkind = score(prompts, [f"The {a} was sad and mean to everyone." for a in ("owl", "seal", "crab", "bat")])
    assert len(kind) == len(unkind) == 4 and all(isinstance(x, float) for x in kind)
    assert sum(k > u for k, u in zip(kind, unkind)) >= 3  # the learned preference, through the reward function


def test_freeze_rm_changes_only_the_trainable_layers_and_the_head(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, "stage=rm", "method.type=freeze", "method.trainable_layers=1",
                      "train.max_steps=3", data=write_pairs(tmp_path / "pairs.jsonl"))
    res = train(cfg)
    after = load_file(str(res.final_dir / "model.safetensors"))
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    n_layers = 1 + max(int(k.split(".layers.")[1].split(".")[0]) for k in before if ".layers." in k)
    for k, v in before.items():
        if k not in after:
            continue  # the LM head is not part of a reward model
        changed = not torch.equal(v, after[k])
        assert changed == (f".layers.{n_layers - 1}." in k), k
    assert any(k.startswith("score.") for k in after)
