"""`tuneforge serve` driven by the official openai client, against a server started on a free loopback port.

The 656K TinyStories base (served as "tiny" with the chatml template) and a small LoRA adapter, given twice: as
`--adapter sky=PATH` and as a finished run under the runs folder ("sky-lora"). `max_adapters=1`, so switching
between the two unloads and reloads adapters on the shared base while answers must stay right. Reference answers
come from `Engine` in this process, with the same settings.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from types import SimpleNamespace

import httpx
import openai
import pytest
from openai import OpenAI

from train_helpers import train_sky_adapter
from tuneforge.data.records import Record
from tuneforge.data.render import render_chat
from tuneforge.infer.engine import Engine
from tuneforge.models.load import load_tokenizer
from tuneforge.serve.app import create_app
from tuneforge.serve.run import check_bind
from tuneforge.serve.settings import ServeSettings
from tuneforge.utils.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

SKY = [{"role": "user", "content": "What color is the sky?"}]
STORY = [{"role": "system", "content": "Tell stories."}, {"role": "user", "content": "Tom had a big red ball and"}]
N = 12


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter trained with plain PEFT to answer SKY with "Blue.", saved with its chatml tokenizer."""
    out = tmp_path_factory.mktemp("run") / "adapter"
    train_sky_adapter(tiny_model_dir, out, steps=8)  # enough to answer "Blue." and end the turn
    return out


@pytest.fixture(scope="module")
def runs_dir(adapter_dir, tiny_model_dir, tmp_path_factory):
    """A runs folder: one finished run on this base, one on another base, one failed run inside a group folder."""
    root = tmp_path_factory.mktemp("runs")
    for name, info in {"sky-lora": {"status": "succeeded", "base_model": str(tiny_model_dir)},
                       "other-base": {"status": "succeeded", "base_model": str(root / "no-such-model")},
                       "group/broken": {"status": "failed", "base_model": str(tiny_model_dir)}}.items():
        shutil.copytree(adapter_dir, root / name / "adapter")
        info = {**info, "final_dir": f"runs/{name}/adapter", "ended": 1_700_000_000}
        (root / name / "run.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter_dir, runs_dir):
    import uvicorn

    settings = ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml",
                             adapters={"sky": str(adapter_dir)}, runs_dir=str(runs_dir), max_adapters=1,
                             device="cpu")
    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", app=app)
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="any-key-is-accepted", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def engines(tiny_model, adapter_dir) -> dict[str, Engine]:
    """In-process references: the model ids of the server → the same model loaded the usual way."""
    adapter = Engine.load(tiny_model, str(adapter_dir), device="cpu")
    return {"tiny": Engine.load(tiny_model, template="chatml", device="cpu"), "sky": adapter, "sky-lora": adapter}


def _chat(client, model, messages=SKY, **kw):
    return client.chat.completions.create(model=model, messages=messages, **kw)


def _streamed(client, model, messages=SKY, **kw):
    """(text per choice, finish_reason per choice, usage) of a streamed chat completion."""
    texts, finish, usage = {}, {}, None
    for chunk in _chat(client, model, messages, stream=True, stream_options={"include_usage": True}, **kw):
        assert chunk.object == "chat.completion.chunk"
        usage = chunk.usage or usage
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return [texts[i] for i in sorted(texts)], [finish[i] for i in sorted(finish)], usage


def test_models_list_base_adapters_and_runs_with_parent_and_root(client, tiny_model_dir, adapter_dir, runs_dir):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"tiny", "sky", "sky-lora"}  # not the run on another base, nor the failed one
    assert models["tiny"].parent is None and models["tiny"].root == str(tiny_model_dir.resolve())
    assert models["sky"].parent == "tiny" and models["sky"].root == str(adapter_dir.resolve())
    assert models["sky-lora"].parent == "tiny"
    assert models["sky-lora"].root == str((runs_dir / "sky-lora" / "adapter").resolve())
    assert models["sky-lora"].created == 1_700_000_000 and models["tiny"].max_model_len == 512
    assert client.models.retrieve("sky-lora").root == models["sky-lora"].root


