"""Script-aware text helpers shared by the dataset doctor and the text metrics (one CJK definition)."""

from __future__ import annotations

import re

# Hiragana/Katakana, CJK Extension A, CJK Unified Ideographs, Hangul syllables, CJK Compatibility Ideographs.
CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
CJK_RE = re.compile(f"[{CJK_RANGES}]")
# Words of space-separated scripts, single CJK characters, and single punctuation marks, in order.
_TOKEN_RE = re.compile(rf"[{CJK_RANGES}]|(?:(?![{CJK_RANGES}])[^\W_])+|[^\w\s]|_")


def is_cjk(ch: str) -> bool:
    return bool(CJK_RE.match(ch))


def cjk_share(text: str) -> float:
    """Share of CJK characters among the letters of `text` (0 when it has no letters)."""
    letters = sum(1 for ch in text if ch.isalpha())
    return len(CJK_RE.findall(text)) / letters if letters else 0.0


def word_tokens(text: str, *, punctuation: bool = True, lower: bool = False) -> list[str]:
    """Words for space-separated scripts, one token per CJK character; punctuation kept unless asked not to."""
    toks = _TOKEN_RE.findall(text.lower() if lower else text)
    if not punctuation:
        toks = [t for t in toks if t[0].isalnum() or is_cjk(t[0])]
    return toks
