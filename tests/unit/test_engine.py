"""Inference engine on the 656K TinyStories model: batching, stopping, streaming, sampling, raw completion."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tuneforge.infer.engine import Engine, Generation, _hold_back_stops, _Stops
from tuneforge.utils.errors import ConfigError

CONVS = [
    [{"role": "user", "content": "Once upon a time"}],
    [{"role": "system", "content": "Tell stories."}, {"role": "user", "content": "Tom had a big red ball and he"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Lily went to the park with her mom. She saw a dog"}],
]
N = 12
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine.load(tiny_model, template="chatml", device="cpu")


@pytest.fixture()
def stops_at(engine, monkeypatch):
    """Make generation stop on given ids / texts, as if the template's end-of-turn marker were those."""
    def apply(ids=(), texts=()):
        eos = engine.tokenizer.eos_token_id
        monkeypatch.setattr(engine, "_chat_stops", lambda: _Stops((eos, *ids), ("<|im_end|>", *texts)))
    return apply


def test_batched_equals_one_by_one_and_keeps_input_order(engine):
    batched = engine.generate(CONVS, max_new_tokens=N, batch_size=3)
    single = [engine.generate([c], max_new_tokens=N, batch_size=1)[0] for c in CONVS]
    assert batched == single
    assert all(isinstance(g, Generation) and g.text for g in batched)
    assert len({g.prompt_tokens for g in batched}) > 1  # prompts of different lengths were padded together


def test_length_finish_and_token_counts(engine):
    g = engine.generate(CONVS[:1], max_new_tokens=5)[0]
    assert g.finish_reason == "length" and g.completion_tokens == 5
    assert g.prompt_tokens == len(engine.tokenizer.apply_chat_template(CONVS[0], add_generation_prompt=True)
                                  ["input_ids"])


def test_stops_at_end_of_turn_token(engine, stops_at):
    free = engine.generate(CONVS[:1], max_new_tokens=N)[0]
    new_ids = engine.tokenizer(free.text, add_special_tokens=False)["input_ids"]
    stop_id = new_ids[4]
    stops_at(ids=(stop_id,))
    g = engine.generate(CONVS[:1], max_new_tokens=N)[0]
    assert g.finish_reason == "stop"
    assert free.text.startswith(g.text) and len(g.text) < len(free.text)
    assert g.completion_tokens <= 5


def test_stops_at_multi_token_stop_text_in_batch_and_stream(engine, stops_at):
    free = engine.generate(CONVS, max_new_tokens=N)
    stop = free[0].text.split()[2]  # a word the model will write in the first answer
    stops_at(texts=(stop,))
    got = engine.generate(CONVS, max_new_tokens=N, batch_size=4)
    assert got[0].finish_reason == "stop" and stop not in got[0].text
    assert free[0].text.startswith(got[0].text)
    assert got[0].completion_tokens < N
    assert "".join(engine.stream(CONVS[0], max_new_tokens=N)) == got[0].text


def test_stream_concatenation_equals_generate(engine):
    for conv in CONVS[:2]:
        pieces = list(engine.stream(conv, max_new_tokens=N))
        assert len(pieces) > 1
        assert "".join(pieces) == engine.generate([conv], max_new_tokens=N)[0].text


@pytest.fixture()
def forward_calls(engine):
    """A counter of model forward passes (one per generated token)."""
    calls = []
    handle = engine.model.register_forward_hook(lambda *args: calls.append(1))
    yield calls
    handle.remove()


def test_closing_a_stream_stops_the_generation_thread(engine, forward_calls, monkeypatch):
    monkeypatch.setattr(engine, "_chat_stops", lambda: _Stops((), ()))  # nothing stops it before 300 tokens
    before = set(threading.enumerate())
    it = engine.stream(CONVS[0], max_new_tokens=300)
    assert next(it)
    it.close()
    left = [t for t in threading.enumerate() if t not in before]
    for t in left:
        t.join(timeout=2)
    assert not [t for t in left if t.is_alive()], "the generation thread outlived the closed stream"
    at_close = len(forward_calls)
    time.sleep(0.3)
    assert len(forward_calls) == at_close < 300  # no token generated after close


def test_temperature_zero_is_greedy_and_seed_does_not_matter(engine):
    greedy = engine.generate(CONVS, max_new_tokens=N)
    assert engine.generate(CONVS, max_new_tokens=N, temperature=0, seed=1, top_p=0.5) == greedy


def test_sampling_is_seeded_and_uses_the_temperature(engine):
    greedy = engine.generate(CONVS, max_new_tokens=N)
    rng_before = torch.get_rng_state()
    a = engine.generate(CONVS, max_new_tokens=N, temperature=1.0, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random state is left alone
    assert engine.generate(CONVS, max_new_tokens=N, temperature=1.0, seed=1) == a
    b = engine.generate(CONVS, max_new_tokens=N, temperature=1.0, seed=2)
    assert [g.text for g in a] != [g.text for g in b] and a != greedy
    cold = [engine.generate(CONVS, max_new_tokens=N, temperature=1e-4, seed=s) for s in (1, 2)]
    assert cold == [greedy, greedy]  # a near-zero temperature samples the argmax: temperature is applied


def test_top_p_and_repetition_penalty_change_the_output(engine):
    greedy = engine.generate(CONVS, max_new_tokens=N)
    for seed in (1, 2):  # top_p tiny keeps only the most likely token, whatever the seed and temperature
        assert engine.generate(CONVS, max_new_tokens=N, temperature=1.5, top_p=1e-6, seed=seed) == greedy
    penalized = engine.generate(CONVS, max_new_tokens=N, repetition_penalty=3.0)
    assert [g.text for g in penalized] != [g.text for g in greedy]
    with pytest.raises(ConfigError, match="repetition_penalty"):
        engine.generate(CONVS[:1], repetition_penalty=0)


def test_seeded_stream_equals_seeded_generate(engine):
    kw = {"max_new_tokens": N, "temperature": 1.0, "seed": 7, "top_p": 0.9, "repetition_penalty": 1.2}
    assert "".join(engine.stream(CONVS[1], **kw)) == engine.generate([CONVS[1]], **kw)[0].text


def test_hold_back_stops_never_leaks_a_partial_marker():
    assert "".join(_hold_back_stops(iter(["ab<", "|im", "_end|>tail"]), ("<|im_end|>",))) == "ab"
    assert list(_hold_back_stops(iter(["x <", "y"]), ("<|im_end|>",))) == ["x ", "<y"]


def test_complete_raw_text_and_sampling(engine):
    raw = engine.complete(["Once upon a time", "The cat"], max_new_tokens=6, batch_size=2)
    assert [g.completion_tokens for g in raw] == [6, 6] and all(g.finish_reason == "length" for g in raw)
    sampled = engine.generate(CONVS[:1], max_new_tokens=4, temperature=0.8, top_p=0.9)
    assert sampled[0].completion_tokens == 4
    with pytest.raises(ConfigError, match="temperature"):
        engine.generate(CONVS[:1], temperature=-1)


def test_chat_without_template_errors_but_complete_works(tiny_model):
    plain = Engine.load(tiny_model, device="cpu")
    with pytest.raises(ConfigError, match="no chat template"):
        plain.generate(CONVS[:1], max_new_tokens=2)
    assert plain.complete(["Once"], max_new_tokens=2)[0].completion_tokens == 2
