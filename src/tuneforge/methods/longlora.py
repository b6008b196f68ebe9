"""LongLoRA (Chen et al. 2023): long-context fine-tuning of a llama-family model at LoRA's cost.

Three parts, as in the paper:
- LoRA adapters, plus the embeddings and every norm trained in full ("LoRA+" in the paper: without them LoRA does
  not adapt to a longer context). They train as PEFT `modules_to_save` copies, so the base stays frozen (it may load
  in half precision on a GPU) and checkpoints, resuming and `train.load_best` carry them like the adapter. With tied
  embeddings the output layer shares the trained copy (PEFT's `ensure_weight_tying`).
- Shifted sparse attention (S²-Attn) while training: the sequence is cut into groups of `group_size_ratio` × its
  length and tokens attend causally within their group only; in the second half of the heads the groups are shifted
  by half a group, so information crosses group borders. The groups are computed as separate attention calls of
  group length, so attention costs O(length × group) instead of O(length²). The shifted heads' last group wraps
  around (it holds the end and the start of the sequence): its two halves are kept apart, so no token sees a later
  one (the original implementation let the first tokens attend to the last ones) and none sees outside its group.
- Position interpolation (`rope_factor`): RoPE positions are divided by the factor (transformers' `linear` RoPE
  type), so a model trained on N positions reads `rope_factor` × N; `max_position_embeddings` grows with it.

Group rule: a batch of padded length L uses groups of G = ceil(group_size_ratio × L) tokens, rounded up to an even
number (half a group is the shift). When L is not a multiple of G the attention pads its own inputs to the next
multiple (padded keys are never attended to, padded queries are dropped), so every batch length works without a
collator change. A sequence of at most one group attends in full. Padding and packed-sequence masks from
transformers' mask builder are applied inside each group, with causality.

S²-Attn runs only while the model is in training mode; evaluation (eval loss during training), generation and the
saved model use ordinary full attention (SDPA), as in the paper.

Artifact: a whole model ("model"): the adapter and the trained embeddings/norms are merged into a float32 CPU copy
of the base (the trained model itself is left as it is) and saved in the base's dtype with `sdpa` attention and the
scaled RoPE in its config, so chat, eval, export and a next stage load it with plain transformers.
"""

from __future__ import annotations

import math
import shutil

from pydantic import Field, PrivateAttr

from tuneforge.methods.lora import LoraMethod, LoraParams, lora_kwargs
from tuneforge.utils.errors import ConfigError

S2_ATTENTION = "longlora_s2"  # the attention implementation's name in transformers' AttentionInterface
_RATIO = "longlora_group_ratio"  # set on each attention module: S²-Attn applies to modules that carry it
_TRAINED_FULLY = ("embed_tokens", "norm")  # PEFT matches name endings: embed_tokens and every *norm module


class LongLoraParams(LoraParams):
    group_size_ratio: float = Field(0.25, gt=0, le=1, description="S²-Attn group length as a share of the "
                                                                  "sequence (1: full attention)")
    rope_factor: float | None = Field(None, ge=1, description="position interpolation: RoPE positions divided by "
                                                              "this, the context grows by it; null: keep the "
                                                              "model's context")
    train_embeddings_and_norms: bool = Field(True, description="also train the input embeddings and every norm in "
                                                               "full (LongLoRA's LoRA+)")
    _tied: bool = PrivateAttr(False)  # the model ties its output layer to the embeddings (filled by fit_to_model)


class LongLoraMethod(LoraMethod):
    name = "longlora"
    description = ("LoRA + trained embeddings and norms with shifted sparse attention in training and optional RoPE "
                   "interpolation, for a longer context; saves a merged model")
    Params = LongLoraParams
    artifact = "model"
    # LoRA's rate halved: the embeddings and norms train in full at the same rate (the paper uses 2e-5 over 1000
    # steps of batch 64 on 7B-13B models; tuneforge's runs are shorter).
    base_lr = 1e-4

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        if params.rope_factor and params.rope_factor != 1:
            scale_rope(model, params.rope_factor)
        use_shifted_sparse_attention(model, params.group_size_ratio)
        return super().apply(model, params, total_steps=total_steps, tok=tok)

    def fit_to_model(self, params, model):
        params = super().fit_to_model(params, model)
        if not params.train_embeddings_and_norms:
            return params
        keep = list(dict.fromkeys([*(params.modules_to_save or []), *_TRAINED_FULLY]))
        fitted = params.model_copy(update={"modules_to_save": keep})
        fitted._tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
        return fitted

    def peft_config(self, params, task_type, total_steps: int):
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, ensure_weight_tying=params._tied, **lora_kwargs(params))

    def save(self, trainer, final_dir) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        start = getattr(model, "tuneforge_initial_adapter", None)
        if start:  # PiSSA/OLoRA keep their starting adapter for conversion; a merged model needs none
            shutil.rmtree(start, ignore_errors=True)
        merged = merged_copy(model)
        merged.set_attn_implementation("sdpa")
        merged.save_pretrained(str(final_dir))

    def estimate_trainable(self, shape, params) -> int:
        n = super().estimate_trainable(shape, params)
        if params.train_embeddings_and_norms:  # the embeddings, and two norms per layer plus the final one
            n += shape.vocab * shape.hidden + (2 * shape.n_layers + 1) * shape.hidden
        return n


