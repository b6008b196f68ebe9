"""Rows with tool schemas and tool calls: parsed tools reach the template, every named template shows them, and
training ids stay equal to `apply_chat_template(messages, tools=tools, tokenize=True)`."""

from __future__ import annotations

from pathlib import Path

import pytest
import trl

from tuneforge.data.catalog import DatasetSpec, load_dataset
from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE, render_chat, render_records, template_messages
from tuneforge.data.templates import TEMPLATES, ensure_chat_template, render_prompt
from tuneforge.models.load import load_tokenizer
from tuneforge.utils.errors import DataError

WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
TOOL_ROW = Record(messages=[{"role": "user", "content": "Weather in Oslo?"},
                            {"role": "function_call", "content": CALL},
                            {"role": "observation", "content": '{"sky": "rain"}'},
                            {"role": "assistant", "content": "It rains in Oslo."}],
                  tools=[WEATHER], source="t.json:3")
# Qwen2.5's own tool-aware template, as shipped inside the installed trl package (read, not copied)
QWEN25_JINJA = Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja"


@pytest.fixture(scope="module")
def tok(shared):
    # SmolLM2's byte-level tokenizer spells JSON exactly (the tiny TinyStories vocabulary has no braces)
    return load_tokenizer(str(shared / "models" / "smollm2-135m-instruct-q4_1-gguf"))


@pytest.fixture(scope="module")
def glaive(demo_data):
    path = demo_data / "llamafactory_demo" / "glaive_toolcall_en_demo.json"
    return load_dataset(DatasetSpec(path=str(path), max_samples=12)).records


def _split(tok, r):
    trained = tok.decode([t for t, lab in zip(r.input_ids, r.labels) if lab != IGNORE])
    prompt = tok.decode([t for t, lab in zip(r.input_ids, r.labels) if lab == IGNORE])
    return trained, prompt


def _expected_ids(tok, rec):
    return list(tok.apply_chat_template(template_messages(rec.messages, tok), tools=rec.tools, tokenize=True,
                                        return_dict=True)["input_ids"])


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_named_templates_show_tools_and_train_the_call(tok, name):
    ensure_chat_template(tok, name)
    r = render_chat(TOOL_ROW, tok)
    expected = _expected_ids(tok, TOOL_ROW)
    assert r.input_ids[:len(expected)] == expected and len(r.input_ids) - len(expected) in (0, 1)  # + eos
    trained, prompt = _split(tok, r)
    assert '"name": "get_weather"' in prompt and "Weather of a city" in prompt and '"arguments"' in prompt
    assert CALL in trained and "It rains in Oslo." in trained  # the call and the final answer are learned
    assert "rain" not in trained.replace("It rains in Oslo.", "")  # the tool result is input, not target
    assert "Weather in Oslo?" not in trained
    # without tools the prompt is what it was: no tool instruction leaks into plain conversations
    plain = render_prompt(tok, [{"role": "user", "content": "Hi"}])
    assert "get_weather" not in plain and "call" not in plain
    assert "get_weather" in render_prompt(tok, [{"role": "user", "content": "Hi"}], tools=[WEATHER])


def test_glaive_toolcall_demo_renders_token_exact_with_named_template(tok, glaive):
    ensure_chat_template(tok, "chatml")
    assert any(r.tools for r in glaive) and any(not r.tools for r in glaive)
    out, stats = render_records(glaive, tok, mask="assistant", cutoff=4096)
    assert stats.kept == len(glaive) == 12
    for rec, r in zip(glaive, out):
        expected = _expected_ids(tok, rec)
        assert r.input_ids[:len(expected)] == expected
        if rec.tools:
            assert rec.tools[0]["name"] in _split(tok, r)[1]


def test_own_tool_aware_template_is_token_exact(tok, glaive):
    tok.chat_template = QWEN25_JINJA.read_text(encoding="utf-8")
    try:
        rec = next(r for r in glaive if r.tools and any(m["role"] == "function_call" for m in r.messages))
        r = render_chat(rec, tok)
        expected = _expected_ids(tok, rec)
        assert r.input_ids[:len(expected)] == expected
        trained, prompt = _split(tok, r)
        assert "<tools>" in prompt and rec.tools[0]["name"] in prompt
        assert '<tool_call>\n{"name": "' + rec.tools[0]["name"] in trained  # structured tool_calls, not raw text
        assert "<tool_response>" in prompt and "<tool_response>" not in trained
    finally:
        tok.chat_template = None


def test_template_that_ignores_tools_is_an_error_not_a_silent_loss(tok):
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    try:
        with pytest.raises(DataError) as e:
            render_chat(TOOL_ROW, tok)
        assert e.value.file == "t.json:3" and e.value.field == "tools" and "model.template" in e.value.hint
        plain = Record(messages=TOOL_ROW.messages, source="t.json:4")
        assert CALL in _split(tok, render_chat(plain, tok))[0]  # no tools: the call is trained as text
    finally:
        tok.chat_template = None
