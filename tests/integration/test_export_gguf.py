"""GGUF export on the 656K TinyStories model: a LoRA adapter merged, written as f16 / q8_0, read back through
transformers (as llama.cpp's format, not through our verifier), compared with the merged folder, and made to answer
like the adapter; the Ollama Modelfile; refusals; and a broken conversion caught by the verification."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from train_helpers import train_sky_adapter
from tuneforge.cli import app
from tuneforge.export import gguf_vocab, gguf_write
from tuneforge.export.gguf import GgufCheckError, export_gguf
from tuneforge.export.gguf_verify import BOUNDS, top1_agreement
from tuneforge.export.parity import max_abs_diff, parity_inputs, sample_logits
from tuneforge.infer.engine import Engine
from tuneforge.models.load import load_tokenizer
from tuneforge.utils.errors import ModelError

pytestmark = pytest.mark.usefixtures("one_thread")

SKY = [{"role": "user", "content": "What color is the sky?"}]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter that answers SKY with "Blue." (8 steps), saved with its chatml tokenizer as a run saves it."""
    out = tmp_path_factory.mktemp("run") / "adapter"
    train_sky_adapter(tiny_model_dir, out, steps=8)
    return out


@pytest.fixture(scope="module")
def sky(tiny_model_dir, adapter_dir, tmp_path_factory):
    """The adapter exported as f16 with a Modelfile, then as q8_0 into the same folder (reusing merged/)."""
    out = tmp_path_factory.mktemp("gguf") / "sky"
    f16 = export_gguf(str(tiny_model_dir), str(adapter_dir), str(out), quant="f16", ollama=True, device="cpu")
    merged_mtime = (out / "merged" / "model.safetensors").stat().st_mtime_ns
    q8 = export_gguf(str(tiny_model_dir), str(adapter_dir), str(out), quant="q8_0", device="cpu")
    assert (out / "merged" / "model.safetensors").stat().st_mtime_ns == merged_mtime  # reused, not merged again
    return out, f16, q8