def test_chat_equals_engine_generate_with_usage_and_finish_reason(client, engines):
    for model in ("tiny", "sky", "sky-lora"):
        for conv in (SKY, STORY):
            r = _chat(client, model, conv, temperature=0, max_tokens=N)
            g = engines[model].generate([conv], max_new_tokens=N)[0]
            assert r.object == "chat.completion" and r.model == model and len(r.choices) == 1
            assert (r.choices[0].message.content, r.choices[0].finish_reason) == (g.text, g.finish_reason)
            assert r.choices[0].message.role == "assistant"
            assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (g.prompt_tokens, g.completion_tokens)
            assert r.usage.total_tokens == g.prompt_tokens + g.completion_tokens
    sky = _chat(client, "sky", SKY, temperature=0, max_tokens=N)  # the adapter ends its turn by itself
    assert sky.choices[0].message.content == "Blue." and sky.choices[0].finish_reason == "stop"
    assert sky.usage.completion_tokens < N
    base = engines["tiny"].generate([STORY], max_new_tokens=N)[0]
    assert base.finish_reason == "length" and base.completion_tokens == N
    long = _chat(client, "tiny", STORY, temperature=0, max_completion_tokens=N)
    assert long.choices[0].finish_reason == "length" and long.usage.completion_tokens == N

    stop = base.text.split()[2]  # a word the greedy answer writes: the answer ends before it
    cut = _chat(client, "tiny", STORY, temperature=0, max_tokens=N, stop=[stop])
    ref = engines["tiny"].generate([STORY], max_new_tokens=N, stop=[stop])[0]
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == ref.text
    assert stop not in ref.text and base.text.startswith(ref.text)
    assert cut.usage.completion_tokens == ref.completion_tokens < N

    text = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8, temperature=0)
    ref = engines["tiny"].complete(["Once upon a time"], max_new_tokens=8)[0]
    assert text.object == "text_completion" and text.choices[0].text == ref.text
    assert (text.usage.prompt_tokens, text.usage.completion_tokens) == (ref.prompt_tokens, ref.completion_tokens)


def test_streaming_gives_the_same_text_finish_reason_and_usage(client):
    for model, conv in (("tiny", STORY), ("sky", SKY)):
        whole = _chat(client, model, conv, temperature=0, max_tokens=N)
        texts, finish, usage = _streamed(client, model, conv, temperature=0, max_tokens=N)
        assert texts == [whole.choices[0].message.content] and finish == [whole.choices[0].finish_reason]
        assert usage.model_dump() == whole.usage.model_dump()
    whole = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8, temperature=0)
    pieces = [c.choices[0].text for c in client.completions.create(model="tiny", prompt="Once upon a time",
                                                                    max_tokens=8, temperature=0, stream=True)
              if c.choices]
    assert len(pieces) > 2 and "".join(pieces) == whole.choices[0].text


def test_prompt_ids_equal_the_training_renderer(client, tiny_model_dir, adapter_dir):
    conversations = (SKY, STORY, [*SKY, {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Why?"}])
    training_tokenizers = {"sky": load_tokenizer(str(adapter_dir)),  # what a run on this adapter trained with
                           "tiny": load_tokenizer(str(tiny_model_dir), template="chatml")}
    for model, tok in training_tokenizers.items():
        for conv in conversations:
            r = _chat(client, model, conv, temperature=0, max_tokens=1, extra_body={"return_token_ids": True})
            rendered = render_chat(Record(messages=[*conv, {"role": "assistant", "content": "Blue sky."}]), tok)
            prompt = rendered.input_ids[: rendered.answer_start]
            assert r.model_extra["prompt_token_ids"] == prompt and r.usage.prompt_tokens == len(prompt)
    plain = _chat(client, "tiny", SKY, temperature=0, max_tokens=1)
    assert "prompt_token_ids" not in plain.model_extra  # an extension: only when asked

    tools = [{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "properties": {}}}}]
    r = _chat(client, "sky", SKY, tools=tools, temperature=0, max_tokens=1, extra_body={"return_token_ids": True})
    tok = training_tokenizers["sky"]
    rendered = render_chat(Record(messages=[*SKY, {"role": "assistant", "content": "Blue."}], tools=tools), tok)
    # The training ids start with the server's prompt ids and go on with exactly the answer turn (this tokenizer
    # drops characters such as '{' in the tool schema, which render_chat handles: see data/token_spans.py).
    prompt = r.model_extra["prompt_token_ids"]
    assert rendered.input_ids[: len(prompt)] == prompt and rendered.answer_start == len(prompt)
    assert tok.decode(rendered.input_ids[len(prompt):]) == "Blue.<|im_end|>\n" + tok.eos_token
    parts = [{"role": "developer", "content": "Tell stories."},  # developer is a system message
             {"role": "user", "content": [{"type": "text", "text": "Tom had a big red ball and"}]}]
    as_parts = _chat(client, "tiny", parts, temperature=0, max_tokens=1, extra_body={"return_token_ids": True})
    as_text = _chat(client, "tiny", STORY, temperature=0, max_tokens=1, extra_body={"return_token_ids": True})
    assert as_parts.model_extra["prompt_token_ids"] == as_text.model_extra["prompt_token_ids"]


def test_errors_have_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as err:
        _chat(client, "no-such-model", temperature=0, max_tokens=2)
    assert err.value.status_code == 404 and err.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        _chat(client, "no-such-model", stream=True)  # refused before any stream starts
    raw = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "nope", "messages": SKY})  # no key
    assert raw.status_code == 404
    assert set(raw.json()) == {"error"} and set(raw.json()["error"]) == {"message", "type", "param", "code"}
    assert raw.json()["error"]["type"] == "invalid_request_error" and "nope" in raw.json()["error"]["message"]

    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, "tiny", logit_bias={"5": 1.0})
    assert err.value.code == "unsupported_parameter" and err.value.param == "logit_bias"
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, "tiny", max_tokens=600)  # the model's context is 512
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[])
    assert err.value.param == "messages"
    assert httpx.get(f"{server.url}/v1/nowhere").json()["error"]["code"] == "not_found"


