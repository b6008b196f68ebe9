"""Record → input_ids + labels, with the loss mask policy and prompt-first truncation.

The tokenizer's chat_template is the single source of truth: the whole conversation is rendered once with it (with
the record's tool schemas as `tools=`) and tokenized once, so ids equal
`tokenizer.apply_chat_template(messages, tools=tools, tokenize=True)` exactly; the character spans of the assistant
turns, found by rendering each turn's prefix, mark which tokens are trained. A token is trained when its characters
overlap an assistant span: a first answer token that BPE merged with the end of the prompt (" Paris" after "A:")
is trained, a token made only of prompt characters never is. The tokenizer's offset mapping places the spans only when
the ids decode back to the text; a tokenizer that drops characters shifts its offsets, and then each span boundary is
found by tokenizing the text before it (`data.token_spans`).

Mask policies: `assistant` (every assistant turn, default), `last` (only the final assistant turn), `all` (every
token including the prompt). Truncation keeps the answer and cuts the prompt from its start (oldest turns first);
only when the answer alone is longer than the cutoff is the answer's tail cut too (`on_long_answer: cut`, counted
as answer_cut) or the row dropped (`drop`). A row left with no trained token is dropped and counted, never silently.
"""

from __future__ import annotations

import json
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import eq, itemgetter

from tuneforge.data.records import Record
from tuneforge.data.templates import uses_tool_calls, uses_tools
from tuneforge.data.token_spans import every_token_has_width, offsets_are_exact, token_ranges
from tuneforge.utils.errors import DataError

IGNORE = -100
LONG_ANSWER_POLICIES = ("cut", "drop")
_START, _END = itemgetter(0), itemgetter(1)  # of a (start, end) character offset
_ROLE_FOR_TEMPLATE = {"function_call": "assistant", "observation": "tool"}


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    source: str = ""
    truncated: bool = False
    answer_start: int | None = None  # token index where the last trained answer begins
    answer_cut: bool = False  # the last answer's own tail was cut (it no longer ends with its end-of-turn)


@dataclass
class RenderStats:
    """Counts of one `render_records` call. `truncated`: rows whose prompt was shortened, answer whole;
    `answer_cut`: rows whose last answer alone exceeded the cutoff (cut, or dropped as `dropped_long_answer` under
    on_long_answer=drop); `dropped_sources`: path:line of every dropped row (first 20 in `as_dict`)."""

    rows: int = 0
    kept: int = 0
    truncated: int = 0
    answer_cut: int = 0
    dropped_long_answer: int = 0
    dropped_no_target: int = 0
    chunks: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    dropped_sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["dropped_sources"] = self.dropped_sources[:20]
        return d


def template_messages(messages: list[dict], tok=None) -> list[dict]:
    """Map dataset-only roles (function_call, observation) to roles chat templates understand.

    With `tok` whose template reads structured `tool_calls` (named templates, Qwen-style ones), a function_call turn
    whose content is JSON {"name", "arguments"} (or a list of them) becomes an assistant message with `tool_calls`;
    otherwise the call stays the assistant's text.
    """
    structured = tok is not None and uses_tool_calls(tok)
    out = []
    for m in messages:
        calls = _tool_calls(m["content"]) if structured and m["role"] == "function_call" else None
        if calls:
            out.append({"role": "assistant", "content": "", "tool_calls": calls})
        else:
            out.append({"role": _ROLE_FOR_TEMPLATE.get(m["role"], m["role"]), "content": m["content"]})
    return out