def _read_back(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _tensor_types(path) -> dict[str, str]:
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_matches_the_merged_model_within_its_bound(sky, quant):
    from transformers import AutoModelForCausalLM

    out, *_ = sky
    path = out / f"sky-{quant}.gguf"
    assert path.is_file() and json.loads((out / f"sky-{quant}.check.json").read_text())["passed"]
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    gguf_model, gguf_tok = _read_back(path)
    tok = load_tokenizer(str(out / "merged"))
    inputs = parity_inputs(tok, 4)
    assert parity_inputs(gguf_tok, 4) == inputs  # the embedded tokenizer + chat template render the same ids
    ref, got = sample_logits(merged, inputs), sample_logits(gguf_model, inputs)
    bound = BOUNDS[quant]
    assert 0 < max_abs_diff(got, ref) <= bound.max_abs_diff  # > 0: the merged weights really were rounded
    assert top1_agreement(got, ref) >= bound.min_top1
    types = _tensor_types(path)
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.weight"] == quant.upper()
    assert "output.weight" not in types  # tied embeddings: one matrix, as llama.cpp expects


def test_f16_gives_the_same_greedy_text_and_keeps_the_adapters_answer(sky, tiny_model_dir, adapter_dir):
    out, f16, q8 = sky
    assert f16.check.greedy_same and f16.check.encoding_diff == 0.0 and q8.check.encoding_diff == 0.0
    reference = Engine.load(str(tiny_model_dir), str(adapter_dir), device="cpu")
    expected = reference.generate([SKY], max_new_tokens=16)[0]
    assert expected.text == "Blue." and expected.finish_reason == "stop"
    for quant in ("f16", "q8_0"):
        answer = Engine(*_read_back(out / f"sky-{quant}.gguf")).generate([SKY], max_new_tokens=16)[0]
        assert (answer.text, answer.finish_reason) == ("Blue.", "stop"), quant


def test_gguf_metadata_carries_the_tokenizer_and_chat_template(sky, adapter_dir):
    from gguf import GGUFReader

    out, *_ = sky
    fields = GGUFReader(str(out / "sky-f16.gguf")).fields
    value = lambda key: fields[key].contents()  # noqa: E731
    tok = load_tokenizer(str(adapter_dir))
    assert value("general.architecture") == "llama" and value("tokenizer.ggml.model") == "llama"
    assert value("tokenizer.chat_template") == tok.chat_template and "tuneforge template: chatml" in tok.chat_template
    assert (value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.eos_token_id")) == (1, 2)
    assert value("tokenizer.ggml.add_bos_token") is True and len(value("tokenizer.ggml.tokens")) == 2048
    assert value("llama.attention.head_count_kv") == 4 and value("general.file_type") == 1  # MOSTLY_F16


def test_ollama_modelfile_for_chatml(sky):
    out, f16, q8 = sky
    assert q8.modelfile is None and not (out / "sky-q8_0.Modelfile").exists()
    assert (out / "sky-f16.Modelfile").read_text() == (
        "# Ollama Modelfile written by tuneforge (chatml chat template).\n"
        "# ollama create NAME -f sky-f16.Modelfile\n"
        "FROM ./sky-f16.gguf\n"
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
        '{{ end }}<|im_start|>assistant\n"""\n'
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|end_story|>"\n')


def test_existing_files_are_never_overwritten(sky, tiny_model_dir, adapter_dir):
    out, *_ = sky
    before = (out / "sky-f16.gguf").read_bytes()
    with pytest.raises(ModelError, match="never overwrites"):
        export_gguf(str(tiny_model_dir), str(adapter_dir), str(out), quant="f16", device="cpu")
    assert (out / "sky-f16.gguf").read_bytes() == before
    with pytest.raises(ModelError, match="holds another merge"):  # merged/ is chatml: not reused for alpaca
        export_gguf(str(tiny_model_dir), str(adapter_dir), str(out), quant="q4_0", template="alpaca", device="cpu")
    assert not (out / "sky-q4_0.gguf").exists()


@pytest.mark.parametrize("breakage", ["no rotary permutation", "tokenizer merges lost"])
def test_a_broken_conversion_fails_verification_and_is_flagged(tiny_model_dir, adapter_dir, tmp_path, monkeypatch,
                                                               breakage):
    if breakage == "no rotary permutation":
        monkeypatch.setattr(gguf_write, "permute_rows", lambda w, n_head: w)
        expected = "conversion bug"
    else:
        real = gguf_vocab.write_vocab
        monkeypatch.setattr(gguf_vocab, "write_vocab", lambda w, v: real(w, gguf_vocab.GgufVocab(
            **{**v.__dict__, "merges": v.merges[: len(v.merges) // 2]})))
        expected = "renders the sample conversations to different token ids"
    out = tmp_path / "broken"
    with pytest.raises(GgufCheckError, match=expected):
        export_gguf(str(tiny_model_dir), str(adapter_dir), str(out), quant="f16", ollama=True, device="cpu")
    assert (out / "broken-f16.gguf.failed").is_file() and not (out / "broken-f16.gguf").exists()
    assert not (out / "broken-f16.Modelfile").exists()
    assert json.loads((out / "broken-f16.check.json").read_text())["passed"] is False


def test_refusals_come_before_any_work(tiny_model_dir, adapter_dir, tmp_path):
    with pytest.raises(ModelError, match="cannot quantize K-quants") as err:
        export_gguf(str(tiny_model_dir), str(adapter_dir), str(tmp_path / "k"), quant="q4_k_m")
    assert "llama-quantize" in err.value.hint
    with pytest.raises(ModelError, match="unknown --quant q3"):
        export_gguf(str(tiny_model_dir), None, str(tmp_path / "u"), quant="q3")
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelError, match="GGUF export supports LlamaForCausalLM.*GPT2LMHeadModel"):
        export_gguf(str(other), None, str(tmp_path / "g"), quant="f16")
    assert not any((tmp_path / name).exists() for name in ("k", "u", "g"))


def test_ollama_refuses_a_template_it_cannot_translate(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="not one tuneforge can translate.*chatml, llama3"):
        export_gguf(str(tiny_model_dir), None, str(tmp_path / "alpaca"), template="alpaca", ollama=True,
                    device="cpu")
    assert not list((tmp_path / "alpaca").glob("*.gguf*"))  # refused before the GGUF was written


def _qwen2_style_tokenizer(shared, folder):
    """A 1,024-token byte-level BPE with Qwen2's text splitter, cut from SmolLM2's vocabulary: a real Qwen2-style
    tokenizer small enough to read back from a GGUF in a second (transformers reads a qwen2 GGUF only with a
    byte-level tokenizer)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    spec = json.loads((shared / "models" / "smollm2-135m-instruct-q4_1-gguf" / "tokenizer.json").read_text())
    vocab = {t: i for t, i in spec["model"]["vocab"].items() if i < 1024}
    merges = [tuple(m) for m in spec["model"]["merges"] if {m[0], m[1], m[0] + m[1]} <= vocab.keys()]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            unk_token="<|endoftext|>", additional_special_tokens=["<|im_start|>"]
                            ).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_other_architectures_round_trip(arch, shared, tiny_model_dir, tmp_path):
    """Tiny random Mistral (llama layout, TinyStories' SentencePiece-style tokenizer) and Qwen2 (q/k/v biases, a
    Qwen2-style byte-level tokenizer), each exported as f32 and q8_0 with a chatml Modelfile."""
    from gguf import GGUFReader
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from tuneforge.data.templates import ensure_chat_template

    tok_dir = tiny_model_dir if arch == "mistral" else _qwen2_style_tokenizer(shared, tmp_path / "tok")
    tok = load_tokenizer(str(tok_dir))
    ensure_chat_template(tok, "chatml")
    sizes = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    if arch == "mistral":
        model = MistralForCausalLM(MistralConfig(**sizes, sliding_window=None))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**sizes))
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    model.save_pretrained(tmp_path / arch)
    tok.save_pretrained(tmp_path / arch)
    for quant in ("f32", "q8_0"):
        result = export_gguf(str(tmp_path / arch), None, str(tmp_path / "out"), quant=quant, ollama=True,
                             device="cpu")
        assert result.check.passed and result.check.encoding_diff == 0.0 and not result.check.problems
    assert result.check.max_abs_diff > 0 and result.write.arch == ("llama" if arch == "mistral" else "qwen2")
    fields = GGUFReader(str(tmp_path / "out" / "out-f32.gguf")).fields
    tokenizer = (fields["tokenizer.ggml.model"].contents(), fields["tokenizer.ggml.pre"].contents())
    assert tokenizer == (("llama", "default") if arch == "mistral" else ("gpt2", "qwen2"))
    if arch == "qwen2":
        assert "blk.0.attn_q.bias" in _tensor_types(tmp_path / "out" / "out-f32.gguf")


def test_cli_writes_a_gguf_and_checks_its_options(tiny_model_dir, adapter_dir, tmp_path):
    runner = CliRunner()
    base = ["export", "-m", str(tiny_model_dir), "-a", str(adapter_dir), "-o", str(tmp_path / "cli"), "--device", "cpu"]
    result = runner.invoke(app, [*base, "--format", "ollama", "--quant", "q8_0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "cli" / "cli-q8_0.gguf") and "top-1" in result.stderr
    assert (tmp_path / "cli" / "cli-q8_0.Modelfile").is_file()
    for extra, message in [(["--quant", "q8_0"], "apply to --format gguf"),
                           (["--format", "gguf", "--overwrite"], "never overwrites"),
                           (["--format", "gguf", "--quant", "q4_k_m"], "K-quants")]:
        refused = runner.invoke(app, [*base, *extra])
        assert refused.exit_code != 0 and message in str(refused.exception), (extra, refused.output)
