"""Rows from feedback on served completions (`tuneforge data from-feedback`): corrections vs thumbs, several
choices, a choice with both, the latest feedback winning; the registry side (projects, unknown ids); and files that
load back through `load_dataset` with the right format and the row's `source` kept in Record.extra."""

from __future__ import annotations

import datetime as dt

import pytest

from tuneforge.data.catalog import load_dataset
from tuneforge.data.from_feedback import collect, output_paths, rows_for, write_rows
from tuneforge.registry.feedback import (
    CompletionNotFound,
    FeedbackView,
    InvalidFeedback,
    RatedCompletion,
    add_feedback,
    completions_with_feedback,
    log_completion,
)
from tuneforge.registry.store import open_store
from tuneforge.registry.testing import temp_registry_url
from tuneforge.utils.errors import DataError

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
ASK = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def _done(answers, *feedback, request=None) -> RatedCompletion:
    """A logged completion with feedback given as (choice_index, rating, correction), oldest first."""
    views = [FeedbackView(i + 1, "chatcmpl-1", rating, correction, index, T0 + dt.timedelta(seconds=i))
             for i, (index, rating, correction) in enumerate(feedback)]
    return RatedCompletion("chatcmpl-1", "default", "tiny", request or {"messages": ASK, "temperature": 0.7},
                           list(answers), T0, views)


def _said(text):
    return [{"role": "assistant", "content": text}]


def _kto(rows):
    return [(r["messages"][-1]["content"], r["label"]) for r in rows]


def _pairs(rows):
    return [(r["preferred_output"][0]["content"], r["non_preferred_output"][0]["content"]) for r in rows]


def test_a_correction_is_an_sft_answer_a_dpo_pair_over_the_original_and_two_kto_rows():
    rows = rows_for(_done(["Lyon."], (0, None, "Paris.")))
    assert [r["messages"] for r in rows["sft"]] == [PROMPT + _said("Paris.")]  # developer → system
    assert _pairs(rows["dpo"]) == [("Paris.", "Lyon.")] and rows["dpo"][0]["input"] == {"messages": PROMPT}
    assert sorted(_kto(rows["kto"])) == [("Lyon.", False), ("Paris.", True)]  # the corrected answer is a negative
    assert rows["sft"][0]["source"] == {"kind": "feedback", "completion_id": "chatcmpl-1", "model": "tiny",
                                        "choice_index": 0, "signal": "correction"}


def test_thumbs_up_is_sft_and_positive_kto_thumbs_down_only_negative_kto():
    up = rows_for(_done(["Paris."], (0, 1, None)))
    assert [r["messages"] for r in up["sft"]] == [PROMPT + _said("Paris.")]
    assert (up["dpo"], _kto(up["kto"])) == ([], [("Paris.", True)])
    down = rows_for(_done(["Lyon."], (0, -1, None)))
    assert (down["sft"], down["dpo"], _kto(down["kto"])) == ([], [], [("Lyon.", False)])
    assert down["kto"][0]["source"]["signal"] == "downvote"


def test_several_choices_pair_the_upvoted_answer_over_the_downvoted_one():
    rows = rows_for(_done(["Paris.", "Lyon.", "Nice."], (0, 1, None), (1, -1, None)))
    assert _pairs(rows["dpo"]) == [("Paris.", "Lyon.")]
    assert rows["dpo"][0]["source"]["choice_index"] == 0 and rows["dpo"][0]["source"]["rejected_choice_index"] == 1
    assert [r["messages"][-1]["content"] for r in rows["sft"]] == ["Paris."]
    assert _kto(rows["kto"]) == [("Paris.", True), ("Lyon.", False)]  # choice 2 had no feedback: no row


def test_a_choice_with_both_a_rating_and_a_correction():
    down = rows_for(_done(["Lyon."], (0, -1, None), (0, None, "Paris.")))
    assert [r["messages"][-1]["content"] for r in down["sft"]] == ["Paris."]
    assert _pairs(down["dpo"]) == [("Paris.", "Lyon.")]
    assert sorted(_kto(down["kto"])) == [("Lyon.", False), ("Paris.", True)]
    up = rows_for(_done(["Paris"], (0, 1, "Paris, France.")))  # liked, and improved: the correction is trained on
    assert [r["messages"][-1]["content"] for r in up["sft"]] == ["Paris, France."]
    assert _pairs(up["dpo"]) == [("Paris, France.", "Paris")]
    assert sorted(_kto(up["kto"])) == [("Paris", True), ("Paris, France.", True)]


