"""Parity checks for exported models: same logits, same rendered ids, same stop tokens as what was trained.

Tolerances on the largest absolute logit difference (over every position and vocabulary entry of the samples):

| comparison | tolerance | why |
|---|---|---|
| merged in memory (fp32) vs base + adapter (fp32) | 1e-3 | merging is exact up to fp32 rounding (typ. < 1e-5) |
| exported folder reloaded vs the merged model in the export dtype | fp32 1e-3, bf16 / fp16 1e-2 | same weights, same computation: only kernels may differ (typ. 0) |

For a fp32 export the reported `max_abs_diff` (reloaded export vs base + adapter) is therefore held to 1e-3. For bf16 /
fp16 exports `max_abs_diff` also includes the rounding of every weight to 16 bits; it is reported, not checked, since
running base + adapter in that dtype has a rounding error of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tuneforge.data.templates import template_stop_token_ids
from tuneforge.utils.errors import ModelError

MERGE_TOLERANCE = 1e-3
EXPORT_TOLERANCES = {torch.float32: 1e-3, torch.bfloat16: 1e-2, torch.float16: 1e-2}

SAMPLE_CONVERSATIONS: list[list[dict]] = [
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Name three primary colors."},
     {"role": "assistant", "content": "Red, yellow and blue."}],
    [{"role": "user", "content": "Translate 'good morning' into French."},
     {"role": "assistant", "content": "Bonjour."},
     {"role": "user", "content": "And into Spanish?"},
     {"role": "assistant", "content": "Buenos días."}],
    [{"role": "user", "content": "What is 12 times 7?"},
     {"role": "assistant", "content": "12 × 7 = 84."}],
    [{"role": "system", "content": "Answer with one word."},
     {"role": "user", "content": "Is the sky blue on a clear day?"},
     {"role": "assistant", "content": "Yes."}],
    [{"role": "user", "content": "Write a haiku about rain."},
     {"role": "assistant", "content": "Soft rain on the roof,\nthe garden drinks it slowly,\nmorning smells of earth."}],
    [{"role": "user", "content": "Once upon a time, a little dog found a ball."},
     {"role": "assistant", "content": "He ran to his friend and they played all day in the sun."}],
]


class ParityError(ModelError):
    """An exported model does not reproduce the model it was exported from."""


def tolerance_for(dtype: torch.dtype) -> float:
    return EXPORT_TOLERANCES.get(dtype, 1e-2)


def parity_inputs(tokenizer, n: int) -> list[list[int]]:
    """Token ids of `n` fixed sample conversations rendered with the tokenizer's chat template (whole turns).

    Without a chat template the message texts are joined as plain text, tokenized the usual way (bos included).
    """
    if n < 1:
        raise ModelError(f"check_samples must be at least 1, got {n}", hint="the parity check needs samples")
    convs = [SAMPLE_CONVERSATIONS[i % len(SAMPLE_CONVERSATIONS)] for i in range(n)]
    if getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
        return [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return [list(tokenizer("\n".join(m["content"] for m in c))["input_ids"]) for c in convs]


def sample_logits(model, inputs: list[list[int]]) -> list[torch.Tensor]:
    """Logits of each sample, run one at a time (no padding), returned as float32 on CPU."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for ids in inputs:
            x = torch.tensor([ids], device=device)
            out.append(model(input_ids=x).logits[0].float().cpu())
    return out


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest |a - b| over all samples; inf when shapes differ or any value is not finite."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            return float("inf")
        d = (x - y).abs().max().item()
        worst = max(worst, d if d == d else float("inf"))  # NaN counts as a failure
    return worst


def template_problems(reference_tok, exported_tok, inputs: list[list[int]], generation_eos=None) -> list[str]:
    """Differences in rendering and stopping between the tokenizer used so far and the exported one (empty: same)."""
    problems = []
    if (reference_tok.chat_template or "") != (exported_tok.chat_template or ""):
        problems.append("the exported chat template differs from the one used in training")
    if parity_inputs(exported_tok, len(inputs)) != inputs:
        problems.append("the exported tokenizer renders the sample conversations to different token ids")
    if reference_tok.eos_token_id != exported_tok.eos_token_id:
        problems.append(f"eos id differs: {reference_tok.eos_token_id} vs {exported_tok.eos_token_id}")
    if getattr(reference_tok, "chat_template", None) and generation_eos is not None:
        eos = set(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        missing = set(template_stop_token_ids(reference_tok)) - eos
        if missing:
            problems.append(f"generation_config.json eos_token_id lacks the end-of-turn id(s) {sorted(missing)}")
    return problems


@dataclass
class ParityReport:
    """Outcome of comparing an export with its source. `passed` is what decides; the diffs are for people."""

    merge_diff: float  # merged in memory (fp32) vs base + adapter (fp32)
    export_diff: float  # reloaded export vs merged model in the export dtype
    max_abs_diff: float  # reloaded export vs base + adapter (fp32): what a user of the export gets
    dtype: str
    tolerance: float  # for export_diff (and merge_diff uses MERGE_TOLERANCE)
    samples: int
    tokens: int
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.merge_diff <= MERGE_TOLERANCE and self.export_diff <= self.tolerance
                and not self.problems)

    def failures(self) -> list[str]:
        out = list(self.problems)
        if self.merge_diff > MERGE_TOLERANCE:
            out.append(f"merged weights differ from base + adapter: max |Δlogit| {self.merge_diff:.3g} > "
                       f"{MERGE_TOLERANCE:g}")
        if self.export_diff > self.tolerance:
            out.append(f"reloaded export differs from the merged model: max |Δlogit| {self.export_diff:.3g} > "
                       f"{self.tolerance:g} ({self.dtype})")
        return out

    def raise_if_failed(self, where: str) -> None:
        if not self.passed:
            raise ParityError(f"parity check FAILED for {where}: " + "; ".join(self.failures()),
                              hint="do not use this export; check that --model is the base the adapter was "
                                   "trained on, and report a bug if it is")

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["passed"] = self.passed
        return d
