"""Row → Record conversion for every supported format, and the validation errors users see."""

from __future__ import annotations

import json

import pytest

from tuneforge.data.formats import resolve_format, to_record
from tuneforge.utils.errors import DataError


def convert(row, fmt="auto", **kw):
    return to_record(row, resolve_format(fmt, row, **kw), file="d.json", line=7)


def err(row, fmt="auto", **kw) -> DataError:
    with pytest.raises(DataError) as e:
        convert(row, fmt, **kw)
    assert e.value.file == "d.json" and e.value.line == 7
    return e.value


U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731


# --- alpaca -------------------------------------------------------------------------------------------------------

def test_alpaca_with_system_history_and_input_joined_by_newline():
    rec = convert({"instruction": "Translate", "input": "chat", "output": "cat", "system": "Be brief.",
                   "history": [["hi", "hello"], ["again", "yes"]], "category": "zoo"})
    assert rec.messages == [{"role": "system", "content": "Be brief."}, U("hi"), A("hello"), U("again"), A("yes"),
                            U("Translate\nchat"), A("cat")]
    assert rec.extra == {"category": "zoo"} and rec.source == "d.json:7"
    assert rec.text is None and rec.chosen is None and rec.label is None


def test_alpaca_empty_input_and_empty_system_add_nothing():
    rec = convert({"instruction": "Q", "input": "", "output": "A", "system": ""})
    assert rec.messages == [U("Q"), A("A")]
    assert convert({"input": "only input", "output": "A"}, "alpaca").messages == [U("only input"), A("A")]


def test_alpaca_custom_columns_like_llamafactory():
    cols = {"prompt": "question", "query": "ctx", "response": "answer", "system": "sys", "history": "past"}
    rec = convert({"question": "Q", "ctx": "C", "answer": "A", "sys": "S", "past": [["u", "a"]]}, columns=cols)
    assert rec.messages == [{"role": "system", "content": "S"}, U("u"), A("a"), U("Q\nC"), A("A")]
    assert rec.extra == {}


def test_alpaca_validation_errors_name_field():
    e = err({"instruction": "Q", "input": ""}, "alpaca")
    assert e.field == "output" and "missing required field" in str(e)
    e = err({"instruction": "Q", "output": 3})
    assert e.field == "output" and "wrong type" in str(e) and "int" in str(e)
    e = err({"instruction": " ", "input": "", "output": "A"})
    assert e.field == "instruction" and "empty" in str(e)
    e = err({"instruction": "Q", "output": "  "})
    assert e.field == "output" and "empty assistant answer" in str(e)
    e = err({"instruction": "Q", "output": "A", "history": "not a list"})
    assert e.field == "history" and "wrong type" in str(e)
    e = err({"instruction": "Q", "output": "A", "history": [["only one"]]})
    assert e.field == "history[0]"
    assert "d.json:7 field 'output'" in str(err({"instruction": "Q", "output": None}, "alpaca"))


def test_prompt_completion_rows():
    assert convert({"prompt": "P", "completion": "C"}).messages == [U("P"), A("C")]


# --- sharegpt -----------------------------------------------------------------------------------------------------

def test_sharegpt_tool_calls_roles_tools_and_system_column():
    row = {"conversations": [{"from": "human", "value": "weather?"}, {"from": "function_call", "value": "{}"},
                             {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}],
           "system": "sys", "tools": '[{"name": "w"}]'}
    rec = convert(row)
    assert [m["role"] for m in rec.messages] == ["system", "user", "function_call", "observation", "assistant"]
    assert rec.messages[0]["content"] == "sys" and rec.tools == [{"name": "w"}]
    assert convert({**row, "tools": [{"name": "w"}]}).tools == [{"name": "w"}]


