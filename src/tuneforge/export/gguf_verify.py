"""Proof that a written GGUF is the merged model: read it back through transformers (`gguf_file=`) and compare.

Three comparisons, on sample conversations rendered with the chat template (`export.parity.parity_inputs`):

1. **Encoding** — the GGUF read back vs the merged model with every weight rounded through the same quantizer in
   memory (numpy, `gguf.quants`): the same numbers must come out, max |Δlogit| ≤ 1e-3 for every quant type (0 in
   practice). This catches any wrong tensor name, rotary permutation, shape or hyper-parameter, independent of how
   lossy the quantization is.
2. **Quantization error** — the GGUF read back vs the merged model: max |Δlogit| and top-1 agreement (share of
   positions whose most likely next token is the same) must stay within `BOUNDS[quant]`, measured on TinyStories-656K
   and SmolLM2-135M (docs/export_gguf.md); f32 and f16 must also produce the same greedy continuation.
3. **Tokenizer** — the tokenizer transformers builds from the GGUF must render the samples and probe texts to the
   same ids, carry the same chat template, and have the same eos.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tuneforge.export.parity import SAMPLE_CONVERSATIONS, max_abs_diff, parity_inputs, sample_logits
from tuneforge.utils.console import console

ENCODING_TOLERANCE = 1e-3
GREEDY_TOKENS = 12
PROBE_TEXTS = ["Hello  world,\n\n  twelve 12 and 2024; 3.14159!", "naïve café — 東京 😀",
               " leading and trailing "]


@dataclass(frozen=True)
class Bound:
    """Largest max |Δlogit| vs the merged model, smallest top-1 agreement, whether greedy text must be equal."""

    max_abs_diff: float
    min_top1: float
    same_greedy: bool


# Bounds with a margin over the worst case measured on TinyStories-656K and SmolLM2-135M-Instruct, each as is and
# merged with a LoRA adapter (docs/export_gguf.md has the numbers). 4-bit bounds are a sanity floor only: 4-bit
# weights move a 135M model's logits a lot (SmolLM2 + LoRA q4_1: max |Δlogit| 29, top-1 0.57), and a conversion bug
# can keep top-1 high on a tiny model, so the encoding check is what catches conversion bugs at every type.
BOUNDS: dict[str, Bound] = {
    "f32": Bound(1e-3, 1.0, True),
    "f16": Bound(0.25, 0.98, True),
    "bf16": Bound(1.5, 0.95, False),
    "q8_0": Bound(5.0, 0.9, False),
    "q4_1": Bound(60.0, 0.35, False),
    "q4_0": Bound(60.0, 0.35, False),
}


@dataclass
class GgufCheck:
    """Outcome of verifying a GGUF; `passed` decides, the numbers are for people (and docs/export_gguf.md)."""

    quant: str
    samples: int
    tokens: int
    encoding_diff: float  # GGUF read back vs merged model quantized in memory the same way
    max_abs_diff: float  # GGUF read back vs merged model
    top1: float  # share of positions with the same most likely next token
    greedy_same: bool
    greedy_reference: list[str]
    greedy_gguf: list[str]
    bound: Bound
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures()

    def failures(self) -> list[str]:
        out = list(self.problems)
        if not self.encoding_diff <= ENCODING_TOLERANCE:
            out.append(f"the GGUF read back differs from the same weights quantized in memory: max |Δlogit| "
                       f"{self.encoding_diff:.3g} > {ENCODING_TOLERANCE:g} (a conversion bug, not quantization)")
        if not self.max_abs_diff <= self.bound.max_abs_diff:
            out.append(f"max |Δlogit| vs the merged model {self.max_abs_diff:.3g} > {self.bound.max_abs_diff:g} "
                       f"({self.quant})")
        if not self.top1 >= self.bound.min_top1:
            out.append(f"top-1 agreement with the merged model {self.top1:.3f} < {self.bound.min_top1:g} "
                       f"({self.quant})")
        if self.bound.same_greedy and not self.greedy_same:
            out.append(f"greedy text differs from the merged model's ({self.quant} must match): "
                       f"{self.greedy_gguf!r} vs {self.greedy_reference!r}")
        return out

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "bound"}
        d.update(bound=self.bound.__dict__, passed=self.passed, failures=self.failures())
        return d


def top1_agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    same = sum((x.argmax(-1) == y.argmax(-1)).sum().item() for x, y in zip(a, b, strict=True))
    return same / max(1, sum(len(x) for x in a))


def greedy_prompts(tok) -> list[list[int]]:
    """Two sample conversations without their last answer, as generation prompts (plain text without a template)."""
    convs = [c[:-1] for c in SAMPLE_CONVERSATIONS[:2]]
    if getattr(tok, "chat_template", None):
        return [list(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)
                     ["input_ids"]) for c in convs]
    return [list(tok("\n".join(m["content"] for m in c))["input_ids"]) for c in convs]


def greedy_ids(model, prompt: list[int], n: int = GREEDY_TOKENS) -> list[int]:
    """`n` argmax tokens after `prompt`, no stopping and no generation config: the same rule for both models."""
    device = next(model.parameters()).device
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def quantize_in_memory(model, converter) -> None:
    """Round every weight of `model` through the GGUF type the writer gives it (`gguf_write.TensorConverter`)."""
    import gguf
    from gguf.quants import dequantize, quantize

    with torch.no_grad():
        for name, p in model.named_parameters():
            target = converter.gguf_name(name)
            if target is None:
                continue
            qtype = gguf.GGMLQuantizationType[converter.type_name(target, tuple(p.shape))]
            w = p.detach().float().cpu().numpy()
            p.copy_(torch.from_numpy(dequantize(quantize(w, qtype), qtype).reshape(w.shape)).to(p.dtype))


def _tokenizer_problems(ref_tok, gguf_tok, inputs: list[list[int]]) -> list[str]:
    from tuneforge.export.parity import template_problems

    problems = template_problems(ref_tok, gguf_tok, inputs)
    for text in PROBE_TEXTS:
        if ref_tok(text)["input_ids"] != gguf_tok(text)["input_ids"]:
            problems.append(f"the GGUF tokenizer encodes {text!r} differently")
    return problems


def verify_gguf(path: Path, merged: Path, quant, *, check_samples: int = 4, device: str = "cpu") -> GgufCheck:
    """Compare the GGUF at `path` with the merged model folder `merged` it was written from (`quant`: a
    `gguf_write.Quant`). Loads one model at a time."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export.gguf_write import TensorConverter, check_architecture, tensor_names
    from tuneforge.models.load import pick_device

    dev = pick_device(device)
    ref_tok = AutoTokenizer.from_pretrained(merged)
    inputs, prompts = parity_inputs(ref_tok, check_samples), greedy_prompts(ref_tok)
    console.print(f"[dim]verifying {path.name}: reference logits from {merged.name} …[/dim]")
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).to(dev).eval()
    reference, greedy_ref = sample_logits(model, inputs), [greedy_ids(model, p) for p in prompts]
    config = AutoConfig.from_pretrained(merged)
    names = {n for _, n in tensor_names(merged)}
    quantize_in_memory(model, TensorConverter(config, check_architecture(config), quant, names))
    simulated = sample_logits(model, inputs)
    del model
    gc.collect()
    console.print(f"[dim]reading {path.name} back through transformers …[/dim]")
    gguf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                      dtype=torch.float32).to(dev).eval()
    logits, greedy_gguf = sample_logits(gguf_model, inputs), [greedy_ids(gguf_model, p) for p in prompts]
    del gguf_model
    gguf_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return GgufCheck(
        quant=quant.name, samples=len(inputs), tokens=sum(len(i) for i in inputs),
        encoding_diff=max_abs_diff(logits, simulated), max_abs_diff=max_abs_diff(logits, reference),
        top1=top1_agreement(logits, reference), greedy_same=greedy_gguf == greedy_ref,
        greedy_reference=[ref_tok.decode(g) for g in greedy_ref], greedy_gguf=[ref_tok.decode(g) for g in greedy_gguf],
        bound=BOUNDS[quant.name], problems=_tokenizer_problems(ref_tok, gguf_tok, inputs))
