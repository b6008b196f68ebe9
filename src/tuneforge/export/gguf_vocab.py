"""A Hugging Face tokenizer as GGUF metadata (llama.cpp's `tokenizer.ggml.*` keys and `tokenizer.chat_template`).

The tokenizer written is the one tuneforge trained with: the loaded fast tokenizer's backend (`tokenizer.json` as
transformers rebuilt it), not the files a model shipped, since transformers may rebuild those (it drops SmolLM2's
digit splitter, for one) and training saw only the rebuilt one. Two kinds of BPE are supported:

| backend | GGUF `tokenizer.ggml.model` | what is written |
|---|---|---|
| byte-level BPE (GPT-2 style: SmolLM2, Llama 3, Qwen2) | `gpt2` | tokens, merges, `pre` (llama.cpp's splitter name) |
| SentencePiece-style BPE (`▁` for spaces, byte fallback: Llama 2, TinyStories) | `llama` | tokens, merges, scores |

llama.cpp's `llama` tokenizer merges by score rather than by merge list, so each token gets the score `-rank` of the
merge that first produces it: the highest-scoring adjacent pair is then the earliest merge, as in BPE. Tokens the
model has beyond the tokenizer (a padded embedding) are written as `[PAD<id>]`, type UNUSED, as llama.cpp's converter
does. Any other tokenizer (Unigram, WordPiece, an unknown splitter) is refused: a wrong tokenizer would make every
llama.cpp answer quietly worse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from tuneforge.utils.errors import ModelError

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass
class GgufVocab:
    """What `write_vocab` puts in the file; `model`/`pre` are llama.cpp's names."""

    model: str  # "gpt2" | "llama"
    pre: str  # llama.cpp pre-tokenizer name ("gpt-2", "smollm", "llama-bpe", "qwen2", …; "default" for llama)
    tokens: list[str]
    types: list[int]
    merges: list[str]
    scores: list[float] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, unk, pad, eot
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None


def vocab_from_tokenizer(tok, vocab_size: int, stop_ids: list[int]) -> GgufVocab:
    """The GGUF tokenizer of `tok` for a model with `vocab_size` embedding rows; `stop_ids`: the chat template's
    end-of-turn ids (the first one that is not eos is written as `eot`, which llama.cpp also stops on)."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ModelError(f"the tokenizer is a {model.get('type')} model; GGUF export writes BPE tokenizers only",
                         hint="convert this model with llama.cpp's convert_hf_to_gguf.py")
    kind, pre, space_prefix = _tokenizer_kind(spec)
    tokens, types = _token_table(tok, model["vocab"], spec.get("added_tokens", []), vocab_size, kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    ids = _special_ids(tok, stop_ids)
    probe = tok("a")["input_ids"]
    return GgufVocab(
        model=kind, pre=pre, tokens=tokens, types=types, merges=merges,
        scores=_merge_scores(tokens, merges) if kind == "llama" else None, special_ids=ids,
        add_bos=ids.get("bos") is not None and probe[:1] == [ids["bos"]],
        add_eos=ids.get("eos") is not None and probe[-1:] == [ids["eos"]],
        add_space_prefix=space_prefix, chat_template=getattr(tok, "chat_template", None) or None)


def _tokenizer_kind(spec: dict) -> tuple[str, str, bool | None]:
    """(ggml model, pre-tokenizer name, add_space_prefix) from the backend's normalizer and pre-tokenizer."""
    pre, norm = spec.get("pre_tokenizer") or {}, spec.get("normalizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre] if pre else []
    norms = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm] if norm else []
    types = [s.get("type") for s in steps]
    if types == ["Metaspace"] or any(n.get("type") == "Prepend" and n.get("prepend") == "▁" for n in norms):
        metaspace = steps[0] if types == ["Metaspace"] else {}
        return "llama", "default", metaspace.get("prepend_scheme", "always") != "never"
    if types == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2", "gpt-2", None
    if types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "gpt2", "smollm", None
    if types == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        name = _split_name(steps[0].get("pattern", {}).get("Regex"))
        if name:
            return "gpt2", name, None
    raise ModelError(f"the tokenizer's text splitter ({json.dumps(pre)[:200]}) is not one llama.cpp is known to "
                     "reproduce, so a GGUF would tokenize differently from training",
                     hint="convert this model with llama.cpp's convert_hf_to_gguf.py, which knows more tokenizers")