def test_tools_are_parsed_into_a_list_of_schemas():
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    fn = {"type": "function", "function": {"name": "w", "parameters": {}}}
    assert convert({**row, "tools": json.dumps([fn])}).tools == [fn]
    assert convert({**row, "tools": {"name": "w"}}).tools == [{"name": "w"}]  # one schema object
    assert convert({**row, "tools": json.dumps({"name": "w"})}).tools == [{"name": "w"}]
    for empty in ("", "  ", "[]", []):  # LLaMA-Factory writes "[]" for rows without tools
        assert convert({**row, "tools": empty}).tools is None
    e = err({**row, "tools": '[{"name": "w"'})
    assert e.field == "tools" and "not valid JSON" in str(e) and "d.json:7 field 'tools'" in str(e)
    e = err({**row, "tools": '"just text"'})
    assert e.field == "tools" and "expected a list of tool schemas" in str(e)
    e = err({**row, "tools": [{"name": "w"}, {"description": "no name"}]})
    assert e.field == "tools[1]" and "'name'" in str(e)
    e = err({**row, "tools": 3})
    assert e.field == "tools" and "wrong type" in str(e)
    e = err({**row, "fns": "{oops"}, columns={"tools": "fns"})
    assert e.field == "fns"


def test_records_with_parsed_tools_fingerprint_and_dedupe():
    from tuneforge.data.catalog import fingerprint
    from tuneforge.data.doctor.text import content_key

    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    a = convert({**row, "tools": '[{"name": "w"}]'})
    b = convert({**row, "tools": [{"name": "w"}]})
    c = convert({**row, "tools": [{"name": "v"}]})
    assert fingerprint([a]) == fingerprint([b]) != fingerprint([c])
    assert content_key(a) == content_key(b) != content_key(c)


def test_sharegpt_leading_system_message_wins_over_column():
    row = {"conversations": [{"from": "system", "value": "inline"}, {"from": "human", "value": "q"},
                             {"from": "gpt", "value": "a"}], "system": "column"}
    assert convert(row).messages == [{"role": "system", "content": "inline"}, U("q"), A("a")]


def test_sharegpt_custom_tags_and_messages_column():
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "Q", "assistant_tag": "R", "system_tag": "S"}
    row = {"dialog": [{"speaker": "S", "text": "sys"}, {"speaker": "Q", "text": "hi"}, {"speaker": "R", "text": "yo"}]}
    rec = convert(row, "sharegpt", columns={"messages": "dialog"}, tags=tags)
    assert rec.messages == [{"role": "system", "content": "sys"}, U("hi"), A("yo")]


