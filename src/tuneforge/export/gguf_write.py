"""A merged Hugging Face model folder → one GGUF file (llama.cpp's format), with the `gguf` package's writer.

Supported architectures, as llama.cpp's converter writes them (and as transformers reads them back, which is how the
export is verified):

| Hugging Face | GGUF arch | notes |
|---|---|---|
| LlamaForCausalLM (Llama 2/3, SmolLM2, TinyStories) | llama | q/k rows permuted as llama.cpp's rotary kernel expects |
| MistralForCausalLM | llama | as llama.cpp writes Mistral; only without a sliding window (v0.2 on) |
| Qwen2ForCausalLM | qwen2 | q/k/v biases; no permutation |

Refused with a clear message: other architectures, scaled rotary embeddings (llama3/yarn/… rope types would need
llama.cpp's `rope_freqs` tensor, which transformers cannot read back to check), biases in a Llama, sliding windows.

Quantization types (`QUANTS`): norms and biases always stay float32 (as llama.cpp does); f32/f16/bf16 store every
matrix in that type; q8_0 quantizes every matrix; q4_0 and q4_1 quantize every matrix except the token embedding and
the output matrix, which get q8_0: llama.cpp keeps those at a higher precision too (q6_K, which the `gguf` package
cannot write). A matrix whose rows are not a multiple of the 32-value block cannot be block-quantized and is stored
as f16; the write summary lists each such matrix, nothing falls back silently. K-quants (q4_k_m, …) are refused: the
`gguf` package has no quantizer for them, so llama.cpp's `llama-quantize` makes them from our f16 file.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuneforge.utils.errors import ModelError


@dataclass(frozen=True)
class Quant:
    """One `--quant` choice: the llama.cpp file type, the type of matrices, the type of embedding/output."""

    name: str
    file_type: str  # gguf.LlamaFileType member name
    matrix: str  # gguf.GGMLQuantizationType member name
    embedding: str


QUANTS: dict[str, Quant] = {q.name: q for q in (
    Quant("f32", "ALL_F32", "F32", "F32"),
    Quant("f16", "MOSTLY_F16", "F16", "F16"),
    Quant("bf16", "MOSTLY_BF16", "BF16", "BF16"),
    Quant("q8_0", "MOSTLY_Q8_0", "Q8_0", "Q8_0"),
    Quant("q4_0", "MOSTLY_Q4_0", "Q4_0", "Q8_0"),
    Quant("q4_1", "MOSTLY_Q4_1", "Q4_1", "Q8_0"),
)}
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")


@dataclass(frozen=True)
class Arch:
    gguf_arch: str  # gguf.MODEL_ARCH member name
    permute_qk: bool


ARCHS = {
    "LlamaForCausalLM": Arch("LLAMA", True),
    "MistralForCausalLM": Arch("LLAMA", True),
    "Qwen2ForCausalLM": Arch("QWEN2", False),
}
_EMBEDDING_NAMES = ("token_embd", "output")


@dataclass
class WriteSummary:
    """What was written: tensor count per GGUF type, and matrices stored as f16 because they could not be blocked."""

    path: str
    quant: str
    arch: str
    types: dict[str, int]
    unblocked: list[str] = field(default_factory=list)
    bytes: int = 0


def resolve_quant(name: str) -> Quant:
    """The `Quant` for `--quant NAME`, or a ModelError saying which exist and how to get a K-quant."""
    key = name.lower()
    if key in QUANTS:
        return QUANTS[key]
    if key in K_QUANTS:
        raise ModelError(f"--quant {name}: {_k_quant_reason()}",
                         hint=f"export --quant f16, then run llama.cpp's quantizer: "
                              f"`llama-quantize MODEL-f16.gguf MODEL-{key}.gguf {key.upper()}`")
    raise ModelError(f"unknown --quant {name}", hint=f"choose one of {', '.join(QUANTS)} (K-quants such as q4_k_m: "
                                                       "llama.cpp's llama-quantize, from the f16 file)")


def _k_quant_reason() -> str:
    """Why a K-quant is refused, from a probe of the installed `gguf` package (never a silent fallback)."""
    import gguf
    from gguf.quants import quantize

    try:
        quantize(np.zeros((1, 256), dtype=np.float32), gguf.GGMLQuantizationType.Q4_K)
    except NotImplementedError:
        return (f"the installed gguf package ({_gguf_version()}) cannot quantize K-quants (it has no Q4_K/Q6_K "
                f"quantizer), so tuneforge writes only {', '.join(QUANTS)}")
    return (f"the installed gguf package ({_gguf_version()}) can quantize Q4_K, but tuneforge does not implement "
            "llama.cpp's per-tensor K-quant mix (q6_K for some matrices), so it will not call its result q4_k_m")


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def check_architecture(config) -> Arch:
    """The `Arch` of a model config, or a ModelError for what a GGUF of it could not faithfully hold."""
    names = list(getattr(config, "architectures", None) or [])
    arch = next((ARCHS[n] for n in names if n in ARCHS), None)
    if arch is None:
        raise ModelError(f"GGUF export supports {', '.join(ARCHS)}; this model is {names or config.model_type}",
                         hint="convert other architectures with llama.cpp's convert_hf_to_gguf.py from the merged "
                              "folder (tuneforge export --format hf)")
    rope = _rope(config)
    if rope.get("rope_type", "default") != "default":
        raise ModelError(f"the model uses scaled rotary embeddings (rope_type {rope.get('rope_type')!r}); GGUF export "
                         "writes plain RoPE only", hint="convert it with llama.cpp's convert_hf_to_gguf.py")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ModelError("the model has attention/MLP biases, which llama.cpp's llama architecture does not read",
                         hint="convert it with llama.cpp's convert_hf_to_gguf.py")
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", window is not None)
    if uses_window and window is not None and window < config.max_position_embeddings:
        raise ModelError(f"the model attends through a sliding window of {window} tokens, which this GGUF export "
                         "does not write", hint="convert it with llama.cpp's convert_hf_to_gguf.py")
    return arch


def _rope(config) -> dict:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return {**params, "rope_theta": float(theta)}


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def write_hparams(writer, config, quant: Quant, name: str) -> None:
    """The `general.*` and `<arch>.*` keys llama.cpp needs to build the model."""
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    hd = head_dim(config)
    writer.add_rope_dimension_count(hd)
    if hd != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(hd)
        writer.add_value_length(hd)
    writer.add_rope_freq_base(_rope(config)["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType[quant.file_type])
    if quant.matrix not in ("F32", "F16", "BF16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from Hugging Face's rotary layout (halves) to llama.cpp's (interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder} holds no .safetensors weights")
    return files


def tensor_names(folder: Path) -> list[tuple[Path, str]]:
    """(file, tensor name) for every weight of a model folder, in file order."""
    from safetensors import safe_open

    out = []
    for f in _safetensors_files(folder):
        with safe_open(f, framework="pt") as st:
            out += [(f, k) for k in st.keys()]
    return out


class TensorConverter:
    """Maps Hugging Face weight names to GGUF names and turns each weight into GGUF data of the chosen type."""

    def __init__(self, config, arch: Arch, quant: Quant, names: set[str]):
        import gguf

        self.config, self.arch, self.quant, self.names = config, arch, quant, names
        self.name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch], config.num_hidden_layers)
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        self.unblocked: list[str] = []

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF name, None for a weight that must not be written (lm_head of a tied model). A tied model's one
        matrix is the token embedding, whichever of the two names the checkpoint stored it under."""
        base, _, suffix = hf_name.rpartition(".")
        if self.tied and base == "lm_head":
            return None if "model.embed_tokens.weight" in self.names else "token_embd.weight"
        mapped = self.name_map.get_name(base)
        if mapped is None:
            raise ModelError(f"weight {hf_name} has no GGUF name for this architecture; refusing to drop it",
                             hint="convert this model with llama.cpp's convert_hf_to_gguf.py")
        return f"{mapped}.{suffix}"

    def convert(self, gguf_name: str, tensor) -> tuple[np.ndarray, object]:
        """(data, GGMLQuantizationType) for one weight (a torch tensor)."""
        import gguf
        from gguf.quants import quantize

        w = tensor.float().numpy()
        if not np.isfinite(w).all():
            raise ModelError(f"weight {gguf_name} holds inf/NaN values; the merged model is broken")
        qtype = gguf.GGMLQuantizationType[self.type_name(gguf_name, w.shape)]
        data = quantize(self._permuted(gguf_name, w), qtype)
        if qtype == gguf.GGMLQuantizationType.F16 and not np.isfinite(data).all():
            raise ModelError(f"weight {gguf_name} exceeds the float16 range (|w| > 65504)",
                             hint="export --quant bf16 or f32 instead")
        return data, qtype

    def _permuted(self, gguf_name: str, w: np.ndarray) -> np.ndarray:
        if not self.arch.permute_qk:
            return w
        heads = self.config.num_attention_heads
        if ".attn_q." in gguf_name:
            return permute_rows(w, heads)
        if ".attn_k." in gguf_name:
            return permute_rows(w, getattr(self.config, "num_key_value_heads", None) or heads)
        return w

    def type_name(self, gguf_name: str, shape: tuple[int, ...]) -> str:
        """The GGUF type a weight of this name and shape is stored in (see the module docstring)."""
        import gguf

        if len(shape) < 2:
            return "F32"
        wanted = self.quant.embedding if gguf_name.split(".")[0] in _EMBEDDING_NAMES else self.quant.matrix
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[wanted]][0]
        if shape[-1] % block:
            self.unblocked.append(f"{gguf_name} {tuple(shape)}")
            return "F16"
        return wanted