def _split_name(regex: str | None) -> str | None:
    """llama.cpp's name for a byte-level splitter regex: the one transformers maps back to the same regex."""
    if not regex:
        return None
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    preferred = ["llama-bpe", "qwen2", "tekken", "gpt-4o"]  # llama.cpp's converter's names for the common ones
    names = preferred + [n for n in GGUF_PRE_TOKENIZER_SPLITS if n not in preferred]
    return next((n for n in names if GGUF_PRE_TOKENIZER_SPLITS.get(n) == regex), None)


def _token_table(tok, vocab: dict, added: list[dict], vocab_size: int, kind: str) -> tuple[list[str], list[int]]:
    """Tokens by id and their GGUF types; ids the tokenizer lacks up to `vocab_size` become `[PAD<id>]`."""
    by_id: dict[int, str] = {i: t for t, i in vocab.items()}
    added_type = {}
    for a in added:
        by_id[a["id"]] = a["content"]
        added_type[a["id"]] = CONTROL if a.get("special") else USER_DEFINED
    size = max(vocab_size, max(by_id) + 1)
    if size > vocab_size:
        raise ModelError(f"the tokenizer has ids up to {max(by_id)} but the model only {vocab_size} embedding rows",
                         hint="resize the model's embeddings to the tokenizer (model.resize_token_embeddings)")
    tokens, types = [], []
    for i in range(size):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tokens.append(t)
        if kind == "llama" and i == tok.unk_token_id and i in added_type:  # gpt2 vocabularies: CONTROL
            types.append(UNKNOWN)
        elif i in added_type:
            types.append(added_type[i])
        elif kind == "llama" and _BYTE_TOKEN.match(t):
            types.append(BYTE)
        else:
            types.append(NORMAL)
    return tokens, types


def _merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece-style scores: -rank of the first merge producing a token; below every merge otherwise."""
    rank = {}
    for r, m in enumerate(merges):
        rank.setdefault(m.replace(" ", "", 1), r)
    floor = -float(len(merges) + 1)
    return [-float(rank[t]) if t in rank else floor for t in tokens]


def _special_ids(tok, stop_ids: list[int]) -> dict[str, int]:
    ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "unk": tok.unk_token_id, "pad": tok.pad_token_id}
    eot = next((i for i in stop_ids if i != tok.eos_token_id), None)
    if eot is not None:
        ids["eot"] = eot
    return {k: v for k, v in ids.items() if v is not None}


def write_vocab(writer, v: GgufVocab) -> None:
    """Add the tokenizer keys to a `gguf.GGUFWriter`."""
    writer.add_tokenizer_model(v.model)
    writer.add_tokenizer_pre(v.pre)
    writer.add_token_list(v.tokens)
    writer.add_token_types(v.types)
    if v.scores is not None:
        writer.add_token_scores(v.scores)
    if v.merges:
        writer.add_token_merges(v.merges)
    setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "unk": writer.add_unk_token_id,
               "pad": writer.add_pad_token_id, "eot": writer.add_eot_token_id}
    for key, value in v.special_ids.items():
        setters[key](value)
    writer.add_add_bos_token(v.add_bos)
    writer.add_add_eos_token(v.add_eos)
    if v.add_space_prefix is not None:
        writer.add_add_space_prefix(v.add_space_prefix)
    if v.chat_template:
        writer.add_chat_template(v.chat_template)
