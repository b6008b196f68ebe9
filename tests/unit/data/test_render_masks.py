"""Loss masks at the prompt/answer boundary, answers longer than the cutoff, and data of the wrong kind for sft/pt."""

from __future__ import annotations

import pytest

from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE, render_chat, render_records
from tuneforge.data.templates import ensure_chat_template
from tuneforge.models.load import load_tokenizer

# A template whose generation prompt ends in a space: byte-level BPE merges that space into the first answer token.
SPACE_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
                  "{% else %}A: {{ m['content'] }}\n{% endif %}{% endfor %}"
                  "{% if add_generation_prompt %}A: {% endif %}")
QA = Record(messages=[{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}])


@pytest.fixture(scope="module")
def smol_tok(shared):
    tok = load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))
    tok.chat_template = SPACE_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def tiny_tok(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    ensure_chat_template(tok, "chatml")
    return tok


def _decode(tok, r, trained: bool) -> str:
    return tok.decode([t for t, lab in zip(r.input_ids, r.labels) if (lab != IGNORE) == trained])


def test_first_answer_token_merged_with_the_prompt_space_is_trained(smol_tok):
    r = render_chat(QA, smol_tok)
    first = next(j for j, lab in enumerate(r.labels) if lab != IGNORE)
    assert smol_tok.decode([r.input_ids[first]]) == " Paris"  # the token spans "A: |Paris": it must be learned
    assert _decode(smol_tok, r, True) == " Paris.\n" + smol_tok.eos_token
    assert _decode(smol_tok, r, False) == "Q: Capital of France?\nA:"  # pure prompt tokens stay untrained
    assert r.answer_start == first


def test_overlap_rule_trains_nothing_new_where_the_boundary_is_clean(tiny_tok):
    r = render_chat(QA, tiny_tok)
    assert _decode(tiny_tok, r, True).replace(" ", "") == ("Paris.<|im_end|>\n" + tiny_tok.eos_token).replace(" ", "")


def _long_answer(source):
    return Record(messages=[{"role": "user", "content": "Tell a story."},
                            {"role": "assistant", "content": "The dog ran and ran. " * 40}], source=source)


def _long_prompt(source):
    return Record(messages=[{"role": "user", "content": "The cat sat. " * 40},
                            {"role": "assistant", "content": "Yes."}], source=source)


def test_long_answer_is_counted_as_answer_cut_and_kept_by_default(tiny_tok):
    recs = [_long_answer("d.json:1"), _long_prompt("d.json:2")]
    out, stats = render_records(recs, tiny_tok, mask="assistant", cutoff=48)
    assert stats.kept == 2 and stats.answer_cut == 1 and stats.truncated == 1 and stats.dropped_long_answer == 0
    assert out[0].answer_cut and not out[1].answer_cut and out[1].truncated
    assert out[0].input_ids[-1] != tiny_tok.eos_token_id  # the cut answer lost its end
    d = stats.as_dict()
    assert d["answer_cut"] == 1 and d["dropped_long_answer"] == 0


def test_on_long_answer_drop_drops_and_names_the_row(tiny_tok):
    recs = [_long_answer("d.json:1"), _long_prompt("d.json:2")]
    out, stats = render_records(recs, tiny_tok, mask="assistant", cutoff=48, on_long_answer="drop")
    assert stats.kept == 1 and out[0].source == "d.json:2"
    assert stats.answer_cut == 1 and stats.dropped_long_answer == 1 and stats.dropped_sources == ["d.json:1"]
    assert stats.as_dict()["dropped_long_answer"] == 1
    with pytest.raises(ValueError, match="on_long_answer"):
        render_records(recs, tiny_tok, mask="assistant", cutoff=48, on_long_answer="skip")


def _overlap_labels(offsets, spans, ids):
    """The rule spelled out token by token: trained when it holds a character and overlaps an assistant span."""
    return [i if e > s and any(e > a and s < b for a, b in spans) else IGNORE
            for i, (s, e) in zip(ids, offsets)]


def test_bisected_labels_match_the_token_by_token_rule_with_zero_width_tokens():
    import random

    from tuneforge.data.render import _first_token_ending_after, _labels_from_spans

    rng = random.Random(0)
    for _ in range(300):
        offsets, pos = [], 0
        for _ in range(rng.randint(1, 40)):
            width = rng.choice([0, 1, 1, 2, 3])  # zero-width tokens too (added tokens that hold no character)
            pos += rng.choice([0, 0, 0, 1])  # and gaps (characters no token holds, as trimmed offsets leave)
            offsets.append((pos, pos + width))
            pos += width
        cuts = sorted(rng.choices(range(pos + 2), k=4))
        spans = [(cuts[0], cuts[1]), (cuts[2], cuts[3])]
        ids = list(range(1000, 1000 + len(offsets)))
        assert _labels_from_spans(offsets, spans, ids) == _overlap_labels(offsets, spans, ids)
        first = next((j for j, (s, e) in enumerate(offsets) if e > spans[-1][0] and e > s), len(offsets))
        assert _first_token_ending_after(offsets, spans[-1][0]) == first
