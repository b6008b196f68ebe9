"""Rendering made cheaper without changing a single id or label.

`assistant_spans` now renders a row's prefixes in two batched `apply_chat_template` calls (and reuses the full text
for a turn that ends the conversation); `token_ranges` tokenizes the text before every boundary in one batched call.
The previous rules are kept here verbatim as references: on multi-turn and tool-call rows, for every named template
and SmolLM2's own one, spans, ids, labels and answer starts must be identical. The cost is checked by its shape (calls
and conversations rendered per row), not by a clock.
"""

from __future__ import annotations

import pytest

from tuneforge.data.catalog import DatasetSpec, load_dataset
from tuneforge.data.records import Record
from tuneforge.data.render import assistant_spans, render_chat, template_messages
from tuneforge.data.templates import TEMPLATES, ensure_chat_template, uses_tools
from tuneforge.data.token_spans import offsets_are_exact, token_ranges
from tuneforge.models.load import load_tokenizer
from tuneforge.utils.errors import DataError

MASKS = ("assistant", "last", "all")


# ---- the previous rules, verbatim ----------------------------------------------------------------------------------

def _old_apply(tok, messages, add_generation_prompt=False, tools=None) -> str:
    kwargs = {"tools": tools} if tools else {}
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)


def _old_assistant_spans(tok, messages, source="", tools=None):
    full = _old_apply(tok, messages, tools=tools)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _old_apply(tok, messages[:i], add_generation_prompt=True, tools=tools) if i else ""
        upto = _old_apply(tok, messages[: i + 1], tools=tools)
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise DataError("the chat template renders a conversation differently from its prefixes, so the "
                            "assistant turns cannot be located", file=source or None)
        spans.append((len(prefix), len(upto)))
    return full, spans


def _old_tokens_before(tok, text, ids, pos):
    if pos <= 0:
        return 0, False
    if pos >= len(text):
        return len(ids), False
    head = tok(text[:pos], add_special_tokens=False)["input_ids"]
    if ids[:len(head)] == head:
        return len(head), False
    same = next((j for j, (a, b) in enumerate(zip(head, ids)) if a != b), min(len(head), len(ids)))
    return same, same < len(ids)


def _old_token_ranges(tok, text, ids, spans):
    ranges = []
    for start, end in spans:
        first, _ = _old_tokens_before(tok, text, ids, start)
        stop, straddles = _old_tokens_before(tok, text, ids, end)
        ranges.append((first, stop + straddles))
    return ranges


# ---- data ----------------------------------------------------------------------------------------------------------

