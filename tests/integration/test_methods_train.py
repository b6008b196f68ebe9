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
    "llama_pro": (["method.new_layers=1"], (".layers.2.",), 5e-3),  # after layer 1 of 0..1: the new layer 2
    "galore": (["method.rank=8", "method.update_interval=5"], ("",), 5e-3),
    "apollo": (["method.rank=8", "method.update_interval=5"], ("",), 5e-3),
    "dora": (["method.r=4"], ("lora_", "magnitude"), 5e-3),
    "adalora": (["method.init_r=6", "method.target_r=2", "method.tinit=2", "method.tfinal=4"], ("lora_",), 2e-2),
    "ia3": ([], ("ia3_l",), 5e-2),
    "bitfit": ([], (".bias",), 2e-2),
    "mixture_of_depths": (["method.capacity=0.5"], ("",), 5e-3),  # every weight, plus block 1's router
    "adapter": (["method.reduction_factor=8"], (".tf_adapter.",), 1e-2),
    "unipelt": (["method.prefix_length=4", "method.r=4"], (".tf_",), 1e-2),
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
    trained, total = info["parameters"]["trainable"], info["parameters"]["total"]
    partial = METHODS[name].frozen_base or name in ("bitfit", "llama_pro")
    assert 0 < trained < total if partial else trained == total


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
    # AdaLoRA saves its pruned ranks only, so the reloaded product sums fewer terms in another order than the
    # live (masked, full-rank) one: float rounding of about 2e-5 on these logits; a wrong reload is off by ~1e-1.
    atol = 1e-4 if name == "adalora" else 1e-5
    assert torch.allclose(_logits(model, batch), trained, atol=atol), name
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


COMBOS = [(m, s) for m in ("adalora", "ia3", "bitfit", "qlora", "adapter", "unipelt") for s in STAGE_ARGS
          if compat.supported(s, m)]


@pytest.mark.parametrize("method, stage", COMBOS, ids=[f"{m}-{s}" for m, s in COMBOS])
def test_methods_train_in_the_stages_the_table_allows(tmp_path, tiny_model_dir, stage, method):
    overrides = [o for o in CASES.get(method, ([],))[0] if not o.startswith(("method.tinit", "method.tfinal"))]
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


class Optimizer(TrainerCallback):
    """The optimizer's learning rate per parameter name, and the optimizer itself, as training starts."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kw):
        names = {id(p): n for n, p in model.named_parameters()}
        self.rates = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
        self.optimizer = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper
        self.groups = optimizer.param_groups


def test_lora_plus_trains_b_matrices_at_lr_ratio_times_the_rate(tmp_path, tiny_model_dir):
    seen = Optimizer()
    res = train(tiny_config(tmp_path, tiny_model_dir, "method.type=lora", "method.r=4", "method.lr_ratio=16",
                            "train.learning_rate=1e-3", "train.lr_scheduler=constant", "train.max_steps=2"),
                extra_callbacks=[seen])
    assert res.status == "succeeded"
    a = {n: lr for n, lr in seen.rates.items() if "lora_A" in n}
    b = {n: lr for n, lr in seen.rates.items() if "lora_B" in n}
    assert a and b and all(lr == pytest.approx(1e-3) for lr in a.values())
    assert all(lr == pytest.approx(1.6e-2) for lr in b.values())


def test_layers_to_transform_puts_adapters_only_on_those_layers(tmp_path, tiny_model_dir):
    live = Live()
    train(tiny_config(tmp_path, tiny_model_dir, "method.type=lora", "method.r=4", "method.layers_to_transform=[1]",
                      "train.max_steps=1"), extra_callbacks=[live])
    adapters = [n for n, (_, grad) in live.before.items() if grad]
    assert adapters and all(".layers.1." in n for n in adapters), adapters


def test_a_prompt_adapter_is_scored_by_the_classification_eval(tmp_path, tiny_model_dir):
    from tuneforge.eval.callback import classification_callbacks

    data = tmp_path / "cls.jsonl"
    rows = [{"instruction": f"Is the {a} happy? Answer 1 or 0.", "output": str(i % 2)}
            for i, a in enumerate(["cat", "dog", "owl", "fox", "bee", "ant", "cow", "pig"])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(tmp_path, tiny_model_dir, "method.type=prompt", "method.num_virtual_tokens=4",
                      "train.max_steps=2", "train.learning_rate=5e-2", f"eval.classification={{labels: ['0', '1'], "
                      f"data: {data}, max_samples: 8}}", data=data)
    res = train(cfg, eval_callbacks=classification_callbacks)
    rows = [json.loads(x) for x in (res.output_dir / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in rows if "eval_cls/accuracy" in r]
    assert scored and scored[-1]["eval_cls/n"] == 8 and scored[-1]["eval_cls/n_unparseable"] == 0


def _as_trained(model, batch):
    """Logits on bitsandbytes' training path (eval mode otherwise repacks 4-bit weights with bf16 scales on a CPU)."""
    from tuneforge.models.load import quantized_layers_as_in_training

    model.eval()
    quantized_layers_as_in_training(model)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_qlora_trains_adapters_over_a_4bit_base_and_reloads_on_it(tmp_path, tiny_model_dir):
    from bitsandbytes.nn import Linear4bit
    from peft import PeftModel

    from tuneforge.export.merge import merge_adapter
    from tuneforge.models.load import load_for_inference, load_tokenizer

    live = Live()
    res = train(tiny_config(tmp_path, tiny_model_dir, "method.type=qlora", "method.r=4", "train.learning_rate=5e-3",
                            "train.epochs=5", "train.lr_scheduler=constant"), extra_callbacks=[live])
    ls = losses(res.output_dir)
    assert sum(ls[-4:]) / 4 < 0.9 * sum(ls[:4]) / 4, ls
    assert all("lora_" in n for n, (_, grad) in live.before.items() if grad)
    assert any(isinstance(m, Linear4bit) for m in live.model.modules())
    batch = _ids(load_tokenizer(str(res.final_dir)))
    trained = _as_trained(live.model, batch)
    # the adapter folder names its base's quantization: loading it rebuilds that base (dequantized) ...
    as_loaded = _logits(load_for_inference(str(tiny_model_dir), adapter=str(res.final_dir))[0], batch)
    assert (as_loaded - trained).abs().max().item() < 1e-3
    # ... which differs from the unquantized base + adapter by the 4-bit quantization error
    unquantized = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(res.final_dir))
    gap = (_logits(unquantized, batch) - trained).abs().max().item()
    # export merges into the dequantized 4-bit base and checks against the adapter on the quantized base
    report = merge_adapter(str(tiny_model_dir), str(res.final_dir), str(tmp_path / "export"), device="cpu")
    exported = _logits(AutoModelForCausalLM.from_pretrained(tmp_path / "export"), batch)
    assert report.passed and (exported - trained).abs().max().item() < 1e-3 < gap, (report, gap)
    # a next stage that starts from the run merges the adapter into that same base
    from tuneforge.models.load import load_model

    assert (_logits(load_model(str(res.output_dir), device="cpu"), batch) - trained).abs().max().item() < 1e-3


