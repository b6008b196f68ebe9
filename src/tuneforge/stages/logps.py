"""Log-probabilities of the labelled (answer) tokens of a batch, the quantity every preference loss is built from.

`answer_logps` never materialises the [batch, length, vocabulary] logits: it runs the decoder, keeps the hidden
states of the positions that predict a labelled token (no prompt, no padding), and applies the output layer to them
in chunks of `CHUNK_TOKENS` positions, each under activation checkpointing, so only one chunk's logits exist at a
time, in the forward and in the backward alike. For a model whose output is not a plain linear layer on the
decoder's last hidden state (logit soft-capping or scaling, no `get_decoder`), for a prompt-learning adapter, and
under DDP, it falls back to the model's own forward and `sequence_logps` on its logits.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from tuneforge.data.render import IGNORE

CHUNK_TOKENS = 512  # positions per output-layer chunk: 512 × a 49k vocabulary = 100 MB of fp32 logits


def sequence_logps(logits, labels):
    """(summed log-prob of the labelled tokens, their count) per row; labels are the input ids, -100 elsewhere."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE
    picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    token_logps = picked - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(-1), mask.sum(-1).clamp(min=1)


def answer_logps(model, input_ids, attention_mask, labels):
    """(summed log-prob of the labelled tokens, their count) per row, as sequence_logps, in bounded memory."""
    parts = decoder_and_head(model)
    if parts is None:
        return sequence_logps(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)
    decoder, head = parts
    h, t, scored = labelled_states(decoder, labels, input_ids=input_ids, attention_mask=attention_mask)
    token_logps = [checkpoint(_chunk_logps, head, h[i:i + CHUNK_TOKENS], t[i:i + CHUNK_TOKENS], use_reentrant=False)
                   for i in range(0, len(t), CHUNK_TOKENS)]
    flat = torch.cat(token_logps) if token_logps else h.new_zeros(0, dtype=torch.float32)
    rows = scored.nonzero()[:, 0]
    sums = torch.zeros(labels.shape[0], dtype=flat.dtype, device=flat.device).index_add(0, rows, flat)
    return sums, scored.sum(-1).clamp(min=1)


def labelled_states(decoder, labels, **model_inputs):
    """(hidden states of the positions that predict a labelled token, those tokens, the [batch, length - 1] mask of
    them): position t of the decoder's last hidden state predicts token t + 1."""
    hidden = decoder(**model_inputs).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != IGNORE
    return hidden[:, :-1][scored], targets[scored], scored


def _chunk_logps(head, h, t):
    logits = head(h).float()
    return logits.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def decoder_and_head(model):
    """(decoder returning last_hidden_state, output layer) of a causal LM (PEFT-wrapped or not), or None when its
    logits are more than the output layer applied to that hidden state, when a prompt-learning adapter puts its
    virtual tokens in PEFT's forward, or when it is wrapped by DDP."""
    if hasattr(model, "module"):  # DDP: its gradient sync needs its own forward to run
        return None
    active = getattr(model, "active_peft_config", None)
    if getattr(active, "is_prompt_learning", False):
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or \
            getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or decoder is base or not isinstance(head, torch.nn.Module):
        return None
    return decoder, head