def test_concurrent_requests_to_base_and_adapters_get_their_own_answers(client, engines, server):
    n_tokens = 40
    expected = {m: e.generate([SKY], max_new_tokens=n_tokens)[0].text for m, e in engines.items()}
    assert len(set(expected.values())) == 2  # base and adapter answer differently
    models = ["tiny", "sky", "tiny", "sky-lora", "sky", "tiny"]
    got, start = {}, threading.Barrier(len(models))

    def ask(i, model):
        start.wait()
        texts, _, _ = _streamed(client, model, temperature=0, max_tokens=n_tokens)
        got[i] = texts[0]

    threads = [threading.Thread(target=ask, args=(i, m)) for i, m in enumerate(models)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == {i: expected[m] for i, m in enumerate(models)}
    loaded = server.app.state.tuneforge.pool.loaded()
    assert len(loaded["adapters"]) == 1 and loaded["copies"] == []  # max_adapters=1; LoRA never copies the base


def test_a_dropped_stream_stops_generating_and_frees_the_model(server, client):
    pool = server.app.state.tuneforge.pool
    calls = []
    hook = pool.base.model.register_forward_hook(lambda *args: calls.append(1))  # one call per generated token
    try:
        body = {"model": "tiny", "messages": STORY, "max_tokens": 440, "temperature": 0, "stream": True,
                "stop": ["never-written"]}
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ") and next(lines) is not None
        deadline = time.monotonic() + 10
        while pool._shared.lock.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        at_release = len(calls)
        time.sleep(0.3)
        assert not pool._shared.lock.locked() and len(calls) == at_release < 440
    finally:
        hook.remove()
    assert _chat(client, "tiny", SKY, temperature=0, max_tokens=2).usage.completion_tokens == 2  # served again


def test_n_choices_are_seeded_and_the_same_streamed(client, engines):
    kw = {"temperature": 1.0, "seed": 3, "max_tokens": N}
    r = _chat(client, "tiny", STORY, n=2, **kw)
    texts = [c.message.content for c in r.choices]
    assert [c.index for c in r.choices] == [0, 1] and texts[0] != texts[1]
    ref = [engines["tiny"].generate([STORY], max_new_tokens=N, temperature=1.0, seed=s)[0] for s in (3, 4)]
    assert texts == [g.text for g in ref]  # choice i samples with seed + i
    assert r.usage.completion_tokens == sum(g.completion_tokens for g in ref)
    assert [c.message.content for c in _chat(client, "tiny", STORY, n=2, **kw).choices] == texts
    assert _streamed(client, "tiny", STORY, n=2, **kw)[0] == texts


def test_binding_beyond_loopback_needs_insecure():
    check_bind("127.0.0.1", insecure=False)
    check_bind("::1", insecure=False)
    with pytest.raises(ConfigError, match="API keys"):
        check_bind("0.0.0.0", insecure=False)
    check_bind("0.0.0.0", insecure=True)


def test_cli_names_adapters_and_explains_itself(runs_dir, adapter_dir):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.cli.serve_cmd import _adapters

    run = runs_dir / "sky-lora"
    assert _adapters([str(run), f"mine={adapter_dir}"]) == {"sky-lora": str(run / "adapter"),
                                                            "mine": str(adapter_dir)}
    assert _adapters([str(run / "adapter")]) == {"sky-lora": str(run / "adapter")}
    with pytest.raises(ConfigError, match="twice"):
        _adapters([f"a={adapter_dir}", f"a={adapter_dir}"])
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert all(s in result.output for s in ("OpenAI(base_url=", "--adapter", "--runs", "parent", "curl"))
    refused = CliRunner().invoke(app, ["serve", "--model", "x", "--host", "0.0.0.0"])
    assert isinstance(refused.exception, ConfigError) and "--insecure" in str(refused.exception)
