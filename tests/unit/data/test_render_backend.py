"""Rendering asks a plain tokenizer's Rust backend directly for ids and offsets: the same answer as `tok(text)`."""

from __future__ import annotations

import pytest

from tuneforge.data.render import _ids_and_offsets, _plain_backend
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
            assert _ids_and_offsets(tok, text) == (list(enc["input_ids"]), list(enc["offset_mapping"]))
    finally:
        tok.split_special_tokens = False


def test_a_backend_left_truncating_goes_through_the_tokenizer(tok):
    tok._tokenizer.enable_truncation(max_length=3)
    try:
        ids, _ = _ids_and_offsets(tok, "one two three four five six")
        assert len(ids) > 3  # the leftover truncation was not applied: the wrapper resets it per call
    finally:
        tok._tokenizer.no_truncation()
