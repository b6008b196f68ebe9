"""`tuneforge chat / generate / export` through typer's CliRunner on the 656K TinyStories model."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.infer.engine import Engine
from tuneforge.utils.errors import ConfigError, DataError, ModelError


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> str:
    return str(tiny_model_dir)


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_chat_reads_stdin_one_message_per_line(runner, model):
    result = runner.invoke(app, ["chat", "--model", model, "--template", "chatml", "--max-new-tokens", "8",
                                 "--system", "Tell stories."],
                           input="Once upon a time\n/reset\n\nTom had a ball\n/exit\nnever read\n")
    assert result.exit_code == 0, result.output
    engine = Engine.load(model, template="chatml", device="cpu")
    first = engine.generate([[{"role": "system", "content": "Tell stories."},
                              {"role": "user", "content": "Once upon a time"}]], max_new_tokens=8)[0].text
    after_reset = engine.generate([[{"role": "system", "content": "Tell stories."},
                                    {"role": "user", "content": "Tom had a ball"}]], max_new_tokens=8)[0].text
    assert result.stdout == f"{first}\n{after_reset}\n"


def test_chat_without_template_says_which_to_pick(runner, model):
    result = runner.invoke(app, ["chat", "--model", model], input="Hi\n")
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "--template" in str(result.exception)


def test_generate_writes_jsonl_in_order_and_refuses_overwrite(runner, model, tmp_path):
    data = tmp_path / "eval.jsonl"
    rows = [{"instruction": "Tell a story about a cat", "input": "", "output": "A cat sat."},
            {"instruction": "Once upon a time", "output": "there was a dog."},
            {"instruction": "Say hi", "system": "Be kind.", "output": "Hi!"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pred.jsonl"
    args = ["generate", "--model", model, "--template", "alpaca", "--data", str(data), "--out", str(out),
            "--max-new-tokens", "6", "--batch-size", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["index"] for g in got] == [0, 1, 2]
    assert [g["reference"] for g in got] == [r["output"] for r in rows]
    assert got[2]["messages"][0] == {"role": "system", "content": "Be kind."}
    assert got[0]["prompt"].endswith("### Response:\n") and got[0]["source"].endswith("eval.jsonl:1")
    assert all(g["finish_reason"] in ("stop", "length") and g["completion_tokens"] <= 6 for g in got)
    assert all(g["prediction"] and g["prompt_tokens"] > 0 for g in got)

    again = runner.invoke(app, args)
    assert again.exit_code != 0 and isinstance(again.exception, DataError)
    assert "refusing to overwrite" in str(again.exception)
    limited = runner.invoke(app, [*args, "--overwrite", "--limit", "1"])
    assert limited.exit_code == 0 and len(out.read_text().splitlines()) == 1


def test_generate_accepts_prompts_and_messages_without_answers(runner, model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "The sun"}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["generate", "-m", model, "-t", "chatml", "-d", str(data), "-o", str(out),
                                 "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["messages"][-1]["content"] for g in got] == ["The sun", "Hi"]
    assert all(g["reference"] is None for g in got)


def test_export_merges_and_refuses_non_empty_out(runner, model, tmp_path):
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.load import load_model

    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(model, device="cpu"), LoraConfig(r=4, target_modules=["q_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    peft_model.save_pretrained(tmp_path / "run" / "adapter")
    out = tmp_path / "merged"
    args = ["export", "--model", model, "--adapter", str(tmp_path / "run"), "--out", str(out), "-t", "chatml"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and "max |Δlogit|" in result.stderr
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0 and isinstance(refused.exception, ModelError)
    assert "refusing to overwrite" in str(refused.exception)


def test_help_texts_name_formats_and_defaults(runner):
    for cmd, words in {"chat": ["/reset", "/exit", "stdin"], "generate": ["alpaca", "messages", "prompt",
                                                                          "--overwrite"],
                       "export": ["1e-3", "--overwrite", "generation_config"]}.items():
        result = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert all(w in result.stdout for w in words), (cmd, result.stdout)
