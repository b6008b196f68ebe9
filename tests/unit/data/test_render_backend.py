"""Rendering asks a plain tokenizer's Rust backend directly for ids and offsets: the same answer as `tok(text)`."""

from __future__ import annotations

import pytest

from tuneforge.data.render import (TokenOffsets, _apply_all, _direct_template, _first_token_ending_after,
                                   _ids_and_offsets, _labels_from_spans, _plain_backend, _plain_messages)
from tuneforge.data.templates import TEMPLATES, ensure_chat_template
from tuneforge.data.token_spans import every_token_has_width, is_lossless, offsets_are_exact
from tuneforge.models.load import load_tokenizer

TEXTS = ["<|im_start|>user\nHi  there<|im_end|>\n<|im_start|>assistant\n中文 émoji 🙂\n\n", " leading space",
         "Once upon a time</s><s>  tabs\tand\r\nlines", "", "<unk><|endoftext|>plain"]


@pytest.fixture(scope="module", params=["tinystories-656k", "smollm2-135m-instruct-q4_1-gguf"])
def tok(request, shared):
    return load_tokenizer(str(shared / "models" / request.param))


@pytest.mark.parametrize("split_special", [False, True])
def test_backend_ids_and_offsets_equal_the_tokenizer_call(tok, split_special):
    assert _plain_backend(tok)
    tok.split_special_tokens = split_special
    try:
        for text in TEXTS:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = _ids_and_offsets(tok, text)
            assert (ids, list(offsets)) == (list(enc["input_ids"]), list(enc["offset_mapping"]))
    finally:
        tok.split_special_tokens = False


def test_a_backend_left_truncating_goes_through_the_tokenizer(tok):
    tok._tokenizer.enable_truncation(max_length=3)
    try:
        ids, _ = _ids_and_offsets(tok, "one two three four five six")
        assert len(ids) > 3  # the leftover truncation was not applied: the wrapper resets it per call
    finally:
        tok._tokenizer.no_truncation()


HARD_TEXTS = TEXTS + ["nul\x00 and zero\u200bwidth", "e\u0301 combining, ﬁ ligature, Ⅻ numeral", "🙂🙃" * 4,
                      "trailing spaces   \n\n\t", "  <|im_end|>  literal special token  ", "\r\n\r\n", "Ω≈ç√∫˜µ≤≥÷"]


def test_a_lossless_tokenizer_decodes_every_text_back_so_rows_are_not_decoded(shared):
    smol = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    assert is_lossless(smol)  # byte-level BPE, no normalizer, no prefix space, no whitespace-eating added token
    for split_special in (False, True):
        smol.split_special_tokens = split_special
        for text in HARD_TEXTS:  # what is_lossless promises, checked the slow way
            ids, _ = _ids_and_offsets(smol, text)
            assert smol.backend_tokenizer.decode(ids, skip_special_tokens=False) == text
    smol.split_special_tokens = False


def test_tokenizers_that_can_lose_text_are_still_checked_row_by_row(shared):
    from tokenizers import AddedToken, normalizers

    tiny = load_tokenizer(str(shared / "models" / "tinystories-656k"))  # byte_fallback without byte tokens
    assert not is_lossless(tiny)
    ids, _ = _ids_and_offsets(tiny, "a { brace")
    assert not offsets_are_exact(tiny, "a { brace", ids)  # it drops '{': the row takes the exact path

    lowered = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    lowered.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert not is_lossless(lowered)
    ids, _ = _ids_and_offsets(lowered, "Capitals")
    assert not offsets_are_exact(lowered, "Capitals", ids)

    eating = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    eating.backend_tokenizer.add_special_tokens([AddedToken("<sep>", rstrip=True, lstrip=True)])
    assert not is_lossless(eating)



def test_offsets_read_from_the_encoding_label_exactly_as_the_full_list(shared):
    import random

    smol = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    assert every_token_has_width(smol)
    rng = random.Random(0)
    for text in HARD_TEXTS:
        enc = smol.backend_tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = _ids_and_offsets(smol, text)
        assert isinstance(offsets, TokenOffsets) and list(offsets) == enc.offsets
        assert all(e > s for s, e in offsets)  # what every_token_has_width promises
        if offsets:
            assert offsets[-1] == enc.offsets[-1] and offsets[1:3] == enc.offsets[1:3]
        with pytest.raises(IndexError):
            offsets[len(offsets)]
        for _ in range(50):
            cuts = sorted(rng.choices(range(len(text) + 2), k=4))
            spans = [(cuts[0], cuts[1]), (cuts[2], cuts[3])]
            assert _labels_from_spans(offsets, spans, ids) == _labels_from_spans(enc.offsets, spans, ids)
            assert _first_token_ending_after(offsets, cuts[2]) == _first_token_ending_after(enc.offsets, cuts[2])


def test_a_post_processor_that_trims_offsets_keeps_the_full_list(shared):
    from tokenizers import processors

    trimming = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    trimming.backend_tokenizer.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=True)])
    assert is_lossless(trimming) and not every_token_has_width(trimming)
    _, offsets = _ids_and_offsets(trimming, "a  b   c")
    assert not isinstance(offsets, TokenOffsets)
    assert any(s == e for s, e in offsets)  # a token of spaces trimmed to nothing: the case the list is kept for
    tiny = load_tokenizer(str(shared / "models" / "tinystories-656k"))
    assert not every_token_has_width(tiny)

CONVERSATIONS = [
    [{"role": "user", "content": "Hi  there\n"}, {"role": "assistant", "content": " 中文 émoji 🙂\n\n"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "c {{ not jinja }}"},
     {"role": "assistant", "content": "d</s>"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": "only an answer"}],
]


@pytest.mark.parametrize("template", ["own", *sorted(TEMPLATES)])
def test_plain_conversations_render_directly_as_apply_chat_template_renders_them(shared, template):
    tok = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    if template != "own":
        ensure_chat_template(tok, template)
    assert _direct_template(tok) is not None
    for gen in (False, True):
        convs = [c[:-1] if gen else c for c in CONVERSATIONS]
        assert _apply_all(tok, convs, add_generation_prompt=gen) == \
            tok.apply_chat_template(convs, tokenize=False, add_generation_prompt=gen)


def test_the_direct_template_follows_a_changed_template_and_special_tokens(shared):
    tok = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    conv = CONVERSATIONS[0]
    ensure_chat_template(tok, "chatml")
    assert _apply_all(tok, [conv]) == [tok.apply_chat_template(conv, tokenize=False)]
    ensure_chat_template(tok, "llama3")  # a new template: compiled again
    assert _apply_all(tok, [conv]) == [tok.apply_chat_template(conv, tokenize=False)]
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    before = _apply_all(tok, [conv])
    tok.add_special_tokens({"bos_token": "<|newbos|>"})  # a changed special token: read again
    assert _apply_all(tok, [conv]) == [tok.apply_chat_template(conv, tokenize=False)] != before


def test_messages_with_more_than_role_and_content_take_apply_chat_template(shared):
    tok = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    assert not _plain_messages([{"role": "assistant", "content": "", "tool_calls": []}])
    assert not _plain_messages([{"role": "user", "content": None}])
    assert not _plain_messages([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert _plain_messages(CONVERSATIONS[1])
    tok.chat_template = "{{ raise_exception('no') if messages else '' }}"  # refuses the probe: no direct path
    assert _direct_template(tok) is None
