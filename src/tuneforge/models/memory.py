"""Training memory estimate from a model's shape, before any weights load.

The shape (parameter count, layers, hidden size, vocabulary, heads) is read from config.json or from GGUF metadata;
`estimate_training_memory` is a pure function of that shape and the run's settings. Peak memory is the sum of:

- runtime: the Python process with torch + transformers loaded (CPU), or the CUDA context (GPU);
- weights: every parameter in the training precision (4 bytes in fp32, 2 in bf16/fp16);
- gradients: one per trainable parameter, in the same precision;
- optimizer: AdamW keeps two fp32 states per trainable parameter (8 bytes);
- activations: saved for backward in each layer that gradients flow through, per token: about ACT_HIDDEN × hidden +
  ACT_INTERMEDIATE × intermediate values, plus ATTN_SCORES × heads × seq where the attention kernel keeps
  seq × seq state for backward (CPU); gradient checkpointing keeps only each layer's input plus one layer;
- logits: batch × seq × vocab fp32 values, held LOGIT_COPIES times around the loss (logits, log-softmax, gradient) —
  often the largest term for small models with big vocabularies.

The constants were calibrated against the measured peak RSS of `tuneforge train` on CPU (fp32, packed sequences):
the 656K TinyStories model (LoRA batch 1 × 64, LoRA 16 × 512, full 32 × 256) and SmolLM2-135M (LoRA 4 × 256); the
estimate is within -7% / +19% of those four peaks (tests/unit/test_memory.py keeps them as reference points). GPU
terms use the same formulas and are not calibrated yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from tuneforge.models.source import resolve_model
from tuneforge.utils.errors import ModelError

GiB = 1024 ** 3
CPU_RUNTIME_BYTES = 540 * 2 ** 20  # python + torch + transformers + peft + trainer: peak RSS of a tiny run
CUDA_CONTEXT_BYTES = int(0.5 * GiB)
ACT_HIDDEN, ACT_INTERMEDIATE = 12, 5  # values saved per token and layer, in units of hidden / intermediate size
ATTN_SCORES = 1.6  # attention values per token, layer and head, in units of seq (CPU kernels keep some s×s state)
LOGIT_COPIES = 3
ADAMW_STATE_BYTES = 8
_PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a decoder-only transformer."""

    n_params: int
    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    n_heads: int
    n_kv_heads: int
    tied_embeddings: bool
    source: str = ""  # where the numbers were read

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.n_heads * self.n_kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer (llama naming)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden


def shape_from_config(cfg: dict, source: str = "config.json") -> ModelShape:
    """ModelShape from a Hugging Face config.json dict (llama-style keys; GPT-2 style names accepted)."""
    cfg = cfg.get("text_config", cfg) if "hidden_size" not in cfg and "n_embd" not in cfg else cfg
    try:
        h = int(cfg.get("hidden_size") or cfg.get("n_embd") or cfg["d_model"])
        layers = int(cfg.get("num_hidden_layers") or cfg["n_layer"])
        heads = int(cfg.get("num_attention_heads") or cfg["n_head"])
        vocab = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{source}: cannot read the model shape (missing {err})",
                         hint="the memory estimate needs hidden_size, num_hidden_layers, num_attention_heads, "
                              "vocab_size") from None
    shape = ModelShape(0, layers, h, int(cfg.get("intermediate_size") or 4 * h), vocab, heads,
                       int(cfg.get("num_key_value_heads") or heads), bool(cfg.get("tie_word_embeddings", True)),
                       source)
    n = vocab * h * (1 if shape.tied_embeddings else 2) + layers * shape.layer_params + h
    return replace(shape, n_params=n)


