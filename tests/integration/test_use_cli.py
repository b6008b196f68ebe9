"""`tuneforge chat / generate / export` through typer's CliRunner on the 656K TinyStories model."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.infer.engine import Engine
from tuneforge.utils.errors import ConfigError, DataError, ModelError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_chat_reads_stdin_one_message_per_line(runner, tiny_model):
    result = runner.invoke(app, ["chat", "--model", tiny_model, "--template", "chatml", "--max-new-tokens", "8",
                                 "--system", "Tell stories."],
                           input="Once upon a time\n/reset\n\nTom had a ball\n/exit\nnever read\n")
    assert result.exit_code == 0, result.output
    engine = Engine.load(tiny_model, template="chatml", device="cpu")
    first = engine.generate([[{"role": "system", "content": "Tell stories."},
                              {"role": "user", "content": "Once upon a time"}]], max_new_tokens=8)[0].text
    after_reset = engine.generate([[{"role": "system", "content": "Tell stories."},
                                    {"role": "user", "content": "Tom had a ball"}]], max_new_tokens=8)[0].text
    assert result.stdout == f"{first}\n{after_reset}\n"


def test_chat_without_template_says_which_to_pick(runner, tiny_model):
    result = runner.invoke(app, ["chat", "--model", tiny_model], input="Hi\n")
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "--template" in str(result.exception)


def test_generate_writes_jsonl_in_order_and_refuses_overwrite(runner, tiny_model, tmp_path):
    data = tmp_path / "eval.jsonl"
    rows = [{"instruction": "Tell a story about a cat", "input": "", "output": "A cat sat."},
            {"instruction": "Once upon a time", "output": "there was a dog."},
            {"instruction": "Say hi", "system": "Be kind.", "output": "Hi!"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pred.jsonl"
    args = ["generate", "--model", tiny_model, "--template", "alpaca", "--data", str(data), "--out", str(out),
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


def test_generate_accepts_prompts_and_messages_without_answers(runner, tiny_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "The sun"}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["generate", "-m", tiny_model, "-t", "chatml", "-d", str(data), "-o", str(out),
                                 "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["messages"][-1]["content"] for g in got] == ["The sun", "Hi"]
    assert all(g["reference"] is None for g in got)


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    """A run folder as training leaves it: run.json recording the base as an alias, adapter/ with its tokenizer."""
    from peft import LoraConfig, get_peft_model

    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models.load import load_model, load_tokenizer

    torch.manual_seed(0)
    peft_model = get_peft_model(load_model(tiny_model, device="cpu"), LoraConfig(r=4, target_modules=["q_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    run = tmp_path_factory.mktemp("runs") / "story"
    peft_model.save_pretrained(run / "adapter")
    tok = load_tokenizer(tiny_model)
    ensure_chat_template(tok, "chatml")
    tok.save_pretrained(run / "adapter")
    (run / "run.json").write_text(json.dumps({"status": "succeeded", "run_id": None, "base_model": "tinystories-656k"}))
    return run


def test_export_merges_and_refuses_non_empty_out(runner, tiny_model, run_dir, tmp_path):
    out = tmp_path / "merged"
    args = ["export", "--model", tiny_model, "--adapter", str(run_dir), "--out", str(out), "-t", "chatml"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and "max |Δlogit|" in result.stderr
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0 and isinstance(refused.exception, ModelError)
    assert "refusing to overwrite" in str(refused.exception)


def test_the_base_model_is_read_from_the_run(runner, tiny_model, run_dir, tmp_path):
    chat = ["chat", "--adapter", str(run_dir), "--max-new-tokens", "6"]
    without = runner.invoke(app, chat, input="Once upon a time\n")
    assert without.exit_code == 0, without.output
    assert "base model tinystories-656k (from" in without.stderr and "run.json" in without.stderr
    with_model = runner.invoke(app, [*chat, "--model", tiny_model], input="Once upon a time\n")
    assert without.stdout == with_model.stdout and without.stdout.strip()

    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "The sun"}) + "\n")
    gen = runner.invoke(app, ["generate", "-a", str(run_dir / "adapter"), "-d", str(data),
                              "-o", str(tmp_path / "o.jsonl"), "--max-new-tokens", "3"])
    assert gen.exit_code == 0, gen.output
    exported = runner.invoke(app, ["export", "-a", str(run_dir), "-o", str(tmp_path / "merged")])
    assert exported.exit_code == 0, exported.output
    assert json.loads((tmp_path / "merged" / "tuneforge_export.json").read_text())["base"] == "tinystories-656k"


def test_unknown_base_model_is_a_clear_error(runner, run_dir, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(run_dir / "adapter", adapter)  # no run.json beside it
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "/gone/model"}))
    result = runner.invoke(app, ["chat", "--adapter", str(adapter)], input="Hi\n")
    assert isinstance(result.exception, ModelError), result.output
    assert "/gone/model" in str(result.exception) and "--model" in result.exception.hint
    bare = runner.invoke(app, ["chat"], input="Hi\n")
    assert isinstance(bare.exception, ModelError) and "--model" in str(bare.exception)


def test_generate_sampling_options_are_seeded(runner, tiny_model, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("The sun", "Tom had", "Lily saw a")))

    def run(*extra):
        out = tmp_path / "o.jsonl"
        result = runner.invoke(app, ["generate", "-m", tiny_model, "-t", "chatml", "-d", str(data), "-o", str(out),
                                     "--overwrite", "--max-new-tokens", "8", *extra])
        assert result.exit_code == 0, result.output
        return [json.loads(line)["prediction"] for line in out.read_text().splitlines()]

    sampled = ["--temperature", "1.0", "--top-p", "0.95", "--repetition-penalty", "1.1"]
    assert run(*sampled, "--seed", "1") == run(*sampled, "--seed", "1")
    assert run(*sampled, "--seed", "1") != run(*sampled, "--seed", "2")
    assert run("--repetition-penalty", "3") != run()
    bad = runner.invoke(app, ["generate", "-m", tiny_model, "-d", str(data), "-o", str(tmp_path / "x.jsonl"),
                              "--top-p", "0"])
    assert isinstance(bad.exception, ConfigError) and "top_p" in str(bad.exception)


def test_help_texts_name_formats_and_defaults(runner):
    sampling = ["--top-p", "--seed", "--repetition-penalty", "recorded base"]
    for cmd, words in {"chat": ["/reset", "/exit", "stdin", *sampling],
                       "generate": ["alpaca", "messages", "prompt", "--overwrite", *sampling],
                       "export": ["1e-3", "--overwrite", "generation_config", "recorded base"]}.items():
        result = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert all(w in result.stdout for w in words), (cmd, result.stdout)


def test_generate_shows_a_rows_tools_in_its_prompt_as_training_does(runner, tiny_model, tmp_path):
    tools = [{"name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    row = {"conversations": [{"from": "human", "value": "Weather in Oslo?"}, {"from": "gpt", "value": "Sunny."}],
           "tools": json.dumps(tools)}
    data, out = tmp_path / "tools.jsonl", tmp_path / "out.jsonl"
    data.write_text(json.dumps(row) + "\n")
    result = runner.invoke(app, ["generate", "-m", tiny_model, "-t", "chatml", "-d", str(data), "-o", str(out),
                                 "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    prompt = json.loads(out.read_text())["prompt"]
    assert "get_weather" in prompt and prompt.endswith("<|im_start|>assistant\n")
    engine = Engine.load(tiny_model, template="chatml", device="cpu")
    from tuneforge.data.templates import render_prompt

    assert prompt == render_prompt(engine.tokenizer, [{"role": "user", "content": "Weather in Oslo?"}], tools)
