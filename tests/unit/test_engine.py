"""Inference engine on the 656K TinyStories model: batching, stopping, streaming, raw completion."""

from __future__ import annotations

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


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A 656K model runs fastest on one thread; on a shared CPU more threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.load(str(tiny_model_dir), template="chatml", device="cpu")


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


def test_stream_can_be_closed_early(engine):
    it = engine.stream(CONVS[0], max_new_tokens=200)
    first = next(it)
    it.close()  # stops the generation thread instead of running 200 tokens in the background
    assert first


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


def test_chat_without_template_errors_but_complete_works(tiny_model_dir):
    plain = Engine.load(str(tiny_model_dir), device="cpu")
    with pytest.raises(ConfigError, match="no chat template"):
        plain.generate(CONVS[:1], max_new_tokens=2)
    assert plain.complete(["Once"], max_new_tokens=2)[0].completion_tokens == 2