def shape_from_gguf(path: str | Path) -> ModelShape:
    """ModelShape from GGUF metadata and tensor headers (the file is memory-mapped, no tensor is read)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = field("general.architecture")
    h = int(field(f"{arch}.embedding_length"))
    heads = int(field(f"{arch}.attention.head_count"))
    names = {t.name for t in reader.tensors}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(field(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else 0))
    return ModelShape(int(sum(int(t.n_elements) for t in reader.tensors)), int(field(f"{arch}.block_count")), h,
                      int(field(f"{arch}.feed_forward_length", 4 * h)), vocab, heads,
                      int(field(f"{arch}.attention.head_count_kv", heads)), "output.weight" not in names, str(path))


def model_size(name: str) -> int | None:
    """Parameters of model `name` from its config (no weights loaded); None when it cannot be read."""
    try:
        return read_model_shape(name).n_params
    except (ModelError, OSError, ValueError, KeyError):
        return None


def read_model_shape(name: str) -> ModelShape:
    """Shape of model `name` (alias, folder, .gguf, hub id) without loading weights."""
    src = resolve_model(name)
    while src.kind == "adapter":  # an earlier LoRA run: the merged model has its base's shape
        src = src.base
    if src.kind == "gguf":
        return shape_from_gguf(src.path)
    if src.kind == "dir":
        cfg = Path(src.path) / "config.json"
        return shape_from_config(json.loads(cfg.read_text()), str(cfg))
    try:
        from transformers import AutoConfig

        return shape_from_config(AutoConfig.from_pretrained(src.path).to_dict(), f"{src.path} (hub config)")
    except OSError as err:
        raise ModelError(f"cannot read the config of {src.path}: {err}",
                         hint="pass a local folder or .gguf file, or allow network access to the hub") from None


@dataclass(frozen=True)
class TrainSetting:
    """The run settings that drive training memory."""

    method: str = "lora"  # full | freeze | lora
    batch_size: int = 8
    seq_len: int = 1024
    precision: str = "fp32"  # fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    device: str = "cpu"
    lora_r: int = 8
    lora_targets: str | tuple[str, ...] = "all-linear"
    trainable_layers: int = 2
    train_embeddings: bool = False
    trainable: int | None = None  # the method's own count (tuneforge.methods), replacing the count by `method`
    frozen_base: bool | None = None  # base weights never train (default: method == "lora")
    base_bytes_per_weight: float | None = None  # a quantized base (QLoRA); None: the precision's size

    @property
    def base_frozen(self) -> bool:
        return self.frozen_base if self.frozen_base is not None else self.method == "lora"


@dataclass(frozen=True)
class MemoryEstimate:
    terms: dict  # name → bytes
    trainable_params: int
    setting: TrainSetting

    @property
    def total(self) -> int:
        return sum(self.terms.values())


def trainable_params(shape: ModelShape, s: TrainSetting) -> int:
    if s.trainable is not None:
        return s.trainable
    if s.method == "full":
        return shape.n_params
    if s.method == "freeze":
        n = min(abs(s.trainable_layers), shape.n_layers) * shape.layer_params
        return n + (shape.vocab * shape.hidden if s.train_embeddings else 0)
    targets = shape.linear_shapes()
    if s.lora_targets not in ("all-linear", "all"):
        wanted = (s.lora_targets,) if isinstance(s.lora_targets, str) else tuple(s.lora_targets)
        targets = {k: v for k, v in targets.items() if any(w in k for w in wanted)}
    return shape.n_layers * sum(s.lora_r * (a + b) for a, b in targets.values())


def _grad_layers(shape: ModelShape, s: TrainSetting) -> int:
    """Layers whose activations are kept for backward: all of them, except for freeze (only the trained ones)."""
    if s.method == "freeze" and not s.train_embeddings:
        return min(abs(s.trainable_layers), shape.n_layers)
    return shape.n_layers


def activation_bytes(shape: ModelShape, s: TrainSetting) -> int:
    act = 4 if s.precision == "fp32" else 2
    tokens = s.batch_size * s.seq_len
    attn = ATTN_SCORES * shape.n_heads * s.seq_len if s.device == "cpu" else 0  # GPU kernels keep no s×s state
    per_layer = int(tokens * (ACT_HIDDEN * shape.hidden + ACT_INTERMEDIATE * shape.intermediate + attn) * act)
    layers = _grad_layers(shape, s)
    if s.gradient_checkpointing:  # each layer's input, plus one layer recomputed at a time
        return layers * tokens * shape.hidden * act + per_layer
    return layers * per_layer


def estimate_training_memory(shape: ModelShape, s: TrainSetting) -> MemoryEstimate:
    """Peak bytes of one training step, by term (see the module docstring)."""
    if s.precision not in _PRECISION_BYTES:
        raise ModelError(f"unknown precision '{s.precision}'", hint="use fp32, bf16 or fp16")
    wbytes = _PRECISION_BYTES[s.precision]
    trainable = trainable_params(shape, s)
    frozen = s.base_frozen
    terms = {
        "runtime": CPU_RUNTIME_BYTES if s.device == "cpu" else CUDA_CONTEXT_BYTES,
        "weights": int(shape.n_params * (s.base_bytes_per_weight or wbytes)) + (trainable * 4 if frozen else 0),
        "gradients": trainable * (4 if frozen else wbytes),
        "optimizer": trainable * ADAMW_STATE_BYTES,
        "activations": activation_bytes(shape, s),
        "logits": s.batch_size * s.seq_len * shape.vocab * 4 * LOGIT_COPIES,
    }
    return MemoryEstimate(terms, trainable, s)


def cheaper_settings(shape: ModelShape, s: TrainSetting, budget: int, grad_accum: int = 1) -> list[tuple[str, int]]:
    """Changes that lower the estimate, as (advice, estimated bytes), those within `budget` first, smallest first."""
    options = []
    if not s.base_frozen:
        options.append(("method.type=lora (train adapters, not the weights)",
                        replace(s, method="lora", trainable=None, frozen_base=None)))
    if s.batch_size > 1:
        b = max(1, s.batch_size // 4)
        options.append((f"train.batch_size={b} train.grad_accum={grad_accum * s.batch_size // b} (same effective "
                        "batch)", replace(s, batch_size=b)))
    if s.seq_len > 128:
        options.append((f"data.cutoff_len={s.seq_len // 2} (longer rows are cut)", replace(s, seq_len=s.seq_len // 2)))
    if not s.gradient_checkpointing:
        options.append(("train.gradient_checkpointing=true (slower: recomputes activations)",
                        replace(s, gradient_checkpointing=True)))
    rated = [(advice, estimate_training_memory(shape, alt).total) for advice, alt in options]
    if options and all(total > budget for _, total in rated):  # no single change is enough: combine them in order
        combined, advice = s, []
        for text, alt in options:
            combined = replace(combined, **{k: v for k, v in alt.__dict__.items() if v != s.__dict__[k]})
            advice.append(text.split(" (")[0])
            total = estimate_training_memory(shape, combined).total
            if total <= budget:
                break
        rated.append((" + ".join(advice), total))
    return sorted(rated, key=lambda r: (r[1] > budget, r[1]))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
