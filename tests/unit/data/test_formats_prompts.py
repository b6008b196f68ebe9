"""Prompt-only rows (the RL stages): a row without an answer is a prompt when the stage trains on prompts, and
stays an error otherwise."""

from __future__ import annotations

import pytest

from tuneforge.data.formats import resolve_format, to_record
from tuneforge.stages import get_stage
from tuneforge.stages.base import record_kind
from tuneforge.utils.errors import DataError

U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731


def prompt(row, fmt="auto", **kw):
    return to_record(row, resolve_format(fmt, row, prompts=True, **kw), file="p.jsonl", line=3)


@pytest.mark.parametrize("row", [{"instruction": "Q"}, {"instruction": "Q", "output": ""},
                                 {"instruction": "Q", "output": None}, {"prompt": "Q"}])
def test_alpaca_and_trl_rows_without_answer_are_prompts(row):
    rec = prompt(row)
    assert rec.messages == [U("Q")] and record_kind(rec) == "prompt"


def test_an_answer_is_kept_as_the_label_side():
    rec = prompt({"instruction": "Q", "output": "1", "difficulty": "easy"})
    assert rec.messages == [U("Q"), A("1")] and record_kind(rec) == "chat" and rec.extra == {"difficulty": "easy"}


def test_conversational_prompts_openai_sharegpt_and_trl():
    assert prompt({"messages": [U("hi"), A("hello"), U("and?")]}).messages == [U("hi"), A("hello"), U("and?")]
    assert prompt({"conversations": [{"from": "human", "value": "Q"}]}).messages == [U("Q")]
    assert prompt({"prompt": [U("Q")], "answer": "7"}).messages == [U("Q")]
    assert prompt({"prompt": [U("Q")], "answer": "7"}).extra == {"answer": "7"}


def test_without_prompts_a_missing_answer_is_still_an_error():
    with pytest.raises(DataError, match="missing required field") as e:
        to_record({"instruction": "Q"}, resolve_format("auto", {"instruction": "Q"}), file="p.jsonl", line=3)
    assert e.value.field == "output" and e.value.line == 3
    with pytest.raises(DataError, match="instead of an assistant answer"):
        row = {"messages": [U("Q")]}
        to_record(row, resolve_format("auto", row), file="p.jsonl", line=3)


def test_prompt_rows_are_refused_by_stages_that_need_answers():
    with pytest.raises(DataError, match="this is prompts: stage sft trains on conversations"):
        get_stage("sft").check_records([prompt({"instruction": "Q"})])
    assert not get_stage("sft").trains_on_prompts


def test_pairs_stay_pairs_with_prompts_on():
    rec = prompt({"instruction": "Q", "chosen": "a", "rejected": "b"})
    assert record_kind(rec) == "pairwise"
