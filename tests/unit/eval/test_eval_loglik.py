"""The log-likelihood scorer on the 656K-parameter model: shared-context scoring equals full-sequence scoring equals a
one-sequence-at-a-time reference; the tokenization boundary; length normalisation in multiple choice."""

import pytest
import torch

from tuneforge.eval.bench import evaluate_mc
from tuneforge.eval.items import Item
from tuneforge.eval.loglik import LoglikScorer, Request
from tuneforge.eval.prompts import chat_request, mc_request, plain_request
from tuneforge.eval.tasks import Task

REQUESTS = [
    Request("Once upon a time there was", [" a cat", " a dog named Rex", " nothing"]),
    Request("The sun", [" is hot.", " rose"]),
    Request("", ["Hello world", "Bye"]),  # empty context: conditioned on the start token
    Request("Lily saw a big tree. She", [" climbed it", " ran home fast to her mom", "!", " sat"]),
    Request("Answer:", [" A", " B", " C", " D"]),  # single-token answers: no second pass
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tuneforge.models.load import load_for_inference

    return load_for_inference(str(tiny_model_dir))


def _reference(model, tok, req):
    scorer = LoglikScorer(model, tok)
    out = []
    for c in req.continuations:
        ids, start = scorer._encode_pair(req.context, c)
        with torch.no_grad():
            lp = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
        out.append(sum(lp[i - 1, ids[i]].item() for i in range(start, len(ids))))
    return out


def test_shared_context_equals_full_sequences_equals_reference(tiny):
    model, tok = tiny
    ref = [_reference(model, tok, r) for r in REQUESTS]
    for share in (True, False):
        for bs in (1, 3):
            got = LoglikScorer(model, tok, batch_size=bs, share_context=share).score(REQUESTS)
            for g, r in zip(got, ref):
                assert g == pytest.approx(r, abs=2e-3)


def test_tokenization_boundary_is_found_in_the_joint_tokenization(tiny):
    model, tok = tiny
    scorer = LoglikScorer(model, tok)
    ctx, cont = "Question: where?\nAnswer:", " A"
    ids, start = scorer._encode_pair(ctx, cont)
    assert ids == list(tok(ctx + cont)["input_ids"])  # scored as the model reads the text, not re-tokenized
    alone = list(tok(ctx)["input_ids"])
    assert ids[:start] == alone[:start] and start <= len(alone)
    assert start < len(ids)


def test_length_normalisation_flips_the_choice(monkeypatch):
    # choice 0 " a" (2 chars) scores -2 -> -1.0 per char; choice 1 " abcdefghij" (11 chars) -5.5 -> -0.5 per char
    items = [Item("x", "pick", 1, ["a", "abcdefghij"], "s")]
    task = Task("toy", items, "cloze")
    monkeypatch.setattr(LoglikScorer, "__init__", lambda self, *a, **k: setattr(self, "share_context", True))
    monkeypatch.setattr(LoglikScorer, "score", lambda self, reqs, progress=None: [[-2.0, -5.5]])
    ex = evaluate_mc(task, None, None, progress=False)
    e = ex["examples"][0]
    assert (e["pred"], e["pred_norm"]) == (0, 1)
    assert ex["metrics"]["acc"] == 0.0 and ex["metrics"]["acc_norm"] == 1.0
    letters = evaluate_mc(Task("toy", items, "letters"), None, None, progress=False)
    assert "acc_norm" not in letters["metrics"]  # one token per letter: normalisation is meaningless there


def test_length_normalisation_counts_the_choice_text_only_as_lm_eval_does(monkeypatch):
    # per character of the choice: -1.2 / 1 < -3.0 / 3, so "abc" wins; counting the space before each choice
    # (-1.2 / 2 > -3.0 / 4) would pick "a"
    items = [Item("x", "pick", 1, ["a", "abc"], "s")]
    monkeypatch.setattr(LoglikScorer, "__init__", lambda self, *a, **k: setattr(self, "share_context", True))
    monkeypatch.setattr(LoglikScorer, "score", lambda self, reqs, progress=None: [[-1.2, -3.0]])
    assert evaluate_mc(Task("toy", items, "cloze"), None, None, progress=False)["examples"][0]["pred_norm"] == 1


def test_prompts_plain_and_chat(tiny):
    _, tok = tiny
    item = Item("x", "What is 2+2?", 1, ["3", "4"], "math")
    letters = plain_request(Task("t", [item], "letters"), item, [])
    assert letters.context.endswith("A. 3\nB. 4\nAnswer:") and letters.continuations == [" A", " B"]
    cloze = plain_request(Task("t", [item], "cloze"), item, [item])
    assert cloze.context == "Question: What is 2+2?\nAnswer: 4\n\nQuestion: What is 2+2?\nAnswer:"
    zh = plain_request(Task("t", [item], "letters", lang="zh"), item, [])
    assert zh.context.endswith("答案：") and zh.continuations == ["A", "B"]
    from tuneforge.data.templates import ensure_chat_template

    ensure_chat_template(tok, "chatml")
    msgs = [{"role": "user", "content": "Is it good?"}]
    req = chat_request(tok, msgs, ["1", "0"])
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "1"}], tokenize=False)
    assert req.context + req.continuations[0] == full and req.continuations[0].startswith("1<|im_end|>")
    assert req.special_tokens is False
    chat_letters = mc_request(Task("t", [item], "letters"), item, [item], tok, chat=True)
    assert chat_letters.continuations[1].startswith("B<|im_end|>")
    assert chat_letters.context.count("<|im_start|>user") == 2  # the shot is an earlier turn
