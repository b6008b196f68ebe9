"""Packing: bins respect the cutoff, and packed loss equals unpacked loss (no attention across samples)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge.data.collate import PadCollator
from tuneforge.data.packing import best_fit_decreasing, pack_examples
from tuneforge.data.records import Record
from tuneforge.data.render import render_chat
from tuneforge.data.templates import ensure_chat_template
from tuneforge.models.load import load_tokenizer

QA = [("Tell me a story.", "Once upon a time there was a cat."), ("Hi", "Hello!"),
      ("Who is Tom?", "Tom is a boy who likes to run and jump in the park with his dog."),
      ("Color of the sky?", "Blue."), ("What did Lily see?", "Lily saw a big red ball under the tree."),
      ("Say yes", "Yes.")]


def test_best_fit_decreasing_respects_capacity():
    lengths = [5, 9, 3, 7, 1, 8, 2]
    bins = best_fit_decreasing(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # optimal here: 35 tokens in bins of 10


def test_best_fit_puts_a_sample_where_it_fits_tightest():
    # 8 → bin 0 (2 left), 6 → bin 1, 3 → bin 1 (1 left), 3 → bin 2; the last 1 goes to bin 1 (1 left), where
    # first-fit would have put it into bin 0 (2 left)
    assert best_fit_decreasing([8, 1, 3, 3, 6], 10) == [[0], [4, 2, 1], [3]]
    # equal lengths are placed in index order, equally tight bins are chosen lowest first
    assert best_fit_decreasing([4, 4, 4, 4], 10) == [[0, 1], [2, 3]]
    assert best_fit_decreasing([3, 3, 2, 2], 5) == [[0, 2], [1, 3]]


def test_best_fit_edge_cases():
    assert best_fit_decreasing([], 10) == []
    assert best_fit_decreasing([12, 3], 10) == [[0], [1]]  # longer than the capacity: a bin of its own
    assert best_fit_decreasing([10, 10, 1], 10) == [[0], [1], [2]]  # full bins take nothing more


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    ensure_chat_template(tok, "chatml")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return tok, model.eval()


def _examples(tok):
    return [render_chat(Record(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}]), tok)
            for q, a in QA]


def _loss(model, batch):
    batch = {k: v for k, v in batch.items() if k != "n_real"}
    with torch.no_grad():
        return model(**batch, use_cache=False).loss.item()


def test_packed_loss_equals_unpacked(tiny):
    tok, model = tiny
    ex = _examples(tok)
    unpacked = PadCollator(tok.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in ex])
    packed_rows = pack_examples(ex, cutoff=4096)
    assert len(packed_rows) == 1 and packed_rows[0].n_samples == len(ex)
    packed = PadCollator(tok.pad_token_id, packed=True)([p.__dict__ for p in packed_rows])
    assert "attention_mask" not in packed
    assert _loss(model, packed) == pytest.approx(_loss(model, unpacked), abs=1e-5)


def test_packed_loss_with_several_padded_bins(tiny):
    tok, model = tiny
    ex = _examples(tok)
    cutoff = max(len(e.input_ids) for e in ex) + 5
    bins = pack_examples(ex, cutoff=cutoff)
    assert len(bins) > 1 and all(len(b.input_ids) <= cutoff for b in bins)
    packed = PadCollator(tok.pad_token_id, packed=True)([b.__dict__ for b in bins])
    unpacked = PadCollator(tok.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in ex])
    assert _loss(model, packed) == pytest.approx(_loss(model, unpacked), abs=1e-5)


def test_no_attention_across_samples(tiny):
    tok, model = tiny
    ex = _examples(tok)[:2]
    row = pack_examples(ex, cutoff=4096)[0]
    n0 = len(ex[0].input_ids) if row.position_ids[len(ex[0].input_ids)] == 0 else len(ex[1].input_ids)
    ids = torch.tensor([row.input_ids])
    pos = torch.tensor([row.position_ids])
    with torch.no_grad():
        ref = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, n0:]
        changed = ids.clone()
        changed[0, 1:n0] = (changed[0, 1:n0] + 7) % model.config.vocab_size  # scramble the first sample
        out = model(input_ids=changed, position_ids=pos, use_cache=False).logits[0, n0:]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
