"""Rendering: token-exact with apply_chat_template, loss masks, EOS, truncation that keeps the answer."""

from __future__ import annotations

import pytest

from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE, render_chat, render_records, render_text, truncate
from tuneforge.data.templates import ensure_chat_template
from tuneforge.models.load import load_tokenizer
from tuneforge.utils.errors import DataError

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


@pytest.fixture(scope="module")
def smol_tok(shared):
    return load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))


@pytest.fixture(scope="module")
def tiny_tok(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    ensure_chat_template(tok, "chatml")
    return tok


def _trained_text(tok, r):
    return tok.decode([t for t, lab in zip(r.input_ids, r.labels) if lab != IGNORE])


def test_ids_equal_apply_chat_template(smol_tok):
    r = render_chat(Record(messages=CONV), smol_tok)
    expected = smol_tok.apply_chat_template(CONV, tokenize=True, return_dict=True)["input_ids"]
    assert r.input_ids == list(expected)


def test_mask_assistant_last_all(smol_tok):
    rec = Record(messages=CONV)
    both = _trained_text(smol_tok, render_chat(rec, smol_tok, "assistant"))
    assert both == "Hello there.<|im_end|>\nParis.<|im_end|>\n"
    last = _trained_text(smol_tok, render_chat(rec, smol_tok, "last"))
    assert last == "Paris.<|im_end|>\n"
    r_all = render_chat(rec, smol_tok, "all")
    assert r_all.labels == r_all.input_ids


def test_eos_appended_when_template_lacks_it(tiny_tok):
    r = render_chat(Record(messages=CONV[1:3]), tiny_tok)
    assert r.input_ids[-1] == tiny_tok.eos_token_id and r.labels[-1] == tiny_tok.eos_token_id
    assert "Hello there." in _trained_text(tiny_tok, r)


def test_truncation_cuts_prompt_first(smol_tok):
    long_user = {"role": "user", "content": "word " * 300}
    rec = Record(messages=[long_user, {"role": "assistant", "content": "Short answer."}])
    full = render_chat(rec, smol_tok)
    cut = truncate(full, 64)
    assert len(cut.input_ids) == 64 and cut.truncated
    assert _trained_text(smol_tok, cut) == _trained_text(smol_tok, full)  # the whole answer survives
    assert cut.input_ids[-len(smol_tok("Short answer.")["input_ids"]) - 2:] == full.input_ids[-len(
        smol_tok("Short answer.")["input_ids"]) - 2:]


def test_answer_longer_than_cutoff_keeps_its_start(smol_tok):
    rec = Record(messages=[{"role": "user", "content": "Tell"}, {"role": "assistant", "content": "la " * 200}])
    cut = truncate(render_chat(rec, smol_tok), 32)
    assert len(cut.input_ids) == 32
    assert _trained_text(smol_tok, cut).startswith("la la")
    assert any(lab == IGNORE for lab in cut.labels[:4])  # a bit of prompt is kept before the answer


def test_render_records_counts_truncation_and_rejects_no_answer(smol_tok):
    recs = [Record(messages=CONV, source="a.jsonl:1"),
            Record(messages=[{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "ok"}],
                   source="a.jsonl:2")]
    out, stats = render_records(recs, smol_tok, mask="assistant", cutoff=48)
    assert stats.rows == 2 and stats.truncated == 1 and stats.kept == 2
    assert all(len(r.input_ids) <= 48 for r in out)
    with pytest.raises(DataError, match="a.jsonl:3.*no assistant turn"):
        render_chat(Record(messages=[{"role": "user", "content": "hi"}], source="a.jsonl:3"), smol_tok)


def test_pretraining_text_is_chunked_not_cut(tiny_tok):
    text = "Once upon a time there was a little dog. " * 40
    chunks = render_text(Record(text=text), tiny_tok, 64)
    n_ids = len(tiny_tok(text)["input_ids"]) + 1
    assert sum(len(c.input_ids) for c in chunks) == n_ids
    assert all(len(c.input_ids) <= 64 for c in chunks) and len(chunks) > 2
    assert all(c.labels == c.input_ids for c in chunks)