def merged_copy(peft_model):
    """The adapter and the trained copies merged into a copy of the model, made on the CPU in float32 and returned in
    the frozen base's dtype. The copy is built tensor by tensor (deepcopy with each parameter and buffer already
    copied to the CPU), so it never holds a second model on the GPU, keeps tied weights tied, and leaves the trained
    model untouched (merging it in place would change the run's model after training, and unmerging does not
    restore the base weights bit for bit)."""
    import copy
    import itertools

    import torch

    frozen = [p.dtype for p in peft_model.parameters() if not p.requires_grad and p.is_floating_point()]
    memo = {}
    for t in itertools.chain(peft_model.parameters(), peft_model.buffers()):
        cpu = t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype, copy=True)
        memo[id(t)] = torch.nn.Parameter(cpu, requires_grad=False) if isinstance(t, torch.nn.Parameter) else cpu
    merged = copy.deepcopy(peft_model, memo).merge_and_unload()
    return merged.to(frozen[0]) if frozen else merged


def scale_rope(model, factor: float) -> None:
    """Linear RoPE scaling (position interpolation) by `factor`, in the config (what the saved model reloads with)
    and in the live rotary embedding, which computed its frequencies when the model was built."""
    config = model.config.get_text_config()
    rope = dict(getattr(config, "rope_parameters", None) or {})
    kind = rope.get("rope_type", "default")
    if kind not in ("default", "linear"):
        raise ConfigError(f"method longlora: rope_factor={factor:g}, but the model already uses {kind!r} RoPE "
                          f"scaling, which linear interpolation cannot extend",
                          hint="set method.rope_factor=null to train at the model's own context")
    rope.update(rope_type="linear", factor=float(rope.get("factor", 1.0) if kind == "linear" else 1.0) * factor)
    config.rope_parameters = rope
    config.max_position_embeddings = int(config.max_position_embeddings * factor)
    decoder = model.get_decoder()
    rotary = getattr(decoder, "rotary_emb", None)
    if rotary is None:
        raise ConfigError("method longlora: rope_factor needs a model with one shared rotary embedding "
                          "(llama-family)", hint="set method.rope_factor=null, or use a llama-family model")
    decoder.rotary_emb = type(rotary)(config=config).to(rotary.inv_freq.device)


def use_shifted_sparse_attention(model, ratio: float) -> None:
    """Switch the model's attention to S²-Attn (training mode only; see s2_attention_forward)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(S2_ATTENTION, s2_attention_forward)
    AttentionMaskInterface.register(S2_ATTENTION, sdpa_mask)  # the same padding/packing masks as SDPA
    layers = getattr(model.get_decoder(), "layers", None) or []
    attention = [getattr(layer, "self_attn", None) for layer in layers]
    if not attention or any(a is None or not hasattr(a, "num_key_value_groups") for a in attention):
        raise ConfigError("method longlora: shifted sparse attention needs decoder layers with llama-style "
                          "self-attention", hint="use a llama-family model (llama, mistral, qwen2, smollm2, ...)")
    for module in attention:
        setattr(module, _RATIO, ratio)
    model.set_attn_implementation(S2_ATTENTION)
    if model.config._attn_implementation != S2_ATTENTION:
        raise ConfigError(f"method longlora: {type(model).__name__} cannot switch its attention implementation",
                          hint="use a llama-family model whose attention goes through transformers' "
                               "AttentionInterface")


def group_size(ratio: float, length: int) -> int:
    """S²-Attn's group length for a sequence of `length`: ceil(ratio × length), rounded up to an even number."""
    group = math.ceil(ratio * length)
    return group + group % 2


