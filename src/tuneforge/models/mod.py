"""Mixture-of-Depths (Raposo et al. 2024) on a pretrained llama-family decoder: in every `every`-th block a router,
a linear layer hidden → 1, scores each token, and only some tokens go through the block; the others skip it along the
residual stream. A processed token's block output (what the block adds to the residual) is multiplied by
2·sigmoid(score), so the router learns from the language-model loss which tokens gain from the block.

Decisions, and why:
- Conversion, not training from scratch. The router reads the block input RMS-normalised (no learned scale), so its
  scores do not depend on how large the residual stream has grown at that depth, and starts with tiny weights:
  every score is ≈ 0 and every processed token's weight ≈ 2·sigmoid(0) = 1, so a converted model starts as the
  original up to the tokens it drops. Dropping tokens still costs, and unevenly: on SmolLM2-135M (16 identity
  conversations, random routers, capacity 0.5) routing block 1 alone raised the loss from 4.55 to 5.95 and the last
  block alone to 6.22, a middle block to 4.4-4.7. So block 0 never routes and `dense_ends` blocks at each end stay
  dense (default 2: SmolLM2's odd blocks 3..27, loss 6.29 at capacity 0.5, against 10.3 for all odd blocks 1..29).
  The first token of each sequence (position 0, so every packed sequence's too) always goes through: pretrained
  attention heads park much of their weight on it, and a routed block whose tokens cannot see it loses far more
  (7.96 instead of 6.29 for blocks 3..27).
- Training (module in training mode, no KV cache): each sequence keeps its top ceil(capacity × real tokens) tokens
  by router score (padding never competes), as in the paper. The chosen tokens go through the block alone, in
  sequence order, with their own positions (rotary cos/sin, position ids) and the attention mask cut down to them
  (causal among the chosen, padding and packed-sequence boundaries kept), so the compute saving is real. Top-k over
  the whole sequence is not causal: whether a token is processed depends on the scores of the tokens after it.
- Inference (eval mode, or any call with a KV cache and no gradients): a token is processed when its score is above
  a threshold, the running mean of the best score each training sequence left out (like batch-norm running
  statistics; saved with the model). That rule is causal, so generation with a KV cache gives the same logits as a
  full forward, and about `capacity` of the tokens are processed. Before any training the threshold is -inf: every
  token is processed, so a freshly converted model generates like the original. Without a cache only the processed
  tokens run, as in training. With a KV cache the routed block runs on every new token (the cache of every layer
  must hold every position), attention is masked so that a token only sees earlier tokens the block processed, and
  the output of the others is discarded: exact, but generation saves no compute. The processed/skipped flag of each
  cached position lives in the cache layer itself (`RoutedCacheLayer`), so reordering, cropping and batch selection
  of the cache keep it in step.
- Saving: `config.mixture_of_depths = {capacity, every, dense_ends, blocks}` marks the model; transformers keeps the
  unknown key. The routers and thresholds are in the safetensors as `...layers.N.router.*` / `...layers.N.
  mod_threshold`; `from_pretrained` drops them as unexpected keys, so `restore` routes the recorded blocks again and
  reads them itself (`tuneforge.models.load.load_model` calls `restore_if_converted` for every folder it loads).
- The block's class is swapped for a subclass (`Routed<LayerClass>`) instead of wrapping it in a new module: the
  original weights keep their names (a saved model's blocks load with plain `from_pretrained`), and transformers'
  hidden-state capture, which hooks the decoder-layer class, still sees whole sequences.
Attention must be sdpa or eager (the mask of a subset is built as a 4D tensor)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer

from tuneforge.utils.errors import ModelError

KEY = "mixture_of_depths"  # the config attribute that marks a converted model
_ROUTER_INIT = 0.01  # std of a router score at the start (weights ~ N(0, (0.01 / sqrt(hidden))²) on unit-RMS input)
_THRESHOLD_MOMENTUM = 0.1
_SAVED = re.compile(r"\.(router\.(weight|bias)|mod_threshold)$")
_ATTENTION = ("sdpa", "eager")


def routed_indices(n_layers: int, every: int, dense_ends: int = 2) -> list[int]:
    """The blocks that get a router: every `every`-th one counting from block 1, leaving `dense_ends` blocks dense at
    each end (as many as the model can spare: a 2-block model routes block 1); block 0 always runs."""
    ends = min(dense_ends, (n_layers - 2) // 2)
    return [i for i in range(max(ends, 1), n_layers - ends) if i % every == every - 1]


def convert(model, capacity: float, every: int, dense_ends: int = 2) -> list[int]:
    """Give every `every`-th decoder block (see routed_indices) a router that lets `capacity` of each sequence's
    tokens through in training. Converting a converted model keeps its routers and changes only the capacity.
    Returns the indices of the routed blocks."""
    blocks = routed_indices(len(model.get_decoder().layers), every, dense_ends)
    if not blocks:
        raise ModelError(f"every={every} with dense_ends={dense_ends} routes no block of this "
                         f"{len(model.get_decoder().layers)}-block model (block 0 always runs)",
                         hint="lower every or dense_ends")
    _route(model, capacity, blocks)
    model.config.mixture_of_depths = {"capacity": capacity, "every": every, "dense_ends": dense_ends,
                                      "blocks": blocks}
    return blocks


def _route(model, capacity: float, blocks: list[int]) -> None:
    config = model.config
    if config._attn_implementation not in _ATTENTION:
        raise ModelError(f"mixture of depths builds 4D attention masks for its token subsets; the model uses "
                         f"{config._attn_implementation} attention", hint="load it with sdpa (the default)")
    before = getattr(config, KEY, None)
    if before and before["blocks"] != blocks:
        raise ModelError(f"the model is already a mixture of depths routing blocks {before['blocks']}; these "
                         f"settings would route {blocks} and drop trained routers",
                         hint=f"set every={before['every']} and dense_ends={before['dense_ends']}")
    layers = model.get_decoder().layers
    for i in blocks:
        if not isinstance(layers[i], RoutedLayer):
            _add_router(layers[i], i, config.hidden_size)
        layers[i].mod_capacity = capacity


def restore_if_converted(model, path: str):
    """`model` with its routers back when the folder it was loaded from holds a converted model; else unchanged."""
    if getattr(model.config, KEY, None):
        restore(model, path)
    return model


def restore(model, path: str) -> None:
    """Re-convert a model loaded from a saved Mixture-of-Depths folder and load its routers and thresholds."""
    _route(model, getattr(model.config, KEY)["capacity"], getattr(model.config, KEY)["blocks"])
    saved = _saved_routers(path)
    wanted = {n for n in model.state_dict() if _SAVED.search(n)}
    if set(saved) != wanted:
        missing, extra = sorted(wanted - set(saved)), sorted(set(saved) - wanted)
        raise ModelError(f"{path} is marked as a mixture-of-depths model ({KEY} in config.json), but its router "
                         f"weights do not match: missing {missing[:3]}, unexpected {extra[:3]}",
                         hint="load the folder a mixture_of_depths run saved (OUTPUT_DIR/model)")
    model.load_state_dict(saved, strict=False)


def _saved_routers(path: str) -> dict:
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not files:
        raise ModelError(f"{path} is marked as a mixture-of-depths model but holds no safetensors to read its "
                         f"routers from", hint="load a mixture-of-depths model from its local folder")
    found = {}
    for file in files:
        with safe_open(str(file), framework="pt") as st:
            found.update({k: st.get_tensor(k) for k in st.keys() if _SAVED.search(k)})
    return found


def _add_router(block, index: int, hidden: int) -> None:
    # the block's float dtype (a 4-bit block's first parameters are packed integers; its norms stay float)
    weight = next(p for p in block.parameters() if p.is_floating_point())
    block.__class__ = _routed_class(type(block))
    block.router = nn.Linear(hidden, 1, device=weight.device, dtype=weight.dtype)
    nn.init.normal_(block.router.weight, std=_ROUTER_INIT / math.sqrt(hidden))
    nn.init.zeros_(block.router.bias)
    block.register_buffer("mod_threshold", torch.tensor(float("-inf"), device=weight.device))
    block.mod_layer_idx = index


_CLASSES: dict[type, type] = {}


def _routed_class(base: type) -> type:
    """`Routed<base>`: the block's own class with RoutedLayer's forward in front (module-level, so it pickles)."""
    if base not in _CLASSES:
        name = f"Routed{base.__name__}"
        _CLASSES[base] = globals()[name] = type(name, (RoutedLayer, base), {"__module__": __name__,
                                                                            "__qualname__": name})
    return _CLASSES[base]


class RoutedLayer:
    """Mixed in front of a decoder layer's class: decides which tokens the layer processes (see module docstring).
    Instances carry `router`, `mod_threshold`, `mod_capacity` and `mod_layer_idx`."""

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                position_embeddings=None, **kwargs):
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        layer = _routed_cache_layer(cache, self.mod_layer_idx) if cache is not None else None
        past = layer.get_seq_length() if layer is not None else 0
        allowed = _allowed(attention_mask, hidden_states.shape[0], hidden_states.shape[1], past, hidden_states.device)
        real = allowed.diagonal(offset=past, dim1=1, dim2=2)  # a padding token may not even see itself
        scores = self.router(_rms(hidden_states).to(self.router.weight.dtype)).squeeze(-1)
        weight = 2 * torch.sigmoid(scores)
        first = real & (position_ids == 0) if position_ids is not None else torch.zeros_like(real)  # attention sink
        # A training step routes top-k; so does one with transformers' default use_cache=True (an empty cache and
        # gradients on), through the masked path. Generation (a cache, no gradients) and eval mode use the threshold.
        if self.training and (layer is None or (past == 0 and torch.is_grad_enabled())):
            chosen = self._top_k(scores.detach(), real, first)
        else:
            chosen = real & ((scores.detach() > self.mod_threshold) | first)
        run = dict(position_ids=position_ids, position_embeddings=position_embeddings, **kwargs)
        if layer is not None:
            return self._masked(hidden_states, chosen, weight, allowed, attention_mask, cache, layer, use_cache, run)
        return self._gathered(hidden_states, chosen, weight, allowed, attention_mask, run)

    def _top_k(self, scores, real, first):
        """Each sequence's ceil(capacity × its real tokens) best-scored real tokens, its first token among them;
        tracks the threshold for inference."""
        n_real = real.sum(1)
        k = torch.minimum(torch.ceil(n_real * self.mod_capacity - 1e-6).long().clamp(min=1), n_real)
        ranked = scores.masked_fill(~real, float("-inf")).masked_fill(first, float("inf"))
        top = ranked.topk(min(int(k.max()) + 1, scores.shape[1]), dim=1)
        keep = torch.arange(top.indices.shape[1], device=scores.device) < k[:, None]
        left_out = k < n_real
        best_left_out = top.values.gather(1, k.clamp(max=top.values.shape[1] - 1)[:, None]).squeeze(1)[left_out]
        best_left_out = best_left_out[torch.isfinite(best_left_out)]  # packed rows with more first tokens than k
        if torch.is_grad_enabled() and best_left_out.numel():  # not in no-grad passes (references, old log-probs)
            self._track_threshold(best_left_out)
        return torch.zeros_like(real).scatter(1, top.indices, keep)

    @torch.no_grad()
    def _track_threshold(self, best_left_out: torch.Tensor) -> None:
        """The running mean of each sequence's best score that training left out (activation checkpointing's
        recomputation updates it a second time per step: a slightly shorter average, no harm)."""
        value = best_left_out.float().mean().to(self.mod_threshold.dtype)
        start = torch.isinf(self.mod_threshold)
        self.mod_threshold.copy_(torch.where(start, value, torch.lerp(self.mod_threshold, value,
                                                                      _THRESHOLD_MOMENTUM)))

    def _gathered(self, hidden, chosen, weight, allowed, mask, run):
        """Only the chosen tokens go through the block (in sequence order); the others pass unchanged."""
        count = chosen.sum(1)
        width = int(count.max())
        if width == 0:
            return hidden
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        order = torch.where(chosen, positions, positions + hidden.shape[1]).argsort(dim=1)[:, :width]
        active = torch.arange(width, device=hidden.device) < count[:, None]  # a shorter row's spare slots
        part = _take(hidden, order)
        if mask is None and bool(active.all()):
            sub_mask = None  # sdpa's is_causal on the subset: still causal among the chosen
        else:
            sub = allowed.gather(1, order[:, :, None].expand(-1, -1, allowed.shape[2]))
            sub = sub.gather(2, order[:, None, :].expand(-1, width, -1)) & active[:, None, :]
            sub_mask = _as_mask(sub, 0, mask)
        cos, sin = run.pop("position_embeddings")
        ids = run.pop("position_ids")
        out = super().forward(part, attention_mask=sub_mask, cache=None, use_cache=False,
                              position_ids=ids.expand(hidden.shape[0], -1).gather(1, order) if ids is not None
                              else None, position_embeddings=(_take(cos, order), _take(sin, order)), **run)
        added = (out - part) * (weight.gather(1, order) * active)[..., None].to(out.dtype)
        return hidden.scatter_add(1, order[..., None].expand(-1, -1, hidden.shape[2]), added.to(hidden.dtype))

    def _masked(self, hidden, chosen, weight, allowed, mask, cache, layer, use_cache, run):
        """With a KV cache: every token runs (so the cache holds every position), but attends only to the tokens this
        block processed; the output of the skipped ones is discarded."""
        past = layer.get_seq_length()
        kept = chosen if layer.kept is None else torch.cat([layer.kept, chosen], dim=1)
        sub_mask = _as_mask(allowed & kept[:, None, :], past, mask)
        out = super().forward(hidden, attention_mask=sub_mask, cache=cache, use_cache=use_cache, **run)
        layer.kept = kept
        return hidden + (out - hidden) * (weight * chosen)[..., None].to(out.dtype)


def _rms(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def _take(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows `order` (batch, k) of x (batch or 1, seq, dim), per sequence."""
    x = x.expand(order.shape[0], -1, -1)
    return x.gather(1, order[..., None].expand(-1, -1, x.shape[2]))


