"""Attention of packed rows computed sample by sample (`train.attention: varlen`).

A packed row holds several samples one after another, each with position ids that restart at 0. With `sdpa`,
transformers turns the restarting position ids into a block-diagonal causal mask over the whole row, and PyTorch's
kernel computes every query against every key of the row (cutoff² scores per head), then masks most of them away.
Here each sample's query, key and value slices go to the same SDPA kernel as a causal sequence of their own, so the
scores are Σ len² instead of cutoff², which is what FlashAttention's variable-length kernels do on a GPU. The result
is the same attention (the masked scores contributed exact zeros), up to float rounding.

Only a training-shaped call is split: queries as long as the keys, no attention mask (packed batches carry none),
position ids given. Anything else (a padded batch with its mask, generation with a KV cache) is plain `sdpa`.
Models with sliding-window or chunked layers are refused by `supports`, because their masks are more than causal.
"""

from __future__ import annotations

NAME = "tuneforge_varlen"


def supports(config) -> bool:
    """Whether every attention layer of this model is plain causal attention over the whole sequence."""
    types = set(getattr(config, "layer_types", None) or ["full_attention"])
    return (types == {"full_attention"} and not getattr(config, "sliding_window", None)
            and not getattr(config, "attention_chunk_size", None) and not getattr(config, "is_encoder_decoder", False))


def register() -> str:
    """Register the attention function and its mask function with transformers (idempotent) → their name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, varlen_mask)
    return NAME


def varlen_mask(*args, **kwargs):
    """No mask for a batch without a padding mask (the attention splits it by position ids); a padded batch gets
    the mask `sdpa` would get."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None:
        return None
    return sdpa_mask(*args, **kwargs)


def segments(position_ids) -> list[list[tuple[int, int]]]:
    """Per row, the [start, end) spans of its samples: a sample starts where the position id does not follow the
    previous one (a restart at 0, or any jump)."""
    breaks = (position_ids[:, 1:] != position_ids[:, :-1] + 1).nonzero().tolist()
    length = position_ids.shape[1]
    starts: list[list[int]] = [[0] for _ in range(position_ids.shape[0])]
    for row, col in breaks:
        starts[row].append(col + 1)
    return [list(zip(s, s[1:] + [length])) for s in starts]


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """The attention interface's signature: query (batch, heads, q_len, dim), key/value (batch, kv_heads, kv_len,
    dim) → (output (batch, q_len, heads, dim), None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    q_len = query.shape[2]
    if attention_mask is not None or position_ids is None or q_len != key.shape[2] or q_len == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    spans = segments(position_ids.expand(query.shape[0], -1))
    if all(len(row) == 1 for row in spans):
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, **kwargs)
    rows = []  # unbind and split: their backward is one stack and one cat, where slices would each add a zero tensor
    for q, k, v, row in zip(query.unbind(0), key.unbind(0), value.unbind(0), spans):
        lengths = [e - s for s, e in row]
        parts = [sdpa_attention_forward(module, qs[None], ks[None], vs[None], None, dropout=dropout, scaling=scaling,
                                        **kwargs)[0]
                 for qs, ks, vs in zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1))]
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0), None
