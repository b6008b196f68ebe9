"""The next-token loss of pt and sft, computed only where it is trained, without the [batch, length, vocabulary]
logits.

A causal LM's own loss applies the output layer to every position, prompt and padding included, keeps the whole
fp32 logits (805 MB for 8 × 512 tokens of a 49k vocabulary) and their log-softmax for the backward, and then
ignores the positions without a label. `labelled_token_loss` runs the decoder, keeps the hidden states of the
positions that predict a labelled token, and hands them to `LinearCrossEntropy`: chunk by chunk it computes the
logits, the summed cross-entropy and, in the same pass, its gradient with respect to the hidden states (and to
the output weight when that is trained), so no chunk's logits outlive it and the backward only scales the stored
gradients. The FLOPs are those of the model's own loss restricted to the labelled positions; for sft that skips
the prompt's share of the output layer, the largest matrix of a small model.

Models whose logits are more than a linear layer on the last hidden state (soft-capping, scaling), prompt-learning
adapters (their virtual tokens live in PEFT's forward) and DDP-wrapped models keep the model's own loss:
`decoder_and_head` returns None for them.
"""

from __future__ import annotations

import torch

from tuneforge.stages.logps import decoder_and_head, labelled_states

# Logits per chunk: just under 32 MiB in fp32 (169 positions of a 49k vocabulary), because glibc serves larger
# blocks with mmap and every step would fault them in again (chunks of 341 rows, 64 MiB: 196,000 faults per 2,048
# rows). The output layer's products are memory-bound for few rows: 2,048 rows x 49,152 x 576, forward and
# gradients, took 2.23-2.91 s in chunks of 85 rows, 2.04-2.51 s in chunks of 162 and 2.18-2.52 s in chunks of 341
# (2 Zen 3 threads, alternated 5x).
CHUNK_ELEMENTS = (32 << 20) // 4 - (1 << 16)


class LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of cross_entropy(hidden @ weight.T + bias, targets), gradients computed in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        rows = max(1, CHUNK_ELEMENTS // weight.shape[0])
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and ctx.needs_input_grad[2] \
            else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start:start + rows], targets[start:start + rows]
            logits = torch.nn.functional.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(-1, t.unsqueeze(-1)).squeeze(-1)).sum()
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                continue
            grad_logits = logits.sub_(lse.unsqueeze(-1)).exp_()  # softmax, in place of the logits
            grad_logits[torch.arange(len(t), device=t.device), t] -= 1.0
            if grad_hidden is not None:
                grad_hidden[start:start + rows] = grad_logits.to(weight.dtype) @ weight
            if grad_weight is not None:
                grad_weight += grad_logits.t() @ h.float()
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None))
        ctx.has = (grad_hidden is not None, grad_weight is not None, grad_bias is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        grads = [(next(saved) * grad_total).to(dtype) if has else None for has, dtype in zip(ctx.has, ctx.dtypes)]
        return grads[0], grads[1], grads[2], None


def labelled_token_loss(model, inputs: dict):
    """(summed next-token cross-entropy over the labelled positions, their count), or None when the model must
    compute its loss itself. `inputs` are a collated batch: input_ids, labels, and attention_mask or position_ids."""
    parts = decoder_and_head(model)
    if parts is None:
        return None
    decoder, head = parts
    h, t, scored = labelled_states(decoder, inputs["labels"], **{k: v for k, v in inputs.items() if k != "labels"})
    if type(head) is torch.nn.Linear:
        total = LinearCrossEntropy.apply(h, head.weight, head.bias, t)
    else:  # an adapted output layer (LoRA on lm_head, modules_to_save): its own forward, on the labelled rows only
        total = torch.nn.functional.cross_entropy(head(h).float(), t, reduction="sum")
    return total, scored.sum()