def _turns(*pairs, system=None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    for q, a in pairs:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs


@pytest.fixture(scope="module")
def rows(demo_data) -> list[Record]:
    """Tool-call rows (function_call / observation turns, several answers each), 10-turn conversations made of
    alpaca rows, and the odd shapes: a system turn, a last turn that is not an answer, two answers in a row."""
    folder = demo_data / "llamafactory_demo"
    glaive = load_dataset(DatasetSpec(path=str(folder / "glaive_toolcall_en_demo.json"), max_samples=16)).records
    alpaca = load_dataset(DatasetSpec(path=str(folder / "alpaca_en_demo.json"), max_samples=30)).records
    ten = [Record(messages=[m for r in alpaca[k:k + 5] for m in r.messages[-2:]], source=f"ten:{k}")
           for k in range(0, 30, 5)]
    odd = [Record(messages=_turns(("Hi", "Hello!"), ("Name a color.", "Blue."), system="Be brief."), source="sys"),
           Record(messages=_turns(("Hi", "Hello!")) + [{"role": "user", "content": "Bye"}], source="open"),
           Record(messages=_turns(("Hi", "Hello!")) + [{"role": "assistant", "content": "Anything else?"}],
                  source="twice")]
    return glaive + ten + odd


def _tokenizers(shared, tiny_model_dir):
    """(label, tokenizer) for every named template on the TinyStories tokenizer (it drops '{' and tabs, so tool
    rows take the exact `token_ranges` path), and SmolLM2 with its own template and with chatml (offsets path)."""
    for name in sorted(TEMPLATES):
        tok = load_tokenizer(str(tiny_model_dir))
        ensure_chat_template(tok, name)
        yield f"tiny+{name}", tok
    smol = shared / "models" / "smollm2-135m-instruct-q4_1-gguf"
    yield "smollm2 own", load_tokenizer(str(smol))
    yield "smollm2+chatml", load_tokenizer(str(smol), template="chatml")


@pytest.fixture(scope="module")
def tokenizers(shared, tiny_model_dir) -> list[tuple[str, object]]:
    return list(_tokenizers(shared, tiny_model_dir))


def _outcome(fn):
    """A result, or the error it raised (type and message): a template that refuses a row must still refuse it."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - any error is part of the behaviour being compared
        return type(err).__name__, str(err)


# ---- identical results ---------------------------------------------------------------------------------------------

def test_spans_identical_to_the_per_prefix_rule(tokenizers, rows):
    compared = 0
    for label, tok in tokenizers:
        for rec in rows:
            messages = template_messages(rec.messages, tok)
            tools = rec.tools if rec.tools and uses_tools(tok) else None
            old = _outcome(lambda: _old_assistant_spans(tok, messages, rec.source, tools=tools))
            new = _outcome(lambda: assistant_spans(tok, messages, rec.source, tools=tools))
            assert new == old, (label, rec.source)
            compared += isinstance(old[1], list) and len(old[1]) > 1
    assert compared > 100  # most rows render, with several answers each


def test_token_ranges_identical_to_one_tokenization_per_boundary(tokenizers, rows):
    exercised = 0
    for label, tok in tokenizers:
        for rec in rows:
            tools = rec.tools if rec.tools and uses_tools(tok) else None
            got = _outcome(lambda: assistant_spans(tok, template_messages(rec.messages, tok), tools=tools))
            if not isinstance(got[1], list):
                continue
            full, spans = got
            ids = tok(full, add_special_tokens=False)["input_ids"]
            assert token_ranges(tok, full, ids, spans) == _old_token_ranges(tok, full, ids, spans), (label, rec.source)
            exercised += not offsets_are_exact(tok, full, ids)
    assert exercised > 20  # rows whose offsets drift, where the labels come from these ranges


def test_rendered_rows_identical(tokenizers, rows, monkeypatch):
    """Whole rows (ids, labels, answer start) under every mask policy, against a render_chat that uses the old
    span and range rules."""
    def render_all(tok):
        return [_outcome(lambda: render_chat(rec, tok, mask)) for rec in rows for mask in MASKS]

    for label, tok in tokenizers:
        new = render_all(tok)
        with monkeypatch.context() as m:
            m.setattr("tuneforge.data.render.assistant_spans", _old_assistant_spans)
            m.setattr("tuneforge.data.render.token_ranges", _old_token_ranges)
            old = render_all(tok)
        assert new == old, label
        assert sum(not isinstance(r, tuple) for r in new) > len(rows)  # most rows render


# ---- the cost, by its shape ----------------------------------------------------------------------------------------

def _counting(tok, monkeypatch) -> list[int]:
    """Count template renders per call: how many conversations each rendering call (compiled template or
    `apply_chat_template`) rendered."""
    from tuneforge.data import render

    calls: list[int] = []
    original = render._apply_all

    def counted(tok_, conversations, *args, **kwargs):
        if conversations:
            calls.append(len(conversations))
        return original(tok_, conversations, *args, **kwargs)

    monkeypatch.setattr(render, "_apply_all", counted)
    return calls


def test_two_template_calls_per_row_and_no_render_of_the_full_text_twice(tiny_model_dir, monkeypatch):
    tok = load_tokenizer(str(tiny_model_dir), template="chatml")
    calls = _counting(tok, monkeypatch)
    ten_turns = _turns(*[(f"Question {k}?", f"Answer {k}.") for k in range(5)])
    assistant_spans(tok, ten_turns)
    # full + 4 inner answers' ends, then 5 prompts; the old rule made 11 calls rendering 11 conversations
    assert calls == [5, 5]
    calls.clear()
    assistant_spans(tok, _turns(("Hi", "Hello!")))  # an alpaca row: the full text and one prompt
    assert calls == [1, 1]
    calls.clear()
    assistant_spans(tok, [{"role": "assistant", "content": "Once upon a time"}])  # nothing before the answer
    assert calls == [1]
