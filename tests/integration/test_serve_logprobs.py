"""Log-probabilities: `Engine(..., logprobs=n)` and `tuneforge serve`'s `logprobs` / `top_logprobs`, driven by the
official openai client against a server on a free loopback port (the 656K TinyStories base as "tiny", chatml).

The values must be the log-softmax of the model's raw next-token logits: the reference is one plain forward pass of
the model over prompt + answer, also for sampled answers with temperature, top_p and a repetition penalty (which
must not show in the values). Asking for log-probabilities must not change the answer.
"""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch
from openai import OpenAI

from tuneforge.data.templates import encode_prompt
from tuneforge.infer.engine import Engine, Piece, _TokenTexts, encode_text
from tuneforge.serve.app import create_app
from tuneforge.serve.settings import ServeSettings

pytestmark = pytest.mark.usefixtures("one_thread")

STORY = [{"role": "system", "content": "Tell stories."}, {"role": "user", "content": "Tom had a big red ball and"}]
CONVS = [STORY, [{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Lily saw a big dog in the park"}]]
SAMPLED = {"temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.3}
N = 16


@pytest.fixture(scope="module")
def engine(tiny_model) -> Engine:
    return Engine.load(tiny_model, template="chatml", device="cpu")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    import uvicorn

    settings = ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml",
                             runs_dir=str(tmp_path_factory.mktemp("no-runs")), device="cpu")
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield SimpleNamespace(url=f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}")
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="any-key-is-accepted", max_retries=0, timeout=60)


def _reference(model, prompt: list[int], answer: list[int]) -> list[float]:
    """log p(answer[i] | prompt + answer[:i]) from one plain forward pass of `model`."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0].float()
    rows = torch.log_softmax(logits, dim=-1)[len(prompt) - 1: -1]
    return rows.gather(1, torch.tensor(answer).view(-1, 1)).squeeze(1).tolist()


def _assert_reference(model, prompt: list[int], tokens) -> None:
    got = [t.logprob for t in tokens]
    assert got == pytest.approx(_reference(model, prompt, [t.id for t in tokens]), abs=1e-4)


# --- the engine ----------------------------------------------------------------------------------------------------


def test_logprobs_equal_a_plain_forward_pass_and_leave_answers_unchanged(engine):
    prompts = [encode_prompt(engine.tokenizer, c, None) for c in CONVS]
    plain = engine.generate(CONVS, max_new_tokens=N, batch_size=2)
    scored = engine.generate(CONVS, max_new_tokens=N, batch_size=2, logprobs=3)  # left-padded batches
    assert [g.text for g in scored] == [g.text for g in plain] and all(g.logprobs for g in scored)
    assert [g.completion_tokens for g in scored] == [g.completion_tokens for g in plain]
    for prompt, g in zip(prompts, scored):
        _assert_reference(engine.model, prompt, g.logprobs)
        assert "".join(t.token for t in g.logprobs) == g.text  # this tokenizer writes no partial characters
        for t in g.logprobs:
            assert len(t.top) == 3 and t.top[0].id == t.id and t.top[0].logprob == t.logprob  # greedy: the top one
            assert [x.logprob for x in t.top] == sorted((x.logprob for x in t.top), reverse=True)
            assert all(math.exp(x.logprob) <= 1 for x in t.top) and sum(math.exp(x.logprob) for x in t.top) <= 1
            assert t.bytes == list(t.token.encode())

    # Sampled with temperature, top_p and a penalty: the values are still the raw distribution's.
    sampled = engine.generate([STORY], max_new_tokens=N, seed=5, logprobs=0, **SAMPLED)[0]
    assert sampled.text == engine.generate([STORY], max_new_tokens=N, seed=5, **SAMPLED)[0].text
    assert all(t.top == [] for t in sampled.logprobs)
    _assert_reference(engine.model, prompts[0], sampled.logprobs)

    text = engine.complete(["Once upon a time"], max_new_tokens=N, logprobs=1)[0]
    assert text.text == engine.complete(["Once upon a time"], max_new_tokens=N)[0].text
    _assert_reference(engine.model, encode_text(engine.tokenizer, "Once upon a time"), text.logprobs)


def test_a_stream_yields_each_piece_with_its_tokens(engine):
    whole = engine.generate([STORY], max_new_tokens=N, logprobs=2)[0]
    stream = engine.stream(STORY, max_new_tokens=N, logprobs=2)
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as done:
            gen = done.value
            break
    assert all(isinstance(p, Piece) for p in pieces) and "".join(p.text for p in pieces) == whole.text
    assert all("".join(t.token for t in p.logprobs) == p.text for p in pieces)
    assert [t for p in pieces for t in p.logprobs] == gen.logprobs == whole.logprobs
    assert list(engine.stream(STORY, max_new_tokens=N)) == [p.text for p in pieces]  # strings without logprobs


def test_a_stop_text_cuts_the_tokens_too(engine):
    base = engine.generate([STORY], max_new_tokens=N, logprobs=0)[0]
    stop = base.text.split()[3]
    cut = engine.generate([STORY], max_new_tokens=N, stop=[stop], logprobs=0)[0]
    assert stop not in cut.text and base.logprobs[:len(cut.logprobs)] == cut.logprobs
    assert "".join(t.token for t in cut.logprobs) == cut.text  # the stop text's tokens are left out


def test_a_lora_model_is_scored_by_its_own_weights(engine, tiny_model):
    """A PEFT model hands generation to its base model, where the log-probabilities are read."""
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.load import load_for_inference

    base, tok = load_for_inference(tiny_model, device="cpu")
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    scored = Engine(lora, engine.tokenizer).generate([STORY], max_new_tokens=N, logprobs=1)[0]
    assert scored.text != engine.generate([STORY], max_new_tokens=N)[0].text  # the adapter changes the answer
    _assert_reference(lora, encode_prompt(engine.tokenizer, STORY, None), scored.logprobs)


def test_token_texts_keep_leading_spaces_and_raw_bytes_of_partial_characters(engine, shared):
    from transformers import AutoTokenizer

    ids = engine.tokenizer(" upon a time, there was", add_special_tokens=False)["input_ids"]
    texts = _TokenTexts(engine.tokenizer)
    described = [texts.add(i, -1.0, [(i, -1.0)]) for i in ids]
    answer = engine.tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(t.token for t in described) == answer  # "▁there" alone would decode to "there"
    assert [t.offset for t in described] == [len("".join(t.token for t in described[:i])) for i in range(len(ids))]
    assert all(t.top[0].token == t.token for t in described)

    bpe = AutoTokenizer.from_pretrained(shared / "models" / "smollm2-135m-instruct-q4_1-gguf")  # byte-level BPE
    text = "Hi 日本 café"
    texts = _TokenTexts(bpe)
    described = [texts.add(i, -1.0, []) for i in bpe(text, add_special_tokens=False)["input_ids"]]
    assert bytes(b for t in described for b in t.bytes).decode() == text
    partial = [t for t in described if "\ufffd" in t.token]
    assert partial and all(t.bytes and t.bytes != list(t.token.encode()) for t in partial)
    assert text[described[-1].offset:] == " café" and "".join(t.token for t in described[-2:]) == "本 café"


# --- the server ------------------------------------------------------------------------------------------------------


def _chat(client, **kw):
    return client.chat.completions.create(model="tiny", messages=STORY, max_tokens=N, **kw)


def test_chat_logprobs_have_openai_shape_and_are_the_engines(client, server, engine):
    r = _chat(client, temperature=0, logprobs=True, top_logprobs=3)
    ref = engine.generate([STORY], max_new_tokens=N, logprobs=3)[0]
    choice = r.choices[0]
    assert choice.message.content == ref.text == _chat(client, temperature=0).choices[0].message.content
    assert choice.logprobs.refusal is None and len(choice.logprobs.content) == len(ref.logprobs)
    for got, want in zip(choice.logprobs.content, ref.logprobs):
        assert (got.token, got.bytes, [t.token for t in got.top_logprobs]) == \
               (want.token, want.bytes, [t.token for t in want.top])
        assert got.logprob == pytest.approx(want.logprob, abs=1e-5) and got.top_logprobs[0].token == got.token
        assert [t.bytes for t in got.top_logprobs] == [t.bytes for t in want.top]

    body = {"model": "tiny", "messages": STORY, "max_tokens": 2, "temperature": 0, "logprobs": True}
    raw = httpx.post(f"{server.url}/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]
    assert set(raw) == {"content", "refusal"} and raw["refusal"] is None
    assert [set(t) for t in raw["content"]] == [{"token", "bytes", "logprob", "top_logprobs"}] * 2
    assert all(t["top_logprobs"] == [] for t in raw["content"])  # logprobs without top_logprobs: none listed
    top = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "top_logprobs": 2}).json()
    assert set(top["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]) == {"token", "bytes", "logprob"}
    assert _chat(client, temperature=0).choices[0].logprobs is None  # not asked: null

    sampled = _chat(client, n=2, seed=3, logprobs=True, temperature=0.8, top_p=0.9,
                    extra_body={"repetition_penalty": 1.3})  # each choice has its own tokens
    for c in sampled.choices:
        assert "".join(t.token for t in c.logprobs.content) == c.message.content
        assert all(t.logprob <= 0 for t in c.logprobs.content)


def test_streamed_chunks_carry_the_logprobs_of_their_own_text(client):
    whole = _chat(client, temperature=0, logprobs=True, top_logprobs=2).choices[0]
    chunks = [c for c in _chat(client, temperature=0, logprobs=True, top_logprobs=2, stream=True) if c.choices]
    content = [c.choices[0] for c in chunks if c.choices[0].delta.content]
    assert len(content) > 2 and "".join(c.delta.content for c in content) == whole.message.content
    assert all("".join(t.token for t in c.logprobs.content) == c.delta.content for c in content)
    streamed = [t.model_dump() for c in content for t in c.logprobs.content]
    assert streamed == [t.model_dump() for t in whole.logprobs.content]

    text = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8, temperature=0,
                                     logprobs=2).choices[0]
    pieces = [c.choices[0] for c in client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8,
                                                              temperature=0, logprobs=2, stream=True)
              if c.choices and c.choices[0].text]
    assert [t for p in pieces for t in p.logprobs.tokens] == text.logprobs.tokens
    assert [o for p in pieces for o in p.logprobs.text_offset] == text.logprobs.text_offset


def test_completions_have_the_legacy_shape(client, engine):
    prompt = "Once upon a time"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=N, temperature=0, logprobs=2)
    ref = engine.complete([prompt], max_new_tokens=N, logprobs=2)[0]
    lp, text = r.choices[0].logprobs, r.choices[0].text
    assert text == ref.text and lp.tokens == [t.token for t in ref.logprobs]
    assert lp.token_logprobs == pytest.approx([t.logprob for t in ref.logprobs], abs=1e-5)
    for i, (token, offset, top) in enumerate(zip(lp.tokens, lp.text_offset, lp.top_logprobs)):
        assert text[offset:].startswith(token) and offset == len("".join(lp.tokens[:i]))
        assert len(top) == 2 and max(top, key=top.get) == token and top[token] == lp.token_logprobs[i]
    only_chosen = client.completions.create(model="tiny", prompt=prompt, max_tokens=4, temperature=0, logprobs=0)
    assert [list(t) for t in only_chosen.choices[0].logprobs.top_logprobs] == \
           [[t] for t in only_chosen.choices[0].logprobs.tokens]  # the chosen token is always listed
    assert client.completions.create(model="tiny", prompt=prompt, max_tokens=2).choices[0].logprobs is None


def test_logprob_requests_are_checked_as_openai_does(client):
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, top_logprobs=2)  # without logprobs: true
    assert err.value.status_code == 400 and err.value.param == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, logprobs=True, top_logprobs=21)
    assert err.value.param == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Once", logprobs=6)
    assert err.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Once", logprobs=1, echo=True)
    assert err.value.code == "unsupported_parameter" and err.value.param == "echo"
    assert _chat(client, logprobs=False).choices[0].logprobs is None
