"""Every method on the 656K model: ~20 steps on a fixed small set lower the loss; only the method's own tensors change;
the saved artifact reloads with the trained model's logits, merges (where it can) to the same logits, and generates.
Then each method that claims a stage in the compatibility table trains a step or two there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from stage_data import write_kto, write_pairs, write_prompts
from train_helpers import losses, tiny_config
from tuneforge.config import compat
from tuneforge.methods import METHODS
from tuneforge.train.runner import train

pytestmark = pytest.mark.usefixtures("one_thread")

# method → (overrides, what its trainable parameter names contain, learning rate on the tiny model)
CASES = {
    "dora": (["method.r=4"], ("lora_", "magnitude"), 5e-3),
    "adalora": (["method.init_r=6", "method.target_r=2", "method.tinit=2", "method.tfinal=4"], ("lora_",), 2e-2),
    "ia3": ([], ("ia3_l",), 5e-2),
    "bitfit": ([], (".bias",), 2e-2),
    "prompt": (["method.num_virtual_tokens=8", "method.init_text='Answer the question about a story.'"],
               ("prompt_encoder",), 5e-2),
    "ptuning": (["method.num_virtual_tokens=8", "method.encoder_hidden_size=32"], ("prompt_encoder",), 5e-3),
    "prefix": (["method.num_virtual_tokens=8", "method.encoder_hidden_size=32"], ("prompt_encoder",), 5e-3),
    "ptuning_v2": (["method.num_virtual_tokens=8"], ("prompt_encoder",), 2e-2),
}
PROMPT = [{"role": "user", "content": "Tell me about the dog."}]


class Live(TrainerCallback):
    """The model being trained, and its parameters (with their trainability) at the start."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model
        self.before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def _ids(tok):
    return tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return out[:, -batch["input_ids"].shape[1]:]  # prompt tuning returns logits for its virtual tokens too


@pytest.fixture(scope="module", params=list(CASES))
def method_run(request, tmp_path_factory, tiny_model_dir):
    name = request.param
    overrides, _, lr = CASES[name]
    tmp = tmp_path_factory.mktemp(name)
    live = Live()
    cfg = tiny_config(tmp, tiny_model_dir, f"method.type={name}", *overrides, f"train.learning_rate={lr}",
                      "train.epochs=5", "train.lr_scheduler=constant")  # 16 rows / batch 4 × 5 = 20 steps
    res = train(cfg, extra_callbacks=[live])
    return name, res, live


def test_the_loss_falls(method_run):
    name, res, _ = method_run
    assert res.status == "succeeded"
    ls = losses(res.output_dir)
    assert len(ls) >= 20 and sum(ls[-4:]) / 4 < 0.9 * sum(ls[:4]) / 4, (name, ls)


def test_only_the_methods_own_tensors_train_and_change(method_run):
    name, _, live = method_run
    marks = CASES[name][1]
    trainable = [n for n, (_, grad) in live.before.items() if grad]
    assert trainable and all(any(m in n for m in marks) for n in trainable), (name, trainable[:5])
    after = dict(live.model.named_parameters())
    moved = {n for n, (p, _) in live.before.items() if not torch.equal(p, after[n].detach())}
    assert moved and moved <= set(trainable), (name, sorted(moved - set(trainable))[:5])
    info = json.loads((method_run[1].output_dir / "run.json").read_text())
    assert 0 < info["parameters"]["trainable"] < info["parameters"]["total"]


def test_the_artifact_reloads_merges_and_generates(method_run, tiny_model_dir):
    from tuneforge.infer.engine import Engine
    from tuneforge.models.load import load_for_inference

    name, res, live = method_run
    method = METHODS[name]
    assert res.final_dir.name == method.artifact
    if method.artifact == "adapter":
        model, tok = load_for_inference(str(tiny_model_dir), adapter=str(res.final_dir))
    else:
        model, tok = load_for_inference(str(res.final_dir))
    batch = _ids(tok)
    trained = _logits(live.model, batch)
    assert torch.allclose(_logits(model, batch), trained, atol=1e-5), name
    if method.artifact == "adapter" and method.mergeable:
        merged = model.merge_and_unload()
        assert torch.allclose(_logits(merged, batch), trained, atol=1e-4), name
    engine = Engine.load(str(tiny_model_dir) if method.artifact == "adapter" else str(res.final_dir),
                         adapter=str(res.final_dir) if method.artifact == "adapter" else None)
    out = engine.generate([PROMPT], max_new_tokens=6)[0]
    assert out.completion_tokens > 0


def test_bitfit_adds_zero_biases_that_leave_the_model_unchanged(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 45, 300, 12, 7]])
    before = base(ids).logits
    model = METHODS["bitfit"].apply(base, METHODS["bitfit"].Params())
    assert model.config.attention_bias and model.config.mlp_bias
    assert torch.equal(model(ids).logits, before)


def _stage_data(stage: str, tmp: Path) -> Path:
    if stage in ("rm", "dpo"):
        return write_pairs(tmp / "pairs.jsonl", n=16)
    if stage == "kto":
        return write_kto(tmp / "kto.jsonl", n=16)
    return write_prompts(tmp / "prompts.jsonl", n=16)


REWARD = f"{Path(__file__).with_name('rl_rewards.py')}:says_the"
STAGE_ARGS = {"rm": [], "dpo": [], "kto": [],
              "grpo": [f"stage.rewards=[{{name: '{REWARD}'}}]", "stage.max_completion_length=8", "train.batch_size=8"],
              "ppo": [f"stage.rewards=[{{name: '{REWARD}'}}]", "stage.max_completion_length=8", "train.batch_size=4"]}


@pytest.mark.parametrize("stage", list(STAGE_ARGS))
@pytest.mark.parametrize("method", ["adalora", "ia3", "bitfit"])
def test_methods_train_in_the_stages_the_table_allows(tmp_path, tiny_model_dir, stage, method):
    assert compat.supported(stage, method)
    overrides = [o for o in CASES[method][0] if not o.startswith(("method.tinit", "method.tfinal"))]
    cfg = tiny_config(tmp_path, tiny_model_dir, f"stage={stage}", f"method.type={method}", *overrides,
                      *STAGE_ARGS[stage], "train.max_steps=2", "eval.preview_prompts=[]",
                      data=_stage_data(stage, tmp_path))
    live = Live()
    res = train(cfg, extra_callbacks=[live])
    assert res.status == "succeeded" and res.final_dir.is_dir()
    after = dict(live.model.named_parameters())
    assert any(grad and not torch.equal(p, after[n].detach()) for n, (p, grad) in live.before.items())


def test_adalora_prunes_ranks_to_its_budget(tmp_path, tiny_model_dir):
    overrides, _, lr = CASES["adalora"]
    res = train(tiny_config(tmp_path, tiny_model_dir, "method.type=adalora", *overrides, f"train.learning_rate={lr}",
                            "train.epochs=5"))
    pattern = json.loads((res.final_dir / "adapter_config.json").read_text())["rank_pattern"]
    kept = [sum(mask) for mask in pattern.values()]
    assert len(kept) == 14 and sum(kept) == 2 * 14, kept  # target_r 2 on average over 14 modules (init_r 6)
    assert max(kept) > min(kept)  # the budget went where it mattered, not evenly
