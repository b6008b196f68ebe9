"""Character spans of a rendered conversation → token ranges, exact even where the offset mapping is wrong.

A fast tokenizer's offset mapping is trustworthy only while its ids spell the text. A BPE vocabulary with
`byte_fallback` but neither byte tokens (<0x7B>) nor an unk token (the TinyStories tokenizer) drops characters it
cannot spell ('{', a tab, 'ï'), and every offset after such a character is shifted by its byte length, so labels taken
from offsets land on the wrong tokens. `offsets_are_exact` is the cheap per-row check (one decode); where it fails,
`token_ranges` finds each boundary by tokenizing the text before it, which costs one tokenization per boundary
(all in one batched call).
"""

from __future__ import annotations

import json
import weakref


def offsets_are_exact(tok, text: str, ids: list[int]) -> bool:
    """Whether `ids` (the tokens of `text`) decode back to exactly `text`: nothing was dropped or replaced, so
    offsets can be trusted.

    A tokenizer that spells the text but decodes it differently (a normalizer, spaces added around special tokens)
    fails too; it then takes the exact path, which is slower but right. A lossless byte-level tokenizer (see
    `is_lossless`) passes without decoding: a quarter of the tokenizing cost of a row. Otherwise the Rust decoder is
    called directly where there is one: it is what `tok.decode` runs, without half of the per-row cost.
    """
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return is_lossless(tok) or backend.decode(ids, skip_special_tokens=False) == text
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == text


_LOSSLESS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer → is_lossless, worked out once
_WIDE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer → every_token_has_width


def is_lossless(tok) -> bool:
    """Whether every text this tokenizer encodes decodes back to itself, known from its parts alone: byte-level BPE
    (each byte is one reversible symbol, so nothing can be dropped or replaced) with no normalizer, no space added
    before the text, and no added token that swallows the whitespace around it. Worked out once per tokenizer."""
    return _once(_LOSSLESS, tok, _lossless_parts)


def every_token_has_width(tok) -> bool:
    """Whether each token's offsets hold at least one character, for every text: a lossless tokenizer (each token
    spells bytes of the text) whose post-processor does not trim whitespace out of the offsets (ByteLevel or
    Roberta processing with trim_offsets, which can leave a token of spaces with an empty range). Worked out once
    per tokenizer."""
    return is_lossless(tok) and _once(_WIDE, tok, lambda parts: not _trims_offsets(parts.get("post_processor")))


def _once(known: "weakref.WeakKeyDictionary", tok, decide) -> bool:
    """`decide(tokenizer.json parts)`, remembered per tokenizer (False when the parts cannot be read)."""
    try:
        return known[tok]
    except (KeyError, TypeError):
        pass
    try:
        answer = bool(decide(json.loads(tok.backend_tokenizer.to_str())))
    except (AttributeError, ValueError):
        return False
    try:
        known[tok] = answer
    except TypeError:  # an object that takes no weak reference: worked out again next time
        pass
    return answer


def _lossless_parts(parts: dict) -> bool:
    pre, dec, model = parts.get("pre_tokenizer") or {}, parts.get("decoder") or {}, parts.get("model") or {}
    return (parts.get("normalizer") is None and model.get("type") == "BPE"
            and pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space")
            and dec.get("type") == "ByteLevel"
            and not any(t.get("lstrip") or t.get("rstrip") for t in parts.get("added_tokens") or []))


def _trims_offsets(processor: dict | None) -> bool:
    if not processor:
        return False
    if processor.get("type") == "Sequence":
        return any(map(_trims_offsets, processor.get("processors") or []))
    return processor.get("type") in ("ByteLevel", "RobertaProcessing") and processor.get("trim_offsets", True)


def token_ranges(tok, text: str, ids: list[int], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The [first, stop) token range of each [start, end) character span of `text`, whose tokens are `ids`.

    Same rule as the offset path: a token that BPE merged across a boundary holds span characters, so it belongs to
    the span at both ends. The text before every boundary is tokenized in one batched call.
    """
    inner = sorted({pos for span in spans for pos in span if 0 < pos < len(text)})
    heads = dict(zip(inner, tok([text[:pos] for pos in inner], add_special_tokens=False)["input_ids"])) if inner else {}
    ranges = []
    for start, end in spans:
        first, _ = _tokens_before(ids, len(text), start, heads.get(start))
        stop, straddles = _tokens_before(ids, len(text), end, heads.get(end))
        ranges.append((first, stop + straddles))
    return ranges


def _tokens_before(ids: list[int], text_len: int, pos: int, head: list[int] | None) -> tuple[int, bool]:
    """How many leading tokens of `ids` hold only text[:pos], and whether the next one also holds text before pos.

    text[:pos] alone tokenizes to `head`, ids' own leading tokens, except where a token of `ids` crosses pos: there
    the prefix's tokens part from `ids`, and the token of `ids` at that index straddles pos.
    """
    if pos <= 0:
        return 0, False
    if pos >= text_len:
        return len(ids), False
    if ids[:len(head)] == head:
        return len(head), False
    same = next((j for j, (a, b) in enumerate(zip(head, ids)) if a != b), min(len(head), len(ids)))
    return same, same < len(ids)