def _tool_calls(content: str) -> list[dict] | None:
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in items):
        return None
    return [{"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
            for c in items]


def _checked_tools(tok, record: Record) -> list[dict] | None:
    """The record's tool schemas; a template that would silently drop them is an error, not a silent loss."""
    if record.tools and not uses_tools(tok):
        raise DataError("this row has tool schemas ('tools') but the chat template ignores them, so the model "
                        "would learn to call tools it never sees", file=record.source or None, field="tools",
                        hint="set model.template to a named template (chatml, llama3, ...; they list the tools in "
                             "the system part) or to a .jinja template that renders `tools`")
    return record.tools or None


def _apply_all(tok, conversations: list[list[dict]], add_generation_prompt=False, tools=None) -> list[str]:
    """Render several conversations in one `apply_chat_template` call: each renders exactly as it would alone (the
    template runs once per conversation), but its per-call setup (template lookup, special tokens, tool schemas) is
    paid once. Conversations of plain role/content strings without tools go to the compiled template directly
    (`_direct_template`), which skips about half of the templating cost (what `apply_chat_template` normalises per
    conversation), not of the whole row's."""
    if not conversations:
        return []
    direct = None if tools else _direct_template(tok)
    if direct is not None and all(map(_plain_messages, conversations)):
        compiled, specials = direct
        return [compiled.render(messages=c, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
                                **specials) for c in conversations]
    kwargs = {"tools": tools} if tools else {}
    return tok.apply_chat_template(conversations, tokenize=False, add_generation_prompt=add_generation_prompt,
                                   **kwargs)


def _plain_messages(messages: list[dict]) -> bool:
    """Only {role, content} dicts of plain strings: what `apply_chat_template` hands its template unchanged."""
    return all(type(m) is dict and m.keys() <= _ROLE_CONTENT and type(m.get("role")) is str
               and type(m.get("content")) is str for m in messages)


_ROLE_CONTENT = frozenset({"role", "content"})
_DIRECT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tok → (template, specials, direct or None)
_PROBE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\n"},
          {"role": "assistant", "content": " Hello!"}, {"role": "user", "content": "Bye"}]


def _direct_template(tok):
    """(compiled template, special tokens) when calling the tokenizer's compiled chat template renders exactly what
    `apply_chat_template` renders for plain conversations, else None. transformers hands the template the messages,
    `tools`/`documents` (None here), `add_generation_prompt` and the special tokens; a probe conversation rendered
    both ways must agree, or the tokenizer stays on `apply_chat_template`. Worked out again when the template or
    the special tokens change."""
    template, specials = getattr(tok, "chat_template", None), getattr(tok, "special_tokens_map", None)
    try:
        known = _DIRECT[tok]
    except (KeyError, TypeError):
        known = None
    if known is not None and known[0] is template and known[1] == specials:
        return known[2]
    direct = _compiled(tok, template, specials)
    try:
        _DIRECT[tok] = (template, specials, direct)
    except TypeError:
        pass
    return direct


def _compiled(tok, template, specials):
    if not isinstance(template, str) or not isinstance(specials, dict):
        return None
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        direct = (_compile_jinja_template(template), dict(specials))
        for end, gen in ((len(_PROBE), False), (3, False), (2, True), (len(_PROBE), True)):
            expected = tok.apply_chat_template(_PROBE[:end], tokenize=False, add_generation_prompt=gen)
            if direct[0].render(messages=_PROBE[:end], tools=None, documents=None, add_generation_prompt=gen,
                                **direct[1]) != expected:
                return None
    except Exception:  # an older transformers, or a template that refuses the probe: the plain path decides
        return None
    return direct


