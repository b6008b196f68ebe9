"""Chat templates: the model's own is used token-exactly; named templates render turns, markers and stops."""

from __future__ import annotations

import pytest

from tuneforge.data.templates import (
    encode_prompt,
    ensure_chat_template,
    list_templates,
    render_prompt,
    template_name,
    template_stop_strings,
    template_stop_token_ids,
)
from tuneforge.models.load import load_tokenizer
from tuneforge.utils.errors import ConfigError

CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."}]

# name -> (user marker, assistant marker / generation prompt, end of assistant turn)
EXPECTED = {
    "alpaca": ("### Instruction:\nHi there", "### Response:\n", "Hello!<|end_story|>"),
    "chatml": ("<|im_start|>user\nHi there<|im_end|>", "<|im_start|>assistant\n", "Hello!<|im_end|>\n"),
    "qwen": ("<|im_start|>user\nHi there<|im_end|>", "<|im_start|>assistant\n", "Hello!<|im_end|>\n"),
    "llama3": ("<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
               "<|start_header_id|>assistant<|end_header_id|>\n\n", "Hello!<|eot_id|>"),
    "llama2": ("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]", " [/INST]", " Hello! <|end_story|>"),
    "mistral": ("[INST] Be brief.\n\nHi there [/INST]", " [/INST]", "Hello!<|end_story|>"),
    "gemma": ("<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>", "<start_of_turn>model\n",
              "Hello!<end_of_turn>\n"),
    "phi": ("<|user|>\nHi there<|end|>", "<|assistant|>\n", "Hello!<|end|>\n"),
}


@pytest.fixture(scope="module")
def tiny_tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def smol_tok(smollm2_gguf):
    mp = pytest.MonkeyPatch()
    mp.setenv("TUNEFORGE_SMOLLM2_GGUF", str(smollm2_gguf))  # its folder has tokenizer files: no dequantization
    try:
        yield load_tokenizer("smollm2-135m-instruct")
    finally:
        mp.undo()


def test_smollm2_own_template_is_token_exact(smol_tok):
    own = smol_tok.chat_template
    assert ensure_chat_template(smol_tok, "auto") == own
    for messages in (CONV[1:2], CONV[:4], CONV[1:4]):
        expected = smol_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
        assert encode_prompt(smol_tok, messages) == list(expected)
        assert render_prompt(smol_tok, messages).endswith("<|im_start|>assistant\n")
    full = smol_tok.apply_chat_template(CONV, tokenize=True)["input_ids"]
    text = smol_tok.apply_chat_template(CONV, tokenize=False)
    assert smol_tok(text, add_special_tokens=False)["input_ids"] == list(full)
    im_end = smol_tok.convert_tokens_to_ids("<|im_end|>")
    assert "<|im_end|>" in template_stop_strings(smol_tok)
    assert im_end in template_stop_token_ids(smol_tok)
    assert template_name(smol_tok) is None


def test_auto_without_template_errors_with_the_choices(tiny_tok):
    tok = load_tokenizer(tiny_tok.name_or_path)
    with pytest.raises(ConfigError) as err:
        ensure_chat_template(tok, "auto")
    msg = str(err.value)
    assert "has no chat template" in msg and "chatml" in msg and "llama3" in msg
    with pytest.raises(ConfigError, match="no chat template"):
        render_prompt(tok, CONV[1:2])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_template_renders_turns_and_markers(tiny_tok, name):
    ensure_chat_template(tiny_tok, name)
    user, gen_prompt, end_of_answer = EXPECTED[name]
    full = tiny_tok.apply_chat_template(CONV, tokenize=False)
    prompt = render_prompt(tiny_tok, CONV[:4])
    assert user in full and end_of_answer in full and "Blue." in full
    assert prompt.endswith(gen_prompt) and "Name a color." in prompt and "Blue." not in prompt
    assert full.startswith("<|start_story|>")  # this tokenizer adds bos to plain text, so the template does too
    if name not in ("gemma", "mistral", "llama2"):  # those merge the system prompt into the first user turn
        assert "Be brief." in full.split("Hi there")[0]
    for i, m in enumerate(CONV):  # data.render relies on prefixes rendering as prefixes
        if m["role"] == "assistant":
            prefix = tiny_tok.apply_chat_template(CONV[:i], tokenize=False, add_generation_prompt=True)
            upto = tiny_tok.apply_chat_template(CONV[: i + 1], tokenize=False)
            assert upto.startswith(prefix) and full.startswith(upto)
    assert template_name(tiny_tok) == ("alpaca" if name == "default" else name)
    assert tiny_tok.eos_token in template_stop_strings(tiny_tok)
    assert template_stop_token_ids(tiny_tok)[0] == tiny_tok.eos_token_id


def test_named_template_helpers(tiny_tok, tmp_path):
    assert {"default", "alpaca", "chatml", "llama3", "llama2", "mistral", "gemma", "phi"} <= set(list_templates())
    ensure_chat_template(tiny_tok, "default")
    assert "### Instruction:" in template_stop_strings(tiny_tok)
    ensure_chat_template(tiny_tok, "chatml")
    assert template_stop_strings(tiny_tok) == ["<|im_end|>", "<|end_story|>"]
    assert template_stop_token_ids(tiny_tok) == [tiny_tok.eos_token_id]  # <|im_end|> is several tokens here
    ensure_chat_template(tiny_tok, "chatml", default_system="You are terse.")
    assert render_prompt(tiny_tok, CONV[1:2]).count("<|im_start|>system\nYou are terse.<|im_end|>") == 1
    assert "You are terse." not in render_prompt(tiny_tok, CONV[:2])  # an explicit system wins
    ensure_chat_template(tiny_tok, "qwen")
    assert "You are a helpful assistant." in render_prompt(tiny_tok, CONV[1:2])
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}{{ m['content'] }}|{% endfor %}")
    assert ensure_chat_template(tiny_tok, str(jinja)) == jinja.read_text()
    with pytest.raises(ConfigError, match="unknown chat template 'chatlm'"):
        ensure_chat_template(tiny_tok, "chatlm")
    ensure_chat_template(tiny_tok, "gemma")
    with pytest.raises(Exception, match="supports roles"):
        render_prompt(tiny_tok, [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}])


def test_no_bos_when_the_tokenizer_adds_none(smol_tok):
    ensure_chat_template(smol_tok, "llama3")
    try:
        assert render_prompt(smol_tok, CONV[1:2]).startswith("<|start_header_id|>user")
    finally:
        smol_tok.chat_template = load_tokenizer(smol_tok.name_or_path).chat_template
