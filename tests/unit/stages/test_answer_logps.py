"""Log-probs of the answers computed from the answer positions only equal those from the whole sequence."""

from __future__ import annotations

import torch

from tuneforge.data.render import IGNORE
from tuneforge.stages.preference import answer_logps, sequence_logps


def test_answer_logps_equal_the_full_sequence_computation(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 500, (3, 20))
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0  # a right-padded row
    labels = torch.full_like(ids, IGNORE)
    labels[0, 12:18], labels[1, 9:20], labels[2, 11:15] = ids[0, 12:18], ids[1, 9:20], ids[2, 11:15]
    with torch.no_grad():
        full = sequence_logps(model(input_ids=ids, attention_mask=mask).logits, labels)
        tail = answer_logps(model, ids, mask, labels)
    assert torch.allclose(full[0], tail[0], atol=1e-5) and torch.equal(full[1], tail[1])
    labels[:, :] = IGNORE  # no answer at all: still defined (zero log-prob, count clamped to 1)
    with torch.no_grad():
        assert answer_logps(model, ids, mask, labels)[0].abs().sum() == 0