def _allowed(mask, batch: int, q: int, past: int, device) -> torch.Tensor:
    """(batch, q, past + q) bool: which key each query may attend to. A None mask is sdpa's causal skip (no padding):
    causal, aligned to the last key."""
    if mask is None:
        keys = torch.arange(past + q, device=device)
        return (keys[None, :] <= keys[past:, None]).expand(batch, -1, -1)
    mask = mask if mask.dtype == torch.bool else mask == 0  # eager: 0 attends, the dtype's minimum does not
    return mask[:, 0].expand(batch, -1, -1)


def _as_mask(allowed: torch.Tensor, past: int, like) -> torch.Tensor:
    """`allowed` (batch, q, kv; changed in place) in the layout of the model's own mask (bool for sdpa, additive float
    for eager), with every token allowed to see itself: a query row with nothing to attend to would give NaN."""
    allowed.diagonal(offset=past, dim1=1, dim2=2).fill_(True)
    allowed = allowed[:, None]
    if like is None or like.dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=like.dtype, device=like.device).masked_fill(~allowed,
                                                                                         torch.finfo(like.dtype).min)


class RoutedCacheLayer(DynamicLayer):
    """A dynamic KV-cache layer that also remembers, per cached position, whether the routed block processed it."""

    kept: torch.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self.kept = None

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if tokens_to_remove and self.kept is not None:
            self.kept = self.kept[:, : -abs(tokens_to_remove)]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.kept is not None:
            self.kept = self.kept.index_select(0, beam_idx.to(self.kept.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.kept is not None:
            self.kept = self.kept.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.kept is not None:
            self.kept = self.kept[indices]


def _routed_cache_layer(cache, index: int) -> RoutedCacheLayer:
    layers = getattr(cache, "layers", None)
    if layers is not None and len(layers) <= index and getattr(cache, "layer_class_to_replicate", None):
        while len(layers) <= index:
            layers.append(cache.layer_class_to_replicate())
    layer = layers[index] if layers is not None and len(layers) > index else None
    if type(layer) is DynamicLayer:
        layer.__class__ = RoutedCacheLayer
    if not isinstance(layer, RoutedCacheLayer):
        raise ModelError(f"a mixture-of-depths model generates with transformers' dynamic KV cache, not "
                         f"{type(layer).__name__ if layer is not None else type(cache).__name__}",
                         hint="generate without cache_implementation / a static cache")
    if (layer.kept.shape[1] if layer.kept is not None else 0) != layer.get_seq_length():
        raise ModelError("this KV cache was filled without the mixture-of-depths routing of its earlier tokens",
                         hint="start generation from an empty cache")
    return layer
