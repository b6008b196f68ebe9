"""Rendering: token-exact with apply_chat_template, loss masks, EOS, truncation that keeps the answer."""

from __future__ import annotations

import pytest

from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE, render_chat, render_records, render_text, truncate
from tuneforge.data.templates import encode_prompt, ensure_chat_template
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


# --- tokenizers whose offset mapping drifts -------------------------------------------------------------------------
# The TinyStories vocabulary has byte_fallback but no byte tokens and no unk: it drops '{', tabs and accented letters,
# and its offsets after them are shifted. Labels must still land on exactly the answer turn.
LOSSY_PROMPTS = ['Say {"a": 1}', "naïve café", "a\ttab", "emoji 🙂 and 中文"]
WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _qa(user, answer="Blue.", tools=None):
    return Record(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}], tools=tools)


def _assert_prompt_then_answer(tok, rec, r):
    """The generation prompt's own ids (as inference encodes them) are untrained, every later id is trained."""
    prompt = encode_prompt(tok, rec.messages[:-1], rec.tools)
    assert r.input_ids[:len(prompt)] == prompt and r.answer_start == len(prompt)
    assert all(lab == IGNORE for lab in r.labels[:len(prompt)])
    assert r.labels[len(prompt):] == r.input_ids[len(prompt):]


@pytest.mark.parametrize("user", LOSSY_PROMPTS)
def test_lossy_tokenizer_trains_exactly_the_answer(tiny_tok, user):
    rec = _qa(user)
    r = render_chat(rec, tiny_tok)
    assert _trained_text(tiny_tok, r) == "Blue.<|im_end|>\n" + tiny_tok.eos_token
    assert tiny_tok.decode(r.input_ids[r.answer_start:]) == "Blue.<|im_end|>\n" + tiny_tok.eos_token
    expected = tiny_tok.apply_chat_template(rec.messages, tokenize=True, return_dict=True)["input_ids"]
    assert r.input_ids == [*expected, tiny_tok.eos_token_id]  # the ids themselves never depended on offsets
    _assert_prompt_then_answer(tiny_tok, rec, r)


def test_lossy_answer_itself_is_trained_whole(tiny_tok):
    rec = _qa('Say {"a": 1}', answer="Café {ok}\tdone.")
    r = render_chat(rec, tiny_tok)
    _assert_prompt_then_answer(tiny_tok, rec, r)
    assert _trained_text(tiny_tok, r).endswith("done.<|im_end|>\n" + tiny_tok.eos_token)


def test_lossy_multi_turn_masks(tiny_tok):
    conv = [{"role": "system", "content": "Be {terse}."}, {"role": "user", "content": "Hï\tthere"},
            {"role": "assistant", "content": "Hello there."}, {"role": "user", "content": "Capital of Fränce?"},
            {"role": "assistant", "content": "Paris."}]
    rec = Record(messages=conv)
    end = "<|im_end|>\n"
    assert _trained_text(tiny_tok, render_chat(rec, tiny_tok)) == f"Hello there.{end}Paris.{end}{tiny_tok.eos_token}"
    last = render_chat(rec, tiny_tok, "last")
    assert _trained_text(tiny_tok, last) == f"Paris.{end}{tiny_tok.eos_token}"
    _assert_prompt_then_answer(tiny_tok, rec, last)
    r_all = render_chat(rec, tiny_tok, "all")
    assert r_all.labels == r_all.input_ids and r_all.answer_start == last.answer_start


def test_lossy_tool_schemas_in_the_system_part(tiny_tok):
    rec = _qa("Weather in Oslo?", answer="It rains.", tools=[WEATHER])
    r = render_chat(rec, tiny_tok)
    assert "get_weather" in tiny_tok.decode(r.input_ids[:r.answer_start])
    assert _trained_text(tiny_tok, r) == "It rains.<|im_end|>\n" + tiny_tok.eos_token
    _assert_prompt_then_answer(tiny_tok, rec, r)


@pytest.mark.parametrize("user", LOSSY_PROMPTS)
def test_byte_level_tokenizer_keeps_the_offset_path(smol_tok, monkeypatch, user):
    """SmolLM2 spells every character, so its offsets are used as before and the exact path is never taken."""
    monkeypatch.setattr("tuneforge.data.render.token_ranges", _fail)
    rec = _qa(user)
    r = render_chat(rec, smol_tok)
    assert _trained_text(smol_tok, r) == "Blue.<|im_end|>\n"
    _assert_prompt_then_answer(smol_tok, rec, r)


def _fail(*args, **kwargs):
    raise AssertionError("the exact (slow) path was taken")


def test_exact_path_agrees_with_trusted_offsets(shared, monkeypatch):
    """Where offsets are right, both paths give the same labels, also for an answer token merged with the prompt."""
    tok = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    space_template = ("{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
                      "{% else %}A: {{ m['content'] }}\n{% endif %}{% endfor %}"
                      "{% if add_generation_prompt %}A: {% endif %}")
    # an answer turn that ends in a space: the next turn's " Q" is one token that crosses the span's end
    trailing_space = space_template.replace("A: {{ m['content'] }}\n", "A: {{ m['content'] }} ")
    recs = [Record(messages=CONV), _qa('Say {"a": 1}', answer="Café {ok}")]
    for template in (tok.chat_template, trailing_space, space_template):
        tok.chat_template = template
        for mask in ("all", "last", "assistant"):
            by_offsets = [render_chat(rec, tok, mask) for rec in recs]
            with monkeypatch.context() as m:
                m.setattr("tuneforge.data.render.offsets_are_exact", lambda *a: False)
                exact = [render_chat(rec, tok, mask) for rec in recs]
            assert [(r.input_ids, r.labels, r.answer_start) for r in exact] == \
                [(r.input_ids, r.labels, r.answer_start) for r in by_offsets]
    first = next(j for j, lab in enumerate(exact[0].labels) if lab != IGNORE)  # space template, mask assistant
    assert tok.decode([exact[0].input_ids[first]]) == " Hello"  # "A: |Hello" is one token, and it is trained