def s2_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                         is_causal=None, **kwargs):
    """transformers' attention-function signature. S²-Attn for a module in training mode that carries a group
    ratio, on a full causal pass (no KV cache: as many queries as keys) with a boolean mask (or none); everything
    else, and a sequence no longer than one group, goes to transformers' own SDPA attention."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ratio = getattr(module, _RATIO, None)
    length = query.shape[2]
    plain = (ratio is None or not module.training or key.shape[2] != length or kwargs.get("position_bias") is not None
             or (attention_mask is not None and attention_mask.dtype.is_floating_point)
             or group_size(ratio, length) >= length)
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = shifted_sparse_attention(query, key, value, attention_mask, group_size(ratio, length), dropout=dropout,
                                   scaling=scaling, kv_repeat=module.num_key_value_groups)
    return out, None


def shifted_sparse_attention(query, key, value, attention_mask, group: int, *, shift: bool = True,
                             dropout: float = 0.0, scaling=None, kv_repeat: int = 1):
    """Causal attention within groups of `group` tokens; with `shift` the second half of the heads uses groups
    shifted by group/2. query (B, H, L, D), key/value (B, H/kv_repeat, L, D), attention_mask None (causal) or a
    boolean (B or 1, 1, L, L) mask (True: may attend). Returns (B, L, H, D), as transformers' attention does."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import repeat_kv

    key, value = repeat_kv(key, kv_repeat), repeat_kv(value, kv_repeat)
    batch, heads, length, _ = query.shape
    padded = -(-length // group) * group
    query, key, value = (F.pad(t, (0, 0, 0, padded - length)) for t in (query, key, value))
    split = heads // 2 if shift else heads
    outs = []
    for part, offset in ((slice(0, split), 0), (slice(split, heads), group // 2)):
        if part.start == part.stop:
            continue
        order = (torch.arange(padded, device=query.device) + offset) % padded
        mask = _group_mask(attention_mask, order, length, group, batch, plain=not offset)
        q, k, v = (_to_groups(t[:, part].index_select(2, order) if offset else t[:, part], group)
                   for t in (query, key, value))
        out = _from_groups(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                                          is_causal=mask is None), batch)
        outs.append(out.index_select(2, torch.argsort(order)) if offset else out)
    return torch.cat(outs, dim=1)[:, :, :length].transpose(1, 2).contiguous()


def _to_groups(t, group: int):
    """(B, h, P, D) → (B × P/group, h, group, D): one attention batch row per group of consecutive tokens."""
    batch, heads, padded, dim = t.shape
    return t.view(batch, heads, padded // group, group, dim).transpose(1, 2).reshape(-1, heads, group, dim)


def _from_groups(out, batch: int):
    """The inverse of _to_groups: (B × n, h, group, D) → (B, h, P, D)."""
    rows, heads, group, dim = out.shape
    return out.view(batch, rows // batch, heads, group, dim).transpose(1, 2).reshape(batch, heads, -1, dim)


def _group_mask(attention_mask, order, length: int, group: int, batch: int, *, plain: bool):
    """(B × n, 1, group, group) boolean mask of each group, or None when it is plain causal attention (`plain`:
    unshifted groups; no padding mask, no padded tail). `order`: the sequence position of each slot, group after
    group. A key is visible when it comes no later than the query both in the group's order and in the sequence
    (this keeps the two halves of the wrapped shifted group apart), lies inside the real sequence, and the model's
    mask allows it. Every token sees at least itself, so no softmax row is empty (padded queries' outputs are
    discarded)."""
    import torch

    padded = order.numel()
    if attention_mask is None and padded == length and plain:
        return None
    pos = order.view(-1, group)  # (n, group): the sequence position of each group slot
    slot = torch.arange(group, device=order.device)
    visible = (slot[None, :, None] >= slot[None, None, :]) & (pos[:, :, None] >= pos[:, None, :])
    visible = visible & (pos < length)[:, None, :]
    if attention_mask is not None:
        clamped = pos.clamp(max=length - 1)
        visible = visible & attention_mask[:, 0][:, clamped[:, :, None], clamped[:, None, :]]
    visible = visible | torch.eye(group, dtype=torch.bool, device=order.device)
    return visible.expand(batch, *visible.shape[-3:]).reshape(-1, 1, group, group)
