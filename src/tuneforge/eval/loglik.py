"""Batched log-likelihood of continuations given a context: the scorer behind multiple choice and label scoring.

Tokenization boundary: context + continuation are tokenized *together* (as the model reads them); the scored tokens
start where that sequence first differs from the context tokenized alone. So a token that straddles the boundary
(BPE merging ":" and " A" into ":▁A") belongs to the continuation and is scored, rather than the continuation being
tokenized on its own into pieces the model never sees in running text. (Character offsets are not used: some
tokenizers report wrong ones.)

Shared context: the choices of one request share their token prefix. With ``share_context=True`` (default) a batch
of requests runs the prefixes once (left-padded, KV cache kept), the cache rows are repeated per choice, and only the
choice tokens run a second time: cost ~ context + sum(choices) tokens instead of n_choices * (context + choice).
When every continuation is a single token (letter answers) the second pass is skipped entirely. Models whose cache
cannot be re-indexed fall back to scoring full sequences (``share_context=False``), which gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tuneforge.utils.console import console


@dataclass
class Request:
    """Score each continuation as the text that follows `context`.

    `special_tokens`: let the tokenizer add its usual bos; False for chat-template text, which already holds it.
    """

    context: str
    continuations: list[str]
    special_tokens: bool = True


@dataclass
class _Encoded:
    seqs: list[list[int]]  # context + continuation token ids, one per continuation
    starts: list[int]  # index of the first scored token in each seq
    prefix: int  # number of leading tokens shared by all seqs and not scored by any


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        tok = seqs[0][i]
        if any(s[i] != tok for s in seqs[1:]):
            return i
    return n


class LoglikScorer:
    """Sum of continuation-token log-probabilities under a causal LM, batched (see module docstring)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, share_context: bool = True,
                 max_logit_elems: int = 1 << 26):
        self.model, self.tok = model, tokenizer
        self.batch_size = max(1, batch_size)
        # A prompt-based adapter (prompt / p-tuning / prefix) owns the start of the sequence and its cache: every
        # sequence is scored whole, with the virtual tokens' positions cut from the logits.
        self.share_context = share_context and not _prompt_learning(model)
        self.max_logit_elems = max_logit_elems  # bounds batch_rows * seq_len * vocab (fp32 logits memory)
        self.device = next(model.parameters()).device
        cfg = getattr(model, "config", None)
        self.vocab = int(getattr(cfg, "vocab_size", 0) or len(tokenizer))
        max_pos = getattr(cfg, "max_position_embeddings", None) or 2048
        tok_max = getattr(tokenizer, "model_max_length", None) or max_pos
        self.max_len = int(min(max_pos, tok_max if tok_max < 1_000_000 else max_pos))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.start_id = int(start if start is not None else self.pad_id)

    # ---------------------------------------------------------------- tokenization
    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=special)["input_ids"])

    def _encode_pair(self, context: str, cont: str, special: bool = True,
                     ctx_ids: list[int] | None = None) -> tuple[list[int], int]:
        """(ids of context+continuation, index of the first continuation token)."""
        ids = self._ids(context + cont, special)
        ctx = ctx_ids if ctx_ids is not None else (self._ids(context, special) if context else [])
        eos = self.tok.eos_token_id
        if special and ctx and ids and eos is not None and ids[-1] == eos and ctx[-1] == eos:
            ids, ctx = ids[:-1], ctx[:-1]  # a tokenizer that appends eos: the answer is not followed by it
        start = _common_prefix([ids, ctx]) if ctx else 0
        if start >= len(ids):
            raise ValueError(f"continuation {cont!r} produced no tokens after context {context[-40:]!r}")
        if start == 0:  # nothing to condition on: condition on the start token, as LM evaluators do
            ids, start = [self.start_id] + ids, 1
        return ids, start

    def encode(self, req: Request) -> _Encoded:
        ctx = self._ids(req.context, req.special_tokens) if req.context else []
        pairs = [self._encode_pair(req.context, c, req.special_tokens, ctx) for c in req.continuations]
        seqs, starts = [p[0] for p in pairs], [p[1] for p in pairs]
        overflow = max(len(s) for s in seqs) - self.max_len
        if overflow > 0:  # cut the context from the left, the same amount for every choice
            cut = min(overflow, min(starts) - 1)
            seqs = [s[cut:][: self.max_len] for s in seqs]
            starts = [st - cut for st in starts]
        prefix = min(_common_prefix(seqs), min(starts))
        if prefix == 0:  # choices differ from the first token on: give them a common start token
            seqs, starts, prefix = [[self.start_id] + s for s in seqs], [st + 1 for st in starts], 1
        return _Encoded(seqs, starts, prefix)

    # ---------------------------------------------------------------- batching
    def _batches(self, encs: list[_Encoded]) -> list[list[int]]:
        order = sorted(range(len(encs)), key=lambda i: -max(len(s) for s in encs[i].seqs))
        batches, cur, rows, width = [], [], 0, 0
        for i in order:
            e = encs[i]
            w = max(len(s) for s in e.seqs) - (e.prefix if self.share_context else 0)
            r = len(e.seqs)
            too_big = (rows + r) * max(width, w, 1) * self.vocab > self.max_logit_elems
            if cur and (len(cur) >= self.batch_size or too_big):
                batches.append(cur)
                cur, rows, width = [], 0, 0
            cur.append(i)
            rows, width = rows + r, max(width, w)
        if cur:
            batches.append(cur)
        return batches

    def score(self, requests: list[Request], progress: Callable[[int], None] | None = None) -> list[list[float]]:
        """Per request, the summed log-probability of each continuation (same order as given)."""
        encs = [self.encode(r) for r in requests]
        out: list[list[float] | None] = [None] * len(encs)
        for batch in self._batches(encs):
            sub = [encs[i] for i in batch]
            with torch.inference_mode():
                if self.share_context:
                    try:
                        scores = self._score_shared(sub)
                    except (AttributeError, NotImplementedError, TypeError) as err:
                        console.print(f"[yellow]context sharing unsupported by this model ({err}); "
                                      "scoring full sequences[/yellow]")
                        self.share_context = False
                        scores = self._score_full(sub)
                else:
                    scores = self._score_full(sub)
            for i, s in zip(batch, scores):
                out[i] = s
            if progress:
                progress(len(batch))
        return out  # type: ignore[return-value]

    # ---------------------------------------------------------------- forward passes
    @staticmethod
    def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)

    def _score_full(self, encs: list[_Encoded]) -> list[list[float]]:
        rows = [(s, st) for e in encs for s, st in zip(e.seqs, e.starts)]
        width = max(len(s) for s, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (s, _) in enumerate(rows):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1]:-1]
        lps = self._token_logprobs(logits, ids[:, 1:]).cpu()
        flat = [float(lps[r, st - 1: len(s) - 1].sum()) for r, (s, st) in enumerate(rows)]
        return self._regroup(encs, flat)

    def _score_shared(self, encs: list[_Encoded]) -> list[list[float]]:
        plen = [e.prefix for e in encs]
        width = max(plen)
        ids = torch.full((len(encs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encs):  # left padding: every prefix ends at the last column
            ids[i, width - plen[i]:] = torch.tensor(e.seqs[0][: plen[i]])
            mask[i, width - plen[i]:] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
        try:  # only the last position's logits are needed: skip the lm_head elsewhere
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        except TypeError:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        last = out.logits[:, -1].float().log_softmax(-1).cpu()
        rows = [(i, s, st) for i, e in enumerate(encs) for s, st in zip(e.seqs, e.starts)]
        first = [float(last[i, s[plen[i]]]) for i, s, _ in rows]
        tails: list[torch.Tensor | None] = [None] * len(rows)
        suffix_width = max(len(s) - 1 - plen[i] for i, s, _ in rows)
        if suffix_width > 0:
            cache = out.past_key_values
            index = torch.tensor([i for i, _, _ in rows], device=self.device)
            cache.batch_select_indices(index)
            sids = torch.full((len(rows), suffix_width), self.pad_id, dtype=torch.long)
            smask = torch.zeros_like(sids)
            for r, (i, s, _) in enumerate(rows):
                part = s[plen[i]: len(s) - 1]
                if part:
                    sids[r, : len(part)] = torch.tensor(part)
                    smask[r, : len(part)] = 1
            spos = torch.tensor(plen)[index.cpu()].unsqueeze(1) + torch.arange(suffix_width).unsqueeze(0)
            sids, smask, spos = sids.to(self.device), smask.to(self.device), spos.to(self.device)
            attn = torch.cat([mask[index], smask], dim=1)
            logits = self.model(input_ids=sids, attention_mask=attn, position_ids=spos,
                                past_key_values=cache, use_cache=True).logits
            targets = torch.full_like(sids, 0)
            for r, (i, s, _) in enumerate(rows):
                nxt = s[plen[i] + 1:]
                if nxt:
                    targets[r, : len(nxt)] = torch.tensor(nxt)
            lps = self._token_logprobs(logits, targets).cpu()
            tails = [lps[r] for r in range(len(rows))]
        flat = []
        for r, (i, s, st) in enumerate(rows):
            # token at position plen+k (k >= 0) is scored when plen+k >= st
            total = first[r] if plen[i] >= st else 0.0
            k0 = max(st - plen[i], 1)
            n_tail = len(s) - plen[i] - 1
            if n_tail >= k0 and tails[r] is not None:
                total += float(tails[r][k0 - 1: n_tail].sum())
            flat.append(total)
        return self._regroup(encs, flat)

    @staticmethod
    def _regroup(encs: list[_Encoded], flat: list[float]) -> list[list[float]]:
        out, k = [], 0
        for e in encs:
            out.append(flat[k: k + len(e.seqs)])
            k += len(e.seqs)
        return out


def _prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))
