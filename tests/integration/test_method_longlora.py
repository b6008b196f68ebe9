"""LongLoRA on the 656K model. Shifted sparse attention against a dense reference written from the definition (groups,
shift, the wrapped group, causality, padding); the model attends in groups in training mode only; ~20 steps lower the
loss and move only LoRA, embedding and norm tensors; the merged model reloads with plain transformers with the
trained model's logits and the scaled RoPE in its config, and generates."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from train_helpers import losses, tiny_config
from tuneforge.methods import METHODS
from tuneforge.methods.longlora import group_size, shifted_sparse_attention

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = [{"role": "user", "content": "Tell me about the dog."}]
HEADS, KV_REPEAT = 4, 2  # heads 0-1 use plain groups, heads 2-3 the shifted ones


def _qkv(length: int, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, HEADS, length, 8, generator=g)
    k, v = (torch.randn(batch, HEADS // KV_REPEAT, length, 8, generator=g) for _ in range(2))
    return q, k, v


def _s2(q, k, v, group, mask=None, shift=True):
    return shifted_sparse_attention(q, k, v, mask, group, shift=shift, kv_repeat=KV_REPEAT)


def _reference(q, k, v, group, mask=None):
    """Dense attention with the S²-Attn pattern from its definition: key j is visible to query i when j <= i and
    both lie in the same group, j // G == i // G in the first half of the heads, (j + G/2) // G == (i + G/2) // G
    in the second half."""
    length = q.shape[2]
    i = torch.arange(length)

    def same_group(offset):
        return ((i[:, None] + offset) // group == (i[None, :] + offset) // group) & (i[None, :] <= i[:, None])

    visible = torch.stack([same_group(0)] * (HEADS // 2) + [same_group(group // 2)] * (HEADS - HEADS // 2))[None]
    if mask is not None:
        visible = visible & mask
    out = F.scaled_dot_product_attention(q, repeat_kv(k, KV_REPEAT), repeat_kv(v, KV_REPEAT), attn_mask=visible)
    return out.transpose(1, 2)


def _padding_mask(length: int, real: list[int]):
    """transformers' boolean (B, 1, L, L) mask for right-padded rows with `real` tokens each."""
    keys = torch.arange(length)[None, :] < torch.tensor(real)[:, None]
    return (torch.tril(torch.ones(length, length, dtype=torch.bool)) & keys[:, None, :])[:, None]


def test_one_group_without_shift_is_plain_sdpa():
    module = SimpleNamespace(num_key_value_groups=KV_REPEAT, is_causal=True)
    q, k, v = _qkv(12, batch=2)
    assert torch.allclose(_s2(q, k, v, 12, shift=False), sdpa_attention_forward(module, q, k, v, None)[0], atol=1e-6)
    mask = _padding_mask(12, [12, 7])
    ours, plain = _s2(q, k, v, 12, mask, shift=False), sdpa_attention_forward(module, q, k, v, mask)[0]
    assert torch.allclose(ours[0], plain[0], atol=1e-6) and torch.allclose(ours[1, :7], plain[1, :7], atol=1e-6)


@pytest.mark.parametrize("length", [16, 14])  # 14: not a multiple of the group, padded inside the attention
def test_groups_and_shifted_groups_match_the_dense_reference(length):
    q, k, v = _qkv(length, batch=2)
    assert torch.allclose(_s2(q, k, v, 4), _reference(q, k, v, 4), atol=1e-6)
    mask = _padding_mask(length, [length, 9])
    ours, ref = _s2(q, k, v, 4, mask), _reference(q, k, v, 4, mask)
    assert torch.allclose(ours[0], ref[0], atol=1e-6) and torch.allclose(ours[1, :9], ref[1, :9], atol=1e-6)


def _changed(position: int, length: int = 16, mask=None) -> tuple[set, set]:
    """Positions whose output changes when the key and value at `position` change: (plain heads, shifted heads)."""
    q, k, v = _qkv(length)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, position] += 3.0
    v2[:, :, position] += 3.0
    moved = (_s2(q, k, v, 4, mask) - _s2(q, k2, v2, 4, mask)).abs().amax(dim=-1)[0] > 1e-6  # (L, H)
    return {int(p) for p in moved[:, 0].nonzero()}, {int(p) for p in moved[:, HEADS - 1].nonzero()}


def test_a_token_sees_only_its_own_group_and_earlier_tokens():
    # groups of 4: plain heads [0-3] [4-7] [8-11] [12-15]; shifted heads [0-1] [2-5] [6-9] [10-13] [14-15]
    assert _changed(5) == ({5, 6, 7}, {5})
    assert _changed(2) == ({2, 3}, {2, 3, 4, 5})
    assert _changed(0) == ({0, 1, 2, 3}, {0, 1})  # 14 and 15 share the wrapped group with 0, 1 but never see them
    assert _changed(15) == ({15}, {15})  # and 0, 1 never see the end of the sequence
    for position in range(16):  # causality in every head
        plain, shifted = _changed(position)
        assert min(plain | shifted) == position


def test_padded_keys_are_never_attended():
    mask = _padding_mask(16, [10])
    for position in range(10, 16):
        plain, shifted = _changed(position, mask=mask)
        assert all(p >= 10 for p in plain | shifted)