def test_the_latest_rating_wins_and_a_correction_equal_to_the_answer_is_an_upvote():
    changed = rows_for(_done(["Lyon."], (0, 1, None), (0, -1, None)))
    assert (changed["sft"], _kto(changed["kto"])) == ([], [("Lyon.", False)])
    same = rows_for(_done(["Paris."], (0, None, " Paris. ")))
    assert ([r["messages"][-1]["content"] for r in same["sft"]], same["dpo"]) == (["Paris."], [])
    assert _kto(same["kto"]) == [("Paris.", True)]


def test_equal_greedy_choices_give_one_row_each_and_tools_are_kept():
    request = {"messages": ASK, "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}
    rows = rows_for(_done(["Paris.", "Paris."], (0, 1, None), (1, 1, None), request=request))
    assert len(rows["sft"]) == 1 and len(rows["kto"]) == 1 and rows["dpo"] == []
    assert rows["sft"][0]["tools"] == request["tools"]


@pytest.fixture
def store(tmp_path):
    with temp_registry_url("sqlite", tmp_path) as url:
        yield open_store(url)


def test_feedback_is_per_project_and_checked(store):
    log_completion(store, "chatcmpl-a", "default", "tiny", {"messages": ASK}, ["Lyon.", "Paris."])
    assert not log_completion(store, "chatcmpl-a", "default", "tiny", {"messages": ASK}, ["x"])  # logged once
    with pytest.raises(CompletionNotFound):
        add_feedback(store, "chatcmpl-a", "other-project", 1, None)
    with pytest.raises(CompletionNotFound):
        add_feedback(store, "chatcmpl-nope", "default", 1, None)
    with pytest.raises(InvalidFeedback) as err:
        add_feedback(store, "chatcmpl-a", "default", 1, None, choice_index=2)
    assert err.value.param == "choice_index"
    with pytest.raises(InvalidFeedback):
        add_feedback(store, "chatcmpl-a", "default", None, "  ")
    saved = add_feedback(store, "chatcmpl-a", "default", -1, "Paris.", choice_index=0)
    assert (saved.id, saved.rating, saved.correction) == (1, -1, "Paris.")
    assert [c.id for c in completions_with_feedback(store, model="tiny", project="default")] == ["chatcmpl-a"]
    assert completions_with_feedback(store, project="other-project") == []
    assert completions_with_feedback(store, since=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)) == []


def test_written_files_load_with_the_right_format_and_keep_the_source(store, tmp_path):
    log_completion(store, "chatcmpl-a", "default", "tiny", {"messages": ASK}, ["Lyon.", "Paris."])
    log_completion(store, "chatcmpl-b", "default", "tiny", {"messages": ASK}, ["Nice."])  # no feedback
    prefill = {"messages": ASK + [{"role": "assistant", "content": "The capital is"}]}  # ends on the answer side
    log_completion(store, "chatcmpl-c", "default", "tiny", prefill, [" Paris."])
    log_completion(store, "chatcmpl-d", "default", "other-model", {"messages": ASK}, ["Paris."])
    add_feedback(store, "chatcmpl-a", "default", -1, None, 0)
    add_feedback(store, "chatcmpl-a", "default", 1, None, 1)
    add_feedback(store, "chatcmpl-c", "default", 1, None, 0)
    add_feedback(store, "chatcmpl-d", "default", 1, None, 0)
    result = collect(store, "tiny")
    assert (result.logged, result.used, result.unused) == (3, 1, 2)  # b: no feedback; c: no readable row
    assert any(d.startswith("chatcmpl-c (sft)") for d in result.dropped)
    paths = output_paths(tmp_path / "fb.jsonl", "all")
    assert [p.name for p in paths.values()] == ["fb.sft.jsonl", "fb.dpo.jsonl", "fb.kto.jsonl"]
    assert write_rows(result, paths) == paths
    expected = {"sft": ("openai", 1), "dpo": ("openai+pairwise", 1), "kto": ("openai+kto", 2)}
    for kind, path in paths.items():
        loaded = load_dataset({"path": str(path)})
        assert (loaded.format, len(loaded.records)) == expected[kind]
        assert loaded.records[0].extra["source"]["completion_id"] == "chatcmpl-a"
    pair = load_dataset({"path": str(paths["dpo"])}).records[0]
    assert (pair.chosen[0]["content"], pair.rejected[0]["content"]) == ("Paris.", "Lyon.")
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_rows(result, output_paths(tmp_path / "fb.kto.jsonl", "kto"))