def test_sharegpt_validation():
    conv = lambda *turns: {"conversations": [{"from": f, "value": v} for f, v in turns]}  # noqa: E731
    e = err(conv(("human", "a"), ("human", "b"), ("gpt", "c")))
    assert e.field == "conversations[1]" and "out of order" in str(e)
    e = err(conv(("gpt", "a")))
    assert e.field == "conversations[0]" and "out of order" in str(e)
    e = err(conv(("human", "a"), ("bot", "b")))
    assert e.field == "conversations[1].from" and "unknown role 'bot'" in str(e)
    e = err(conv(("human", "a"), ("gpt", "b"), ("human", "c")))
    assert "instead of an assistant answer" in str(e)
    e = err(conv(("human", "a"), ("gpt", "")))
    assert "empty assistant answer" in str(e) and e.field == "conversations[1]"
    e = err({"conversations": "hello"}, "sharegpt")
    assert e.field == "conversations" and "wrong type" in str(e)
    e = err({"conversations": []}, "sharegpt")
    assert "empty conversation" in str(e)
    e = err({"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "x"}]})
    assert e.field == "conversations[0].value"
    e = err({"conversations": [{"role": "user", "content": "x"}]}, "sharegpt")
    assert "has no 'from' key" in str(e) and "role_tag" in e.hint


# --- openai -------------------------------------------------------------------------------------------------------

def test_openai_messages_with_tools_and_content_parts():
    row = {"messages": [
        {"role": "developer", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "weather in "}, {"type": "text", "text": "Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "content": "rain"},
        {"role": "assistant", "content": "Rain."}], "tools": [{"type": "function", "function": {"name": "w"}}],
        "id": 5}
    rec = convert(row)
    assert rec.messages == [{"role": "system", "content": "sys"}, U("weather in Oslo?"),
                            {"role": "function_call", "content": '{"name": "w", "arguments": {"city": "Oslo"}}'},
                            {"role": "tool", "content": "rain"}, A("Rain.")]
    assert rec.tools == [{"type": "function", "function": {"name": "w"}}] and rec.extra == {"id": 5}


def test_openai_validation():
    e = err({"messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]})
    assert e.field == "messages[1].role" and "unknown role" in str(e)
    e = err({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": 1}]}, "openai")
    assert e.field == "messages[1].content"
    e = err({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                          {"role": "assistant", "content": "a"}]})
    assert "image_url" in str(e)


# --- text, preference, KTO ----------------------------------------------------------------------------------------

def test_text_rows_with_configurable_column():
    assert convert({"text": "hello world", "meta": 1}).text == "hello world"
    rec = convert({"content": "doc"}, "text", columns={"prompt": "content"})  # LLaMA-Factory pt style
    assert rec.text == "doc" and rec.messages == []
    assert convert({"body": "b"}, "text", columns={"text": "body"}).text == "b"
    e = err({"text": "  "})
    assert e.field == "text" and "empty text" in str(e)
    assert err({"txt": "x"}, "text").field == "text"


def test_alpaca_preference_pairs():
    rec = convert({"instruction": "Q", "chosen": "good", "rejected": "bad"})
    assert rec.messages == [U("Q")] and rec.chosen == [A("good")] and rec.rejected == [A("bad")]
    e = err({"instruction": "Q", "chosen": "good"}, "pairwise")
    assert e.field == "rejected" and "missing" in str(e)


def test_sharegpt_ranking_pairs():
    row = {"conversations": [{"from": "human", "value": "Q"}],
           "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}
    rec = convert(row)
    assert rec.messages == [U("Q")] and rec.chosen == [A("good")] and rec.rejected == [A("bad")]
    e = err({**row, "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]})
    assert "must end with a user turn" in str(e)
    e = err({**row, "rejected": {"from": "human", "value": "bad"}})
    assert e.field == "rejected" and "expected an assistant" in str(e)


def test_openai_preference_layout():
    row = {"input": {"messages": [U("Q")]}, "preferred_output": [A("good")], "non_preferred_output": [A("bad")]}
    rec = convert(row)
    assert rec.messages == [U("Q")] and rec.chosen == [A("good")] and rec.rejected == [A("bad")]


def test_kto_label():
    rec = convert({"messages": [U("Q"), A("A")], "label": False})
    assert rec.label is False and rec.messages == [U("Q"), A("A")]
    rec = convert({"instruction": "Q", "output": "A", "ok": "true"}, "kto", columns={"kto_tag": "ok"})
    assert rec.label is True and rec.extra == {}
    e = err({"instruction": "Q", "output": "A", "label": "maybe"}, "kto")
    assert e.field == "label"
    e = err({"instruction": "Q", "output": "A", "label": [1]}, "kto")
    assert e.field == "label" and "wrong type" in str(e)


# --- format resolution ---------------------------------------------------------------------------------------------

def test_auto_detection():
    assert resolve_format("auto", {"instruction": "", "output": ""}).name == "alpaca"
    assert resolve_format("auto", {"conversations": [{"from": "human", "value": ""}]}).name == "sharegpt"
    assert resolve_format("auto", {"messages": [{"role": "user", "content": ""}]}).name == "openai"
    assert resolve_format("auto", {"messages": [], "label": True}).name == "openai+kto"
    assert resolve_format("auto", {"text": ""}).name == "text"
    assert resolve_format("auto", {"prompt": "", "chosen": "", "rejected": ""}).name == "alpaca+pairwise"
    assert resolve_format("auto", {"messages": [{"role": "user"}]}, tags={"role_tag": "role"}).kind == "sharegpt"


def test_unknown_format_column_key_and_multimodal():
    with pytest.raises(DataError, match="did you mean 'sharegpt'"):
        resolve_format("sharegtp", {})
    with pytest.raises(DataError, match="did you mean 'response'"):
        resolve_format("alpaca", {}, columns={"respone": "out"})
    with pytest.raises(DataError, match="multimodal"):
        resolve_format("sharegpt", {}, columns={"messages": "m", "images": "images"})
    with pytest.raises(DataError, match="cannot detect"):
        resolve_format("auto", {"foo": 1})
