"""Our own adapter modules (tuneforge.models.addons) on the 656K model: untrained they leave the model as it was;
UniPELT's prefix attention is SDPA exactly when its gates are shut (with padding, grouped KV heads and a KV cache);
an open prefix changes answers, stays causal and gives the same greedy text with and without the cache; the folder
is refused by export. Training, reload and generation of both methods run in test_methods_train.py's CASES."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge.methods import METHODS
from tuneforge.models import addons
from tuneforge.models.load import refuse_unmergeable
from tuneforge.utils.errors import ModelError

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[1, 45, 300, 12, 7, 99, 410, 23], [0, 0, 0, 1, 88, 301, 14, 5]])  # row 2 left-padded
MASK = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])


def _base(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()


def _with(method: str, tiny_model_dir, **params):
    m = METHODS[method]
    return m.apply(_base(tiny_model_dir), m.Params(**params)).eval()


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits.masked_fill(~MASK.bool()[..., None], 0)


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_an_untrained_adapter_leaves_the_model_unchanged_and_only_it_trains(tiny_model_dir, placement):
    model = _with("adapter", tiny_model_dir, placement=placement)
    assert torch.equal(_logits(model), _logits(_base(tiny_model_dir)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    per_block = 2 if placement == "houlsby" else 1
    assert len(trainable) == 2 * per_block * 4 and all(".tf_adapter." in n for n in trainable)  # layers × W,b × 2


def _shut_prefix_gates(model) -> None:
    for m in model.modules():
        if isinstance(m, addons.GatedPrefix):
            m.gate_bias.data.fill_(-1e4)


def test_unipelt_with_its_prefix_gates_shut_is_the_base_model(tiny_model_dir):
    base = _base(tiny_model_dir)
    model = _with("unipelt", tiny_model_dir, prefix_length=4)
    assert model.config._attn_implementation == addons.PREFIX_ATTENTION
    assert not torch.allclose(_logits(model), _logits(base), atol=1e-4)  # the open prefix is used
    _shut_prefix_gates(model)
    assert torch.allclose(_logits(model), _logits(base), atol=1e-5)
    greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ours = model.generate(input_ids=IDS, attention_mask=MASK, **greedy)
        theirs = base.generate(input_ids=IDS, attention_mask=MASK, **greedy)
    assert torch.equal(ours, theirs)


def test_an_open_prefix_is_causal_and_generates_the_same_with_and_without_the_cache(tiny_model_dir):
    model = _with("unipelt", tiny_model_dir, prefix_length=4)
    for m in model.modules():
        if isinstance(m, addons.GatedPrefix):
            m.key.data.normal_(0, 1)
            m.value.data.normal_(0, 1)
    changed = IDS.clone()
    changed[:, -1] = 1000
    with torch.no_grad():
        a, b = model(input_ids=IDS).logits, model(input_ids=changed).logits
        assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.allclose(a[:, -1], b[:, -1])
        greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, attention_mask=MASK)
        cached = model.generate(input_ids=IDS, use_cache=True, **greedy)
        recomputed = model.generate(input_ids=IDS, use_cache=False, **greedy)
    assert torch.equal(cached, recomputed)


def test_the_adapter_folder_reloads_only_on_a_matching_model_and_export_refuses_it(tmp_path, tiny_model_dir):
    model = _with("unipelt", tiny_model_dir, prefix_length=4)
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    addons.save(model, tmp_path, "unipelt", model.tuneforge_addon_settings)
    assert addons.is_adapter_dir(tmp_path)
    reloaded = addons.load(_base(tiny_model_dir), tmp_path).eval()
    assert torch.equal(_logits(reloaded), _logits(model))
    with pytest.raises(ModelError, match="cannot be merged"):
        refuse_unmergeable(str(tmp_path), "export merges adapters into the model")
    other = _with("adapter", tiny_model_dir)
    addons.save(other, tmp_path / "adapter", "bottleneck", other.tuneforge_addon_settings)
    marker = addons.read_marker(tmp_path / "adapter")
    marker["settings"]["reduction_factor"] = 8  # a different width than the saved tensors
    (tmp_path / "adapter" / addons.MARKER).write_text(json.dumps(marker))
    with pytest.raises(ModelError, match="does not fit this model"):
        addons.load(_base(tiny_model_dir), tmp_path / "adapter")
