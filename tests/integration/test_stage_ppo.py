"""ppo end to end on the 656K model: KL 0 at the first step (policy = reference) and every trainable tensor moved,
the reward rises on a learnable rule reward, the value loss falls while a rollout is reused, the value head and the
adaptive KL coefficient survive a resume, it can start from an rm run, rewards see the data's label and columns,
and configs that cannot work fail before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from stage_data import write_pairs, write_prompts
from train_helpers import StopAt, tiny_config
from tuneforge.train.runner import train
from tuneforge.utils.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")

REWARD = f"{Path(__file__).with_name('rl_rewards.py')}:says_the"  # the share of words that are "the"
PPO = ["stage=ppo", f"stage.rewards=[{{name: '{REWARD}', weight: 5}}]", "stage.max_completion_length=16",
       "train.batch_size=8", "train.learning_rate=2e-2", "eval.preview_prompts=[]"]


def _train_logs(run_dir) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r and "reward" in r]


def _run(tmp_path, tiny_model_dir, *over, callbacks=None, data=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tmp_path, tiny_model_dir, *PPO, *over, data=data or write_prompts(tmp_path / "prompts.jsonl"))
    return train(cfg, extra_callbacks=callbacks)


class Snapshot(TrainerCallback):
    """Every parameter (and whether it trains) when training starts, and again when it ends."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kw):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", [["method.type=lora"], ["method.type=freeze", "method.trainable_layers=1"]],
                         ids=["lora", "freeze"])
def test_kl_is_zero_at_the_first_step_and_only_trainable_tensors_move(tmp_path, tiny_model_dir, method):
    snap = Snapshot()
    res = _run(tmp_path, tiny_model_dir, *method, "train.max_steps=3", callbacks=[snap])
    logs = _train_logs(res.output_dir)
    assert abs(logs[0]["kl"]) < 1e-6 and logs[0]["approx_kl"] == 0 and logs[0]["clipfrac"] == 0
    assert any(abs(r["kl"]) > 1e-4 for r in logs[1:])  # the policy has left the reference
    for key in ("reward", "entropy", "clipfrac", "value_loss", "policy_loss", "completion_length", "kl_coef",
                "reward/says_the", "reward/says_the/none"):
        assert key in logs[0], key
    trainable = [n for n, (_, grad) in snap.before.items() if grad]
    assert any(n.startswith("ppo_value_head.") for n in trainable) and len(trainable) > 2
    for name, (before, grad) in snap.before.items():
        assert (not torch.equal(before, snap.after[name])) == grad, name
    final = sorted(p.name for p in res.final_dir.iterdir())
    assert not any("value_head" in n for n in final), final  # the final model is the policy alone
    assert (res.output_dir / "checkpoints" / "checkpoint-3" / "ppo_value_head.safetensors").is_file()


def test_reward_rises_on_a_learnable_rule_reward(tmp_path, tiny_model_dir):
    res = _run(tmp_path, tiny_model_dir, "train.max_steps=30", "data.val_size=8", "train.eval_steps=30",
               "train.eval_on_start=true", "train.load_best=null")
    rewards = [r["reward"] for r in _train_logs(res.output_dir)]
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-10:]) / 10
    assert last > first + 0.2, rewards
    rows = [json.loads(x) for x in (res.output_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_reward" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 30, evals
    assert {"eval_kl", "eval_completion_length"} <= set(evals[0]) and abs(evals[0]["eval_kl"]) < 1e-6


def test_value_loss_falls_while_a_rollout_is_reused(tmp_path, tiny_model_dir):
    res = _run(tmp_path, tiny_model_dir, "stage.ppo_epochs=4", "stage.value_init=policy", "train.max_steps=8")
    logs = _train_logs(res.output_dir)
    rounds = [logs[:4], logs[4:]]
    for steps in rounds:  # one rollout per round of 4 optimizer steps: the same completions and rewards
        assert len({r["reward"] for r in steps}) == 1 and len({r["completion_length"] for r in steps}) == 1
        assert steps[-1]["value_loss"] < steps[0]["value_loss"], [r["value_loss"] for r in steps]
        assert steps[0]["approx_kl"] < steps[-1]["approx_kl"]  # the policy moves away from the rollout's
    assert rounds[0][0]["reward"] != rounds[1][0]["reward"]


def test_resume_continues_with_the_value_head_and_the_kl_coefficient(tmp_path, tiny_model_dir):
    over = ("stage.kl_target=0.5", "stage.kl_horizon=20", "train.max_steps=4", "train.save_steps=2")
    data = write_prompts(tmp_path / "prompts.jsonl")
    straight = _run(tmp_path / "a", tiny_model_dir, *over, data=data)
    first = _run(tmp_path / "b", tiny_model_dir, *over, callbacks=[StopAt(2)], data=data)
    assert first.status == "interrupted"
    resumed = _run(tmp_path / "b", tiny_model_dir, *over, data=data)
    assert resumed.status == "succeeded"
    a, b = _train_logs(straight.output_dir), _train_logs(resumed.output_dir)
    assert len(a) == len(b) == 4
    coefs = [r["kl_coef"] for r in a]
    assert coefs[0] == pytest.approx(0.05) and len(set(coefs)) == 4  # adaptive: a new coefficient every step
    for x, y in zip(a, b):
        for key in ("loss", "reward", "kl_coef", "value_loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), (key, x, y)


def test_value_head_starts_from_an_rm_run_scored_as_reward(tmp_path, tiny_model_dir):
    from tuneforge.stages.rm import load_reward_model

    rm = train(tiny_config(tmp_path / "rm", tiny_model_dir, "stage=rm", "train.max_steps=2",
                           data=write_pairs(tmp_path / "pairs.jsonl")))
    snap = Snapshot()
    res = _run(tmp_path / "ppo", tiny_model_dir, f"stage.rewards=[{{name: rm, model: '{rm.output_dir}'}}]",
               "stage.value_init=rm", "train.max_steps=1", callbacks=[snap])
    score = load_reward_model(str(rm.output_dir), device="cpu")[0].score.weight.detach()
    torch.testing.assert_close(snap.before["ppo_value_head.linear.weight"][0], score)
    log = _train_logs(res.output_dir)[0]
    assert log["reward/rm:run"] == pytest.approx(log["reward"]) and log["reward"] != 0


def test_rewards_receive_the_answer_as_label_and_the_other_columns(tmp_path, tiny_model_dir):
    seen = tmp_path / "seen.jsonl"
    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(
        "import json\n"
        "def record(prompts, completions, completion_ids=None, *, out, **columns):\n"
        "    with open(out, 'a') as f:\n"
        "        f.write(json.dumps({'prompts': prompts, 'completions': completions, 'ids': completion_ids,\n"
        "                            'columns': columns}) + '\\n')\n"
        "    return [0.0 if c == 'x' else None for c in columns['topic']]\n")
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"Is {i} good?", "output": str(i % 2),
                                          "topic": "x" if i % 2 else None}) for i in range(4)) + "\n")
    res = _run(tmp_path, tiny_model_dir, f"stage.rewards=[{{name: '{rewards}:record', out: '{seen}'}}]",
               "stage.missing_eos_penalty=0.5", "train.max_steps=1", "train.batch_size=4", "train.epochs=1",
               data=data)
    (call,) = [json.loads(x) for x in seen.read_text().splitlines()]
    assert sorted(call["columns"]["label"]) == ["0", "0", "1", "1"]
    assert sorted(map(str, call["columns"]["topic"])) == ["None", "None", "x", "x"]
    assert all(p[-1]["role"] == "user" and p[-1]["content"].startswith("Is ") for p in call["prompts"])
    assert all(c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in call["completions"])
    assert all(isinstance(ids, list) and 1 <= len(ids) <= 16 for ids in call["ids"])
    log = _train_logs(res.output_dir)[0]
    assert log["reward/record/none"] == 0.5 and log["reward/record"] == 0.0  # None: not applicable, counted
    assert log["reward"] == pytest.approx(-0.5 * log["missing_eos"])