def test_the_model_attends_in_groups_only_in_training_mode(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(3, 2000, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = base(ids).logits
        model = METHODS["longlora"].apply(base, METHODS["longlora"].Params(r=4))  # B = 0: the base's function
        model.eval()
        assert torch.allclose(model(ids).logits, full, atol=1e-5)
        model.train()
        grouped = model(ids).logits
    assert group_size(0.25, 40) == 10
    # the first half group sees in every head what full causal attention sees; later tokens see less
    assert torch.allclose(grouped[:, :5], full[:, :5], atol=1e-5)
    assert not torch.allclose(grouped[:, 5:], full[:, 5:], atol=1e-3)


def test_packed_rows_stay_apart_in_training_mode(tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = METHODS["longlora"].apply(base, METHODS["longlora"].Params(r=4)).train()
    ids = torch.randint(3, 2000, (1, 32), generator=torch.Generator().manual_seed(1))
    other = ids.clone()
    other[0, 3] = 7  # a token of the first packed row
    positions = torch.cat([torch.arange(16), torch.arange(16)])[None]  # two rows packed: positions restart
    # (no KV cache, as in training: transformers derives the packed rows' mask from the positions only then)
    with torch.no_grad():
        a, b = (model(input_ids=x, position_ids=positions, use_cache=False).logits for x in (ids, other))
    assert not torch.allclose(a[0, 3:16], b[0, 3:16]) and torch.equal(a[0, 16:], b[0, 16:])


def test_a_half_precision_base_trains_float32_copies_and_merges_in_its_dtype(tiny_model_dir):
    from tuneforge.methods.longlora import merged_copy

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model = METHODS["longlora"].apply(base, METHODS["longlora"].Params(r=4, rope_factor=4.0))
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    model.train()
    ids = torch.randint(3, 2000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as mixed-precision training runs it
        model(input_ids=ids, labels=ids).loss.backward()
    assert model.base_model.model.model.embed_tokens.modules_to_save["default"].weight.grad is not None
    merged = merged_copy(model)
    assert merged.dtype == torch.bfloat16 and merged.config.rope_parameters["factor"] == 4.0
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()  # still tied


class Live(TrainerCallback):
    """The model being trained: its parameters at the start and its eval-mode logits at the end of training."""

    def __init__(self, tok):
        self.tok = tok

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model
        self.before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kw):
        self.trained = _logits(model, _prompt(self.tok))


def _prompt(tok):
    return tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def _logits(model, batch):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train(was)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    from tuneforge.models.load import load_tokenizer
    from tuneforge.train.runner import train

    live = Live(load_tokenizer(str(tiny_model_dir), template="chatml"))
    cfg = tiny_config(tmp_path_factory.mktemp("longlora"), tiny_model_dir, "method.type=longlora", "method.r=4",
                      "method.rope_factor=2", "train.learning_rate=5e-3", "train.epochs=5",
                      "train.lr_scheduler=constant")  # 16 rows / batch 4 × 5 = 20 steps, rows of 20-40 tokens
    return train(cfg, extra_callbacks=[live]), live


def test_the_loss_falls(run):
    res, _ = run
    ls = losses(res.output_dir)
    assert res.status == "succeeded" and len(ls) >= 20 and sum(ls[-4:]) / 4 < 0.9 * sum(ls[:4]) / 4, ls


def test_only_lora_embeddings_and_norms_train_and_change(run, tiny_model_dir):
    res, live = run
    trainable = {n for n, (_, grad) in live.before.items() if grad}
    full = {n for n in trainable if "modules_to_save" in n}
    assert trainable == full | {n for n in trainable if ".lora_" in n}
    assert {n.split(".modules_to_save")[0].rsplit(".", 1)[-1] for n in full} == {
        "embed_tokens", "input_layernorm", "post_attention_layernorm", "norm"}
    after = dict(live.model.named_parameters())
    moved = {n for n, (p, _) in live.before.items() if not torch.equal(p, after[n].detach())}
    assert moved == trainable  # every trained tensor moved (LoRA B from zero included), and nothing else
    info = json.loads((res.output_dir / "run.json").read_text())
    from tuneforge.models.memory import shape_from_config

    shape = shape_from_config(json.loads((tiny_model_dir / "config.json").read_text()))
    estimate = METHODS["longlora"].estimate_trainable(shape, METHODS["longlora"].Params(r=4))
    assert info["parameters"]["trainable"] == estimate == sum(after[n].numel() for n in trainable)


def test_the_merged_model_reloads_with_the_trained_logits_and_generates(run):
    from tuneforge.infer.engine import Engine
    from tuneforge.models.load import load_for_inference

    res, live = run
    assert res.final_dir.name == "model" and not (res.final_dir / "adapter_config.json").exists()
    config = json.loads((res.final_dir / "config.json").read_text())
    rope = config.get("rope_parameters") or config.get("rope_scaling")
    assert rope["rope_type"] == "linear" and rope["factor"] == 2.0 and config["max_position_embeddings"] == 1024
    assert "longlora" not in json.dumps(config)
    model, tok = load_for_inference(str(res.final_dir))
    assert model.config._attn_implementation == "sdpa"
    batch = _prompt(tok)
    gap = (_logits(model, batch) - live.trained).abs().max().item()
    assert gap < 1e-4, gap  # merging (W + BA) rounds differently from W·x + B(A·x)
    assert torch.equal(_logits(live.model, batch), live.trained)  # saving left the trained model as it was
    out = Engine.load(str(res.final_dir)).generate([PROMPT], max_new_tokens=6)[0]
    assert out.completion_tokens > 0
