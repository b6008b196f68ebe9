"""GRPO / RLOO end to end on the 656K model with a learnable rule reward: the mean reward on held-out prompts rises,
every adapter tensor trained, and configs that cannot work fail before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from stage_data import write_prompts
from train_helpers import tiny_config
from tuneforge.train.runner import train
from tuneforge.utils.errors import ConfigError, DataError

REWARD = f"{Path(__file__).with_name('rl_rewards.py')}:says_the"
RL = ["stage=grpo", f"stage.rewards=[{{name: {REWARD}}}]", "stage.max_completion_length=12", "train.batch_size=8",
      "train.learning_rate=2e-2", "eval.preview_prompts=[]"]


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module", params=["group", "rloo"])
def rl_run(request, tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp(f"grpo_{request.param}")
    cfg = tiny_config(tmp, tiny_model_dir, *RL, f"stage.advantage={request.param}", "data.val_size=8",
                      "train.max_steps=24", "train.eval_steps=12", "train.eval_on_start=true",
                      "train.load_best=null", data=write_prompts(tmp / "prompts.jsonl"))
    return train(cfg)


def test_held_out_reward_rises(rl_run):
    evals = [r["eval_reward"] for r in _rows(rl_run.output_dir) if "eval_reward" in r]
    assert len(evals) >= 2 and evals[-1] > evals[0] + 0.1, evals
    train_logs = [r for r in _rows(rl_run.output_dir) if "reward" in r]
    assert {"reward_std", "frac_reward_zero_std", "completions/mean_length"} <= set(train_logs[0])
    assert json.loads((rl_run.output_dir / "run.json").read_text())["status"] == "succeeded"


def test_every_adapter_tensor_trained(rl_run):
    weights = load_file(str(rl_run.final_dir / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # every B moved away from its zero init


def test_an_sft_dataset_is_rl_data_with_its_answer_as_label(tmp_path, tiny_model_dir):
    from tuneforge.models.load import load_tokenizer
    from tuneforge.stages import stage_and_params
    from tuneforge.train.data_prep import prepare_data

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"instruction": "Is it good?", "output": "1", "topic": "x"}) + "\n")
    cfg = tiny_config(tmp_path, tiny_model_dir, *RL, data=data)
    stage, params = stage_and_params(cfg)
    tok = load_tokenizer(str(tiny_model_dir), template="chatml")
    item = prepare_data(cfg, tok, stage, params).train[0]
    assert item == {"topic": "x", "prompt": [{"role": "user", "content": "Is it good?"}], "label": "1"}


@pytest.mark.parametrize("override, error, match", [
    (["train.batch_size=6"], ConfigError, "not a multiple of stage.num_generations=4"),
    (["stage.rewards=[{name: regex}]"], ConfigError, "reward regex needs pattern"),
    (["stage.num_generations=1"], ConfigError, "num_generations"),
    (["stage.advantage=rloo", "stage.loss=grpo"], ConfigError, "loss applies to advantage: group"),
    (["stage.max_completion_length=60"], DataError, "does not fit data.cutoff_len=64"),
])
def test_configs_that_cannot_work_fail_before_the_model_loads(tmp_path, tiny_model_dir, monkeypatch, override,
                                                              error, match):
    import tuneforge.stages.base as base

    monkeypatch.setattr(base.Stage, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    cfg = tiny_config(tmp_path, tiny_model_dir, *RL, *override, data=write_prompts(tmp_path / "p.jsonl"))
    with pytest.raises(error, match=match) as e:
        train(cfg)
    if error is DataError:
        assert e.value.file.endswith("p.jsonl") and e.value.line == 1


def test_full_tuning_with_a_kl_term_starts_at_the_reference(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, *RL, "method.type=full", "stage.beta=0.1", "train.max_steps=3",
                      "train.learning_rate=1e-2", data=write_prompts(tmp_path / "p.jsonl"))
    kl = [r["kl"] for r in _rows(train(cfg).output_dir) if "kl" in r]
    assert len(kl) == 3 and abs(kl[0]) < 1e-6 and kl[-1] > 1e-3, kl  # policy = reference at step 0, then moves


def test_data_preview_shows_the_prompts_with_nothing_trained(tmp_path, tiny_model_dir):
    from tuneforge.stages.preview import preview

    cfg = tiny_config(tmp_path, tiny_model_dir, *RL, data=write_prompts(tmp_path / "p.jsonl", n=5))
    shown, stats, tok = preview(cfg, n=2)
    assert len(shown) == 2 and stats["render"]["rows"] == 5
    assert all(set(r.labels) == {-100} for r in shown)
    assert "Tell me a story about the cat." in tok.decode(shown[0].input_ids)