def assistant_spans(tok, messages: list[dict], source: str = "", tools=None) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the [start, end) character span of each assistant turn (content + end marker).

    Turn i spans from the end of messages[:i] rendered with the generation prompt to the end of messages[:i + 1];
    any template may render differently, so every prefix is rendered (O(turns²) characters), but in two batched
    calls, and a turn that ends the conversation reuses the full text instead of rendering it again.
    """
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    inner_ends = [i + 1 for i in turns if i + 1 < len(messages)]
    full, *uptos = _apply_all(tok, [messages] + [messages[:end] for end in inner_ends], tools=tools)
    upto_by_end = dict(zip(inner_ends, uptos))
    starts = [i for i in turns if i]
    prefix_by_start = dict(zip(starts, _apply_all(tok, [messages[:i] for i in starts], add_generation_prompt=True,
                                                  tools=tools)))
    spans = []
    for i in turns:
        prefix = prefix_by_start.get(i, "")
        upto = upto_by_end.get(i + 1, full)
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise DataError("the chat template renders a conversation differently from its prefixes, so the "
                            "assistant turns cannot be located", file=source or None,
                            hint="use a named template (model.template=chatml, llama3, ...)")
        spans.append((len(prefix), len(upto)))
    return full, spans


def _labels_from_spans(offsets, spans, ids) -> list[int]:
    """Train token j when its character range overlaps an assistant span (spans and offsets are both in order).

    Exact offsets ascend, so each span's tokens are one slice found by bisection on the offsets themselves (per
    span, not per token); zero-width tokens inside it (nothing of the span in them) stay untrained."""
    labels = [IGNORE] * len(ids)
    for span_start, span_end in spans:
        first, stop = bisect_right(offsets, span_start, key=_END), bisect_left(offsets, span_end, key=_START)
        labels[first:stop] = ids[first:stop]
        for j in _zero_width(offsets, first, stop):
            labels[j] = IGNORE
    return labels


def _zero_width(offsets, first: int, stop: int) -> list[int]:
    """Indices in [first, stop) of tokens whose offsets hold no character (compared in C, scanned in Python only
    when there is one); none where every token is known to hold one (`TokenOffsets`)."""
    if isinstance(offsets, TokenOffsets):
        return []
    part = offsets[first:stop]
    if not any(map(eq, map(_START, part), map(_END, part))):
        return []
    return [first + k for k, (s, e) in enumerate(part) if s == e]


class TokenOffsets(Sequence):
    """The character offsets of an encoding's tokens, read from the Rust encoding one token at a time when asked.

    Labels need the offsets only where the bisection looks (a few tokens per span), so a row skips building a list
    of one tuple per token (about a tenth of its tokenizing cost). Used only for tokenizers whose every token holds
    a character (`token_spans.every_token_has_width`), so no token in a span is skipped as zero-width."""

    __slots__ = ("_encoding", "_n")

    def __init__(self, encoding):
        self._encoding, self._n = encoding, len(encoding)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(self._n))]
        if not -self._n <= j < self._n:
            raise IndexError(j)
        return self._encoding.token_to_chars(j % self._n)


def _first_token_ending_after(offsets, pos: int) -> int:
    """Index of the first token that ends after character `pos` and holds a character (len(offsets) if none)."""
    j = bisect_right(offsets, pos, key=_END)
    while j < len(offsets) and offsets[j][0] == offsets[j][1]:
        j += 1
    return j


def _labels_from_ranges(ranges, ids) -> list[int]:
    labels = [IGNORE] * len(ids)
    for first, stop in ranges:
        labels[first:stop] = ids[first:stop]
    return labels


def _ids_and_offsets(tok, text: str) -> tuple[list[int], Sequence[tuple[int, int]]]:
    """Token ids and character offsets of `text` (no special tokens added), as `tok(text)` gives them.

    A tokenizer that only wraps its Rust backend (no override of the encoding step, no truncation or padding set,
    the same special-token splitting) is asked directly: a quarter of the per-row tokenizing cost is the wrapper's.
    Its offsets are then read from the encoding where they are needed (`TokenOffsets`) when every token is known to
    hold a character."""
    backend = getattr(tok, "_tokenizer", None)
    if _plain_backend(tok) and backend.truncation is None and backend.padding is None and \
            backend.encode_special_tokens == bool(getattr(tok, "split_special_tokens", False)):
        enc = backend.encode(text, add_special_tokens=False)
        return enc.ids, TokenOffsets(enc) if every_token_has_width(tok) else enc.offsets
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), enc["offset_mapping"]


def _plain_backend(tok) -> bool:
    try:
        from transformers import TokenizersBackend
    except ImportError:  # an older transformers: always through the wrapper
        return False
    return isinstance(tok, TokenizersBackend) and type(tok)._encode_plus is TokenizersBackend._encode_plus


def _labels_and_answer_start(tok, full: str, spans, mask: str) -> tuple[list[int], list[int], int]:
    """Ids, labels and the token index where the last answer starts; offsets are used only when they are exact."""
    ids, offsets = _ids_and_offsets(tok, full)
    if offsets_are_exact(tok, full, ids):
        labels = _labels_from_spans(offsets, spans, ids)
        answer_start = _first_token_ending_after(offsets, spans[-1][0])
    else:
        ranges = token_ranges(tok, full, ids, spans[-1:] if mask == "all" else spans)
        labels = _labels_from_ranges(ranges, ids)
        answer_start = ranges[-1][0]
    return ids, list(ids) if mask == "all" else labels, answer_start


def render_chat(record: Record, tok, mask: str = "assistant") -> Rendered:
    """Render one chat record (no truncation). EOS is appended when the template does not end the answer with it."""
    messages = template_messages(record.messages, tok)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("conversation has no assistant turn to learn from", file=record.source or None,
                        field="messages")
    full, spans = assistant_spans(tok, messages, record.source, tools=_checked_tools(tok, record))
    if mask == "last":
        spans = spans[-1:]
    ids, labels, answer_start = _labels_and_answer_start(tok, full, spans, mask)
    eos = tok.eos_token_id
    if eos is not None and eos not in ids[-3:]:
        ids.append(eos)
        labels.append(eos)
    return Rendered(ids, labels, record.source, answer_start=answer_start)


def truncate(r: Rendered, cutoff: int) -> Rendered:
    """Cut to `cutoff` tokens: drop prompt tokens from the start first; cut the answer's tail only if unavoidable."""
    if len(r.input_ids) <= cutoff:
        return r
    last_start = r.answer_start if r.answer_start is not None else len(r.input_ids)
    end = len(r.input_ids)
    answer_len = end - last_start
    if answer_len >= cutoff:  # answer alone too long: keep a short prompt tail, cut the answer's end
        keep_prompt = min(last_start, cutoff // 4)
        start = last_start - keep_prompt
        end = start + cutoff
    else:
        start = end - cutoff
    return Rendered(r.input_ids[start:end], r.labels[start:end], r.source, True, last_start - start,
                    answer_cut=end < len(r.input_ids))


def render_text(record: Record, tok, cutoff: int) -> list[Rendered]:
    """Pre-training text → one or more chunks of at most `cutoff` tokens (long documents are split, not cut)."""
    ids = tok(record.text, add_special_tokens=True)["input_ids"]
    if tok.eos_token_id is not None:
        ids = ids + [tok.eos_token_id]
    return [Rendered(ids[i:i + cutoff], ids[i:i + cutoff], record.source) for i in range(0, len(ids), cutoff)
            if len(ids[i:i + cutoff]) > 1]


def render_row(rec: Record, tok, mask: str, cutoff: int, on_long_answer: str,
               stats: RenderStats) -> Rendered | None:
    """One chat row, truncated and counted; None when it is dropped."""
    r = render_chat(rec, tok, mask)
    if len(r.input_ids) > cutoff:
        r = truncate(r, cutoff)
        if r.answer_cut:
            stats.answer_cut += 1
            if on_long_answer == "drop":
                stats.dropped_long_answer += 1
                stats.dropped_sources.append(rec.source)
                return None
        else:
            stats.truncated += 1
    if r.labels.count(IGNORE) == len(r.labels):
        stats.dropped_no_target += 1
        stats.dropped_sources.append(rec.source)
        return None
    return r


def render_records(records: list[Record], tok, *, mask: str, cutoff: int, on_long_answer: str = "cut",
                   progress=None) -> tuple[list[Rendered], RenderStats]:
    """Render conversations; returns kept examples and the counts a user should see.

    `on_long_answer` (config `data.on_long_answer`): `cut` keeps a row whose answer alone exceeds `cutoff` with the
    answer's tail cut, `drop` drops it; both count it in `answer_cut`.
    """
    if on_long_answer not in LONG_ANSWER_POLICIES:
        raise ValueError(f"on_long_answer must be one of {LONG_ANSWER_POLICIES}, got {on_long_answer!r}")
    out: list[Rendered] = []
    stats = RenderStats()
    for rec in records:
        stats.rows += 1
        r = render_row(rec, tok, mask, cutoff, on_long_answer, stats)
        if r is not None:
            out.append(r)
        if progress:
            progress()
    return out, _count(out, stats)


def render_text_records(records: list[Record], tok, *, cutoff: int) -> tuple[list[Rendered], RenderStats]:
    """Plain text (a conversation counts as its contents joined by newlines) → cutoff-long chunks, every token
    trained."""
    out: list[Rendered] = []
    stats = RenderStats()
    for rec in records:
        stats.rows += 1
        text = rec.text if rec.text is not None else "\n".join(m["content"] for m in rec.messages)
        chunks = render_text(Record(text=text, source=rec.source), tok, cutoff)
        stats.chunks += len(chunks)
        out.extend(chunks)
    return out, _count(out, stats)


def _count(out: list[Rendered], stats: RenderStats) -> RenderStats:
    stats.kept = len(out)
    stats.tokens = sum(len(r.input_ids) for r in out)
    stats.trained_tokens = sum(len(r.labels) - r.labels.count(IGNORE) for r in out)
    return stats