def test_a_completion_ends_at_its_stop_token_or_where_its_stop_text_is_complete(tiny_model_dir):
    from tuneforge.models.load import load_tokenizer
    from tuneforge.stages.ppo import Stops

    tok = load_tokenizer(str(tiny_model_dir), template="chatml")
    stops = Stops(tok)
    words = tok("Once upon a time", add_special_tokens=False)["input_ids"]
    end_of_turn = tok("<|im_end|>", add_special_tokens=False)["input_ids"]
    assert len(end_of_turn) > 1 and stops.ids == [tok.eos_token_id]  # chatml's end of turn is text here
    assert stops.length(words + [tok.eos_token_id] + words) == (len(words) + 1, True)
    assert stops.length(words + end_of_turn + words) == (len(words) + len(end_of_turn), True)
    assert stops.length(words + end_of_turn[:-1]) == (len(words) + len(end_of_turn) - 1, False)
    assert stops.text(words + end_of_turn + words).rstrip() == "Once upon a time"


def test_data_preview_shows_the_prompts_with_nothing_trained(tmp_path, tiny_model_dir):
    from tuneforge.data.render import IGNORE
    from tuneforge.stages.preview import preview

    cfg = tiny_config(tmp_path, tiny_model_dir, *PPO, data=write_prompts(tmp_path / "prompts.jsonl"))
    samples, stats, tok = preview(cfg, n=2)
    assert len(samples) == 2 and all(set(r.labels) == {IGNORE} for r in samples)
    assert tok.decode(samples[0].input_ids).endswith("assistant\n") and "prompt" in samples[0].source
    assert stats["render"]["rows"] == 32 and stats["trained_tokens"]["max"] == 0


@pytest.mark.parametrize("override, error, match", [
    (["train.batch_size=1"], ConfigError, "whitens the advantages"),
    (["stage.rewards=[]"], ConfigError, "needs at least one reward"),
    (["stage.rewards=[{name: regex}]"], ConfigError, "reward regex needs pattern"),
    (["stage.value_init=rm"], ConfigError, "no reward is named rm"),
    (["stage.max_completion_length=64"], ConfigError, "leaves no room for a prompt"),
    (["stage.max_completion_length=40"], DataError, "with stage.max_completion_length=40 it needs"),
    (["data.val_size=4", "train.load_best=eval_loss"], ConfigError, "unknown metric 'eval_loss'"),
])
def test_configs_that_cannot_work_fail_before_the_model_loads(tmp_path, tiny_model_dir, monkeypatch, override,
                                                              error, match):
    import tuneforge.stages.base as base

    monkeypatch.setattr(base.Stage, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(error, match=match) as e:
        _run(tmp_path, tiny_model_dir, *override)
    if error is DataError:
        assert e.value.file.endswith("prompts.jsonl") and e.value.line == 1
        assert "raise data.cutoff_len to" in e.value.hint
