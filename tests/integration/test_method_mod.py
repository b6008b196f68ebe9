"""Mixture-of-Depths (tuneforge.models.mod, method mixture_of_depths) on the 656K model, whose 2 blocks make block 1
the routed one. The routing machinery is exact (full capacity with neutral routers is the original model, for plain,
padded and packed batches, sdpa and eager); in training a routed block processes exactly ceil(capacity × real
tokens) of each sequence, its best-scored ones and its first token, and the rest pass unchanged (through the KV-cache
path too); at inference routing is by threshold,
which is causal, so a later token never changes an earlier logit and KV-cached generation equals full recomputation
(training's top-k is not causal: whether a token is processed depends on the scores after it, which is why inference
does not use it). A real run lowers the loss, moves the routers and learns the threshold; the saved model reloads
through tuneforge's loader with the same logits and generates (batched as one by one). It also trains in simpo
(reference-free) and rm, the stages beside pt/sft that the method is meant for."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, TrainerCallback

from stage_data import write_pairs
from train_helpers import losses, tiny_config
from tuneforge.models import mod
from tuneforge.train.runner import train
from tuneforge.utils.errors import ModelError

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[1, 45, 300, 12, 7, 99, 23, 4, 88, 61, 17, 250],
                    [1, 310, 29, 64, 5, 77, 140, 0, 0, 0, 0, 0]])
MASK = torch.tensor([[1] * 12, [1] * 7 + [0] * 5])
PACKED = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]])  # two sequences in one row, no attention mask
PROMPT = [{"role": "user", "content": "Tell me about the dog."}]


def _model(path, attn="sdpa"):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn)


def _converted(path, capacity, attn="sdpa", neutral=False):
    model = _model(path, attn)
    (routed,) = mod.convert(model, capacity, every=2)  # dense_ends 2, but a 2-block model can spare none
    block = model.model.layers[routed]
    if neutral:  # score 0 everywhere: every processed token's block output is scaled by 2·sigmoid(0) = 1
        block.router.weight.data.zero_()
    return model, block


# use_cache=False as in training: without a cache transformers builds the packed-sequence mask from position ids
INPUTS = {"plain": dict(input_ids=IDS[:1], use_cache=False),
          "padded": dict(input_ids=IDS, attention_mask=MASK, use_cache=False),
          "packed": dict(input_ids=IDS[:1], position_ids=PACKED, use_cache=False)}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("inputs", list(INPUTS))
def test_full_capacity_with_neutral_routers_is_the_original_model(tiny_model_dir, attn, inputs):
    batch = INPUTS[inputs]
    real = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
    with torch.no_grad():
        expected = _model(tiny_model_dir, attn)(**batch).logits[real]
        model, _ = _converted(tiny_model_dir, 1.0, attn, neutral=True)
        trained = model.train()(**batch).logits[real]  # top-k routing: every real token
        served = model.eval()(**batch).logits[real]  # threshold routing, untrained threshold: every real token
    assert torch.allclose(trained, expected, atol=1e-5) and torch.allclose(served, expected, atol=1e-5)


class Seen:
    """What the routed block got and gave, and how many tokens its MLP ran on."""

    def __init__(self, block):
        block.register_forward_hook(self.block)
        block.mlp.register_forward_hook(lambda m, args, out: setattr(self, "mlp_tokens", args[0].shape[1]))

    def block(self, module, args, out):
        self.inp, self.out = args[0].detach(), out.detach()


def test_training_routes_exactly_k_best_tokens_per_sequence_and_the_rest_pass_unchanged(tiny_model_dir):
    model, block = _converted(tiny_model_dir, 0.5)
    seen = Seen(block)
    logits = model.train()(input_ids=IDS, attention_mask=MASK, use_cache=False).logits  # as tuneforge trains
    changed = (seen.out != seen.inp).any(-1)
    k = [math.ceil(0.5 * n) for n in MASK.sum(1).tolist()]  # 6 of 12, 4 of 7 real tokens
    assert changed.sum(1).tolist() == k and seen.mlp_tokens == max(k)
    assert not changed[~MASK.bool()].any()  # padding never takes a slot
    scores = block.router(mod._rms(seen.inp)).squeeze(-1).masked_fill(~MASK.bool(), float("-inf"))
    scores[:, 0] = float("inf")  # the first token always goes through (the attention sink)
    for row, n in enumerate(k):
        assert set(changed[row].nonzero().flatten().tolist()) == set(scores[row].topk(n).indices.tolist())
    assert torch.equal(seen.out[~changed], seen.inp[~changed])
    assert torch.isfinite(block.mod_threshold)  # training tracked the k-th score for inference
    # transformers' default use_cache=True in a training step: the same routing, through the KV-cache path
    cached = model(input_ids=IDS, attention_mask=MASK, use_cache=True).logits
    assert torch.allclose(cached[MASK.bool()], logits[MASK.bool()], atol=1e-5)


def _thresholded(tiny_model_dir):
    """An eval-mode model whose block 1 processes only some tokens (the threshold halfway between the two middle
    scores, so float rounding cannot flip a decision)."""
    torch.manual_seed(0)
    model, block = _converted(tiny_model_dir, 0.5)
    block.router.weight.data.normal_(std=0.3)
    seen = Seen(block)
    with torch.no_grad():
        model.eval()(input_ids=IDS[:1])
        middle = block.router(mod._rms(seen.inp)).flatten().sort().values[5:7]
        block.mod_threshold.fill_(middle.mean().item())
    return model, seen


def test_inference_routing_is_causal_and_the_kv_cache_gives_the_same_logits(tiny_model_dir):
    model, seen = _thresholded(tiny_model_dir)
    ids = IDS[:1]
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=False, output_hidden_states=True)  # only the processed tokens run
        full = out.logits
        assert [h.shape for h in out.hidden_states] == [(1, 12, 128)] * 3  # captured per block: whole sequences
        assert 0 < (seen.out != seen.inp).any(-1).sum() < ids.shape[1]  # some tokens skip the block
        later = ids.clone()
        later[0, -1] = 500
        assert torch.allclose(model(input_ids=later, use_cache=False).logits[:, :-1], full[:, :-1], atol=1e-5)
        cache = DynamicCache(config=model.config)
        steps = [model(input_ids=ids[:, :5], cache=cache, use_cache=True).logits]
        steps += [model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True).logits for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-4)  # logits of size ~5: float32 rounding
    cached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    recomputed = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, recomputed)


def test_conversion_routes_the_middle_blocks_and_refuses_to_reroute_a_converted_model(tiny_model_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    assert mod.routed_indices(30, 2) == list(range(3, 28, 2))  # SmolLM2: blocks 0, 1, 28 and 29 stay dense
    with pytest.raises(ModelError, match="routes no block"):
        mod.convert(_model(tiny_model_dir), 0.5, every=3)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    assert mod.convert(model, 0.5, every=2) == [1]
    router = model.model.layers[1].router
    assert mod.convert(model, 0.25, every=2) == [1] and model.model.layers[1].router is router
    assert model.model.layers[1].mod_capacity == 0.25
    with pytest.raises(ModelError, match="already a mixture of depths"):
        mod.convert(model, 0.5, every=2, dense_ends=0)  # blocks 1 and 3: another model


class Live(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if ".router." in n}


@pytest.fixture(scope="module")
def mod_run(tmp_path_factory, tiny_model_dir):
    live = Live()
    cfg = tiny_config(tmp_path_factory.mktemp("mod"), tiny_model_dir, "method.type=mixture_of_depths",
                      "method.capacity=0.5", "train.learning_rate=5e-3", "train.epochs=5",
                      "train.lr_scheduler=constant")  # 16 rows / batch 4 × 5 = 20 steps
    return train(cfg, extra_callbacks=[live]), live


def test_training_lowers_the_loss_and_moves_the_routers(mod_run):
    res, live = mod_run
    assert res.status == "succeeded"
    ls = losses(res.output_dir)
    assert len(ls) >= 20 and sum(ls[-4:]) / 4 < 0.9 * sum(ls[:4]) / 4, ls
    after = dict(live.model.named_parameters())
    assert live.before and all(not torch.equal(p, after[n].detach()) for n, p in live.before.items())
    assert torch.isfinite(live.model.model.layers[1].mod_threshold)
    info = json.loads((res.output_dir / "run.json").read_text())
    assert info["parameters"]["trainable"] == info["parameters"]["total"]
    saved = json.loads((res.final_dir / "config.json").read_text())
    assert saved["mixture_of_depths"] == {"capacity": 0.5, "every": 2, "dense_ends": 2, "blocks": [1]}


def test_the_saved_model_reloads_with_its_routers_and_generates(mod_run):
    from tuneforge.infer.engine import Engine
    from tuneforge.models.load import load_for_inference

    res, live = mod_run
    model, tok = load_for_inference(str(res.final_dir))
    assert isinstance(model.model.layers[1], mod.RoutedLayer) and not isinstance(model.model.layers[0],
                                                                                   mod.RoutedLayer)
    batch = tok([tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False), "Once upon a time"],
                return_tensors="pt", padding=True)
    with torch.no_grad():
        reloaded = model(**batch).logits
        trained = live.model.eval()(**batch).logits
    real = batch["attention_mask"].bool()
    assert torch.allclose(reloaded[real], trained[real], atol=1e-5)
    engine = Engine.load(str(res.final_dir))
    chats = [PROMPT, [{"role": "user", "content": "Who is Tom? Tell me a long story about him and his car."}]]
    together = engine.generate(chats, max_new_tokens=6)  # left-padded into one batch, with a KV cache
    assert all(g.completion_tokens > 0 for g in together)
    assert [g.text for g in together] == [engine.generate([c], max_new_tokens=6)[0].text for c in chats]


@pytest.mark.parametrize("stage", ["simpo", "rm"])
def test_it_trains_in_a_reference_free_preference_stage_and_as_a_reward_model(tmp_path, tiny_model_dir, stage):
    res = train(tiny_config(tmp_path, tiny_model_dir, f"stage={stage}", "method.type=mixture_of_depths",
                            "train.max_steps=2", "eval.preview_prompts=[]", data=write_pairs(tmp_path / "p.jsonl", 16)))
    assert res.status == "succeeded"
    saved = json.loads((res.final_dir / "config.json").read_text())
    assert saved["mixture_of_depths"]["every"] == 2


def test_a_saved_model_loaded_in_4_bits_keeps_its_routers(mod_run):
    from bitsandbytes.nn import Linear4bit
    from transformers import BitsAndBytesConfig

    from tuneforge.models.load import load_model

    res, live = mod_run
    model = load_model(str(res.final_dir), device="cpu", quantization=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32))
    layer = model.model.layers[1]
    assert isinstance(layer, mod.RoutedLayer) and isinstance(layer.mlp.down_proj, Linear4bit)
    assert torch.equal(layer.router.weight, live.model.model.layers[1].router.weight.detach())