def write_gguf(folder: Path, path: Path, quant: Quant, *, name: str, vocab, progress: bool = True) -> WriteSummary:
    """Write the model in `folder` (safetensors + config.json) to `path` as GGUF `quant`, with tokenizer `vocab`
    (a `gguf_vocab.GgufVocab`). Weights are read one at a time and spooled to a temporary file, so memory holds
    about one tensor, not the model."""
    import gguf
    from safetensors import safe_open
    from transformers import AutoConfig

    from tuneforge.export.gguf_vocab import write_vocab
    from tuneforge.utils.progress import progress_bar

    config = AutoConfig.from_pretrained(folder)
    arch = check_architecture(config)
    names = tensor_names(folder)
    conv = TensorConverter(config, arch, quant, {n for _, n in names})
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.gguf_arch]], use_temp_file=True)
    write_hparams(writer, config, quant, name)
    write_vocab(writer, vocab)
    types: Counter = Counter()
    with progress_bar(len(names), f"GGUF {quant.name}", enabled=progress) as advance:
        for file, hf_name in names:
            target = conv.gguf_name(hf_name)
            if target is not None:
                with safe_open(file, framework="pt") as st:
                    data, qtype = conv.convert(target, st.get_tensor(hf_name))
                writer.add_tensor(target, data, raw_dtype=qtype)
                types[qtype.name] += 1
            advance()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return WriteSummary(str(path), quant.name, arch.gguf_arch.lower(), dict(types), conv.unblocked,
                        path.stat().st_size)