@pytest.mark.parametrize("name, optimizer", [("galore", "galore_torch"), ("apollo", "apollo_torch")])
def test_low_rank_optimizers_project_the_linear_layers_only(tmp_path, tiny_model_dir, name, optimizer):
    seen = Optimizer()
    train(tiny_config(tmp_path, tiny_model_dir, f"method.type={name}", "method.rank=8", "train.max_steps=1"),
          extra_callbacks=[seen])
    assert type(seen.optimizer).__module__.startswith(optimizer)
    projected = [g for g in seen.groups if g.get("rank") == 8]
    assert len(projected) == 1 and len(projected[0]["params"]) == 14  # 7 linear layers × 2 decoder layers
    assert all(p.ndim == 2 for p in projected[0]["params"])


@pytest.mark.parametrize("optim, module, lr", [("adamw_8bit", "bitsandbytes", 5e-3), ("adafactor", "transformers", 5e-3),
                                               ("sgd", "torch", 0.5)])
def test_train_optim_picks_the_optimizer(tmp_path, tiny_model_dir, optim, module, lr):
    seen = Optimizer()
    res = train(tiny_config(tmp_path, tiny_model_dir, f"train.optim={optim}", "train.epochs=5",
                            f"train.learning_rate={lr}", "train.lr_scheduler=constant"), extra_callbacks=[seen])
    assert type(seen.optimizer).__module__.startswith(module), type(seen.optimizer)
    ls = losses(res.output_dir)
    assert sum(ls[-4:]) < 0.9 * sum(ls[:4]), (optim, ls)


def test_llama_pro_inserts_identity_blocks_that_leave_the_model_unchanged(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 45, 300, 12, 7]])
    before = base(ids).logits
    model = METHODS["llama_pro"].apply(base, METHODS["llama_pro"].Params(new_layers=2))
    assert len(model.model.layers) == model.config.num_hidden_layers == 4
    assert [b.self_attn.layer_idx for b in model.model.layers] == [0, 1, 2, 3]
    assert torch.allclose(model(ids).logits, before, atol=1e-6)
    trainable = {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1", "3"}  # each copy sits right after its source block


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_adapters_are_converted_to_apply_to_the_original_base(tmp_path, tiny_model_dir, init):
    from tuneforge.models.load import load_for_inference

    live = Live()
    res = train(tiny_config(tmp_path, tiny_model_dir, "method.type=lora", "method.r=4", f"method.init={init}",
                            "train.max_steps=4", "train.learning_rate=5e-3"), extra_callbacks=[live])
    config = json.loads((res.final_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # rank 2r: ΔW against the original base
    model, tok = load_for_inference(str(tiny_model_dir), adapter=str(res.final_dir))
    batch = _ids(tok)
    trained = _logits(live.model, batch)
    assert torch.allclose(_logits(model, batch), trained, atol=1e-4)
    assert torch.allclose(_logits(model.merge_and_unload(), batch), trained, atol=1e-4)


def test_a_prompt_adapter_is_refused_by_export_and_by_a_next_stage(tmp_path, tiny_model_dir):
    from tuneforge.export.merge import merge_adapter
    from tuneforge.utils.errors import ModelError

    res = train(tiny_config(tmp_path / "run", tiny_model_dir, "method.type=prompt", "method.num_virtual_tokens=4",
                            "train.max_steps=1"))
    with pytest.raises(ModelError, match="prompt tuning adapter: it adds trained virtual tokens") as err:
        merge_adapter(str(tiny_model_dir), str(res.final_dir), str(tmp_path / "merged"))
    assert "--adapter" in err.value.hint and not (tmp_path / "merged").exists()
    with pytest.raises(ModelError, match="cannot be merged \\(to start the next stage from it\\)"):
        train(tiny_config(tmp_path / "next", tiny_model_dir, f"model.name={res.output_dir}"))
