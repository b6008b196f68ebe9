"""Parts of the GGUF export that need no model: chat template → Ollama family, tokenizer kinds, quant choices."""

from __future__ import annotations

import numpy as np
import pytest

from tuneforge.data.templates import ensure_chat_template
from tuneforge.export import gguf_vocab
from tuneforge.export.gguf_write import QUANTS, permute_rows, resolve_quant
from tuneforge.export.ollama import match_template, modelfile_text
from tuneforge.models.load import load_tokenizer
from tuneforge.utils.errors import ModelError


@pytest.fixture
def tiny_tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_llama3_template_becomes_the_llama3_modelfile(tiny_tok):
    ensure_chat_template(tiny_tok, "llama3")
    t = match_template(tiny_tok)
    assert t.family.name == "llama3" and t.default_system is None and "<|eot_id|>" in t.stops
    text = modelfile_text("m-q8_0.gguf", t)
    assert "FROM ./m-q8_0.gguf\n" in text and 'PARAMETER stop "<|eot_id|>"' in text
    assert ('TEMPLATE """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}'
            '<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"""') in text


def test_a_default_system_prompt_becomes_SYSTEM(tiny_tok):
    ensure_chat_template(tiny_tok, "qwen")  # chatml that injects 'You are a helpful assistant.' when none is given
    t = match_template(tiny_tok)
    assert (t.family.name, t.default_system) == ("chatml", "You are a helpful assistant.")
    assert 'SYSTEM """You are a helpful assistant."""' in modelfile_text("m.gguf", t)


@pytest.mark.parametrize("template", ["mistral", "alpaca", "smollm2-without-bos"])
def test_templates_ollama_cannot_reproduce_are_refused(tiny_tok, template):
    if template == "smollm2-without-bos":  # chatml text, but llama.cpp would add the bos this tokenizer adds
        tiny_tok.chat_template = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
                                  "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}"
                                  "{{ '<|im_start|>assistant\n' }}{% endif %}")
    else:
        ensure_chat_template(tiny_tok, template)
    with pytest.raises(ModelError, match="supported: chatml, llama3") as err:
        match_template(tiny_tok)
    assert "--jinja" in err.value.hint


def test_sentencepiece_scores_follow_the_merge_order(tiny_tok):
    v = gguf_vocab.vocab_from_tokenizer(tiny_tok, 2048, [])
    assert (v.model, v.pre, v.add_space_prefix, v.add_bos) == ("llama", "default", True, True)
    first = v.merges[0].replace(" ", "")
    later = v.merges[100].replace(" ", "")
    assert v.scores[v.tokens.index(first)] == 0.0 > v.scores[v.tokens.index(later)]
    assert v.types[:3] == [gguf_vocab.UNKNOWN, gguf_vocab.CONTROL, gguf_vocab.CONTROL]
    padded = gguf_vocab.vocab_from_tokenizer(tiny_tok, 2050, [])
    assert padded.tokens[-2:] == ["[PAD2048]", "[PAD2049]"] and padded.types[-1] == gguf_vocab.UNUSED


def test_unknown_text_splitters_are_refused():
    with pytest.raises(ModelError, match="not one llama.cpp is known to reproduce"):
        gguf_vocab._tokenizer_kind({"pre_tokenizer": {"type": "Whitespace"}})
    assert gguf_vocab._tokenizer_kind({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}]}})[:2] == \
        ("gpt2", "smollm")


def test_quant_choices_and_k_quant_refusal():
    assert list(QUANTS) == ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"] and resolve_quant("Q8_0").name == "q8_0"
    with pytest.raises(ModelError, match="cannot quantize K-quants") as err:
        resolve_quant("q4_k_m")
    assert "llama-quantize MODEL-f16.gguf MODEL-q4_k_m.gguf Q4_K_M" in err.value.hint


def test_permutation_interleaves_the_rotary_halves_of_each_head():
    w = np.arange(8, dtype=np.float32).reshape(8, 1)  # 2 heads × 4 rows: halves (0,1 | 2,3) → pairs (0,2,1,3)
    assert permute_rows(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
