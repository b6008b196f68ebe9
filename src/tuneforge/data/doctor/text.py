"""Text helpers for the dataset doctor: what a record's prompt and answer are, scripts, suspicious characters,
diversity measures. Pure functions over strings and Records; no I/O.

CJK characters and word tokens come from `tuneforge.utils.text`, the one definition shared with the text metrics.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter

from tuneforge.data.records import Record
from tuneforge.utils.text import CJK_RE, is_cjk, word_tokens

_SCRIPTS = (
    ("cjk", CJK_RE),
    ("latin", re.compile("[A-Za-z\u00c0-\u024f]")),
    ("cyrillic", re.compile("[\u0400-\u04ff]")),
    ("arabic", re.compile("[\u0600-\u06ff]")),
)

SUSPICIOUS = {
    "bom": ("U+FEFF byte-order mark inside the text", re.compile("\ufeff")),
    "replacement_char": ("U+FFFD replacement character (text was decoded wrongly once)", re.compile("\ufffd")),
    "mojibake": ("mojibake: UTF-8 read as Latin-1/cp1252 or GBK (e.g. 'Ã©', 'â€™', '锟斤拷')",
                 re.compile("Ã[\u0080-\u00bf]|Â[\u00a0-\u00bf]|â€.|ï»¿|锟斤拷|烫烫烫|屯屯屯")),
    "html": ("HTML tags or entities left in the text",
             re.compile(r"</?(?:p|br|div|span|a|img|li|ul|ol|table|tr|td|th|b|i|u|strong|em|h[1-6]|script|style|font)"
                        r"\b[^<>]{0,200}>|&(?:nbsp|amp|lt|gt|quot|apos|#\d{2,6}|#x[0-9a-fA-F]{2,5});", re.I)),
    "control_chars": ("control characters (other than tab / newline)", re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")),
    "invisible": ("zero-width or soft-hyphen characters", re.compile("[\u200b-\u200d\u2060\u00ad]")),
}


def prompt_messages(r: Record) -> list[dict]:
    """The conversation before the answer: everything up to the last assistant turn (all of it for preference data)."""
    if r.chosen is not None or not r.messages:
        return list(r.messages)
    last = max((i for i, m in enumerate(r.messages) if m["role"] == "assistant"), default=len(r.messages))
    return r.messages[:last]


def answer_messages(r: Record) -> list[dict]:
    if r.chosen is not None:
        return list(r.chosen)
    msgs = r.messages
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    return [] if last is None else msgs[last:]


def prompt_text(r: Record) -> str:
    if r.text is not None and not r.messages:
        return r.text
    return "\n".join(m["content"] for m in prompt_messages(r))


def answer_text(r: Record) -> str:
    return "\n".join(m["content"] for m in answer_messages(r))


def instruction_text(r: Record) -> str:
    """The first user turn (or the plain text): what 'instructions' diversity is measured on."""
    if r.text is not None and not r.messages:
        return r.text
    return next((m["content"] for m in r.messages if m["role"] == "user"), "")


def all_strings(obj, path: str = ""):
    """(field path, string) for every string inside a raw row (nested dicts / lists included)."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from all_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from all_strings(v, f"{path}[{i}]")


def normalize(text: str) -> str:
    """For duplicate checks: NFKC, lower case, no BOM / zero-width characters, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("\ufeff", "")
    text = re.sub("[\u200b-\u200d\u2060]", "", text).lower()
    return " ".join(text.split())


def content_key(r: Record) -> str:
    """The whole record (all turns, preference answers, tools, label) with every string normalized."""
    def norm(o):
        if isinstance(o, str):
            return normalize(o)
        if isinstance(o, dict):
            return {k: norm(v) for k, v in o.items()}
        if isinstance(o, list):
            return [norm(v) for v in o]
        return o

    return json.dumps(norm(r.normalized()), sort_keys=True, ensure_ascii=False)


def script_of(text: str) -> str:
    """Dominant writing system: cjk, latin, cyrillic, arabic, other, mixed (none ≥ 70% of letters) or none.

    This is script detection, not language identification: Chinese and Japanese kanji are both 'cjk', English and
    French both 'latin'.
    """
    counts = {name: len(rx.findall(text)) for name, rx in _SCRIPTS}
    letters = sum(1 for c in text if c.isalpha())
    if not letters:
        return "none"
    counts["other"] = max(0, letters - sum(counts.values()))
    name, n = max(counts.items(), key=lambda kv: kv[1])
    return name if n / letters >= 0.7 else "mixed"


def tokens(text: str) -> list[str]:
    """Words for space-separated scripts, single characters for CJK; lower-cased; punctuation dropped."""
    return word_tokens(text, punctuation=False, lower=True)


def distinct_n(texts: list[str], n: int) -> float | None:
    """Unique n-grams / all n-grams over the corpus (1.0 = no n-gram repeats). None for an empty corpus."""
    seen: set[tuple] = set()
    total = 0
    for t in texts:
        toks = tokens(t)
        grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else None


def leading(texts: list[str], n_tokens: int, top: int = 15) -> list[tuple[str, int]]:
    """Most frequent openings of the texts (first `n_tokens` tokens; CJK characters joined without spaces)."""
    c = Counter()
    for t in texts:
        toks = tokens(t)[:n_tokens]
        if toks:
            c[_join(toks)] += 1
    return c.most_common(top)


def _join(toks: list[str]) -> str:
    out = ""
    for tok in toks:
        sep = "" if not out or (is_cjk(tok[0]) and is_cjk(out[-1])) else " "
        out += sep + tok
    return out


def template_key(text: str, n_tokens: int = 6) -> str:
    """A text's template: its first tokens with numbers masked ('Write a 0 word story about')."""
    toks = ["0" if t.isdigit() else t for t in tokens(text)[:n_tokens]]
    return _join(toks)


def boilerplate_lines(texts: list[str], min_share: float = 0.2, min_count: int = 5) -> set[str]:
    """Lines shared by many prompts (a fixed instruction, a system prompt): left out when comparing prompts."""
    c = Counter()
    for t in texts:
        c.update({line.strip() for line in t.splitlines() if line.strip()})
    need = max(min_count, min_share * len(texts))
    return {line for line, n in c.items() if n >= need}


def variable_part(text: str, boilerplate: set[str]) -> str:
    """The text without boilerplate lines (the whole text when nothing else is left)."""
    if not boilerplate:
        return text
    kept = [line for line in text.splitlines() if line.strip() and line.strip() not in boilerplate]
    return "\n".join(kept) if kept else text


def find_suspicious(text: str) -> dict[str, int]:
    """Kind -> position of the first match, for every suspicious pattern found in `text`."""
    out = {}
    for name, (_desc, rx) in SUSPICIOUS.items():
        m = rx.search(text)
        if m:
            out[name] = m.start()
    return out


def context(text: str, pos: int, width: int = 120) -> str:
    """A snippet of `text` around `pos`, with invisible characters made visible."""
    start = max(0, pos - width // 3)
    piece = text[start:start + width]
    piece = "".join(f"<U+{ord(c):04X}>" if c in "\ufeff\ufffd\u200b\u200c\u200d\u2060\u00ad" or
                    (ord(c) < 32 and c not in "\n\t") else c for c in piece)
    return ("…" if start else "") + " ".join(piece.split()) + ("…" if start + width < len(text) else "")


def snippet(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
