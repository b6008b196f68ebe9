"""LoftQ start for QLoRA (method.init=loftq) on the 656K model, on CPU: the 4-bit base plus the LoftQ adapter is
closer to the original weights and logits than the 4-bit base alone (a zero adapter); a short run trains from it and
its adapter reloads (over the rebuilt 4-bit base) as the model that trained; settings that cannot use it are
refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from train_helpers import losses, tiny_config
from tuneforge.methods import METHODS
from tuneforge.models.load import load_for_inference, load_model, quantized_layers_as_in_training
from tuneforge.train.runner import train
from tuneforge.utils.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = torch.tensor([[1, 412, 287, 1090, 286, 35, 1003, 77, 19, 640, 288, 1420, 29, 1580, 2, 1, 5, 900]])


def _adapted(model_dir, **params):
    """The tiny model loaded in 4 bits and wrapped by QLoRA with `params`, as the runner does it."""
    method = METHODS["qlora"]
    p = method.params(params)
    base = load_model(str(model_dir), dtype="float32", device="cpu", **method.load_kwargs(p, compute_dtype="float32"))
    model = method.apply(base, p, total_steps=1)
    shutil.rmtree(getattr(model, "tuneforge_initial_adapter", ""), ignore_errors=True)  # only saving needs it
    return model.eval()


def _logits(model):
    """In eval mode, with 4-bit layers on their training path (eval mode would repack them with bf16 scales on a
    CPU: tuneforge.models.load.quantized_layers_as_in_training)."""
    model.eval()
    quantized_layers_as_in_training(model)
    with torch.no_grad():
        return model(input_ids=TEXT).logits


def _weight_errors(model, original: dict) -> tuple[float, float]:
    """Σ‖W − Q(W)‖² and Σ‖W − (Q(W) + scaling·B·A)‖² over the adapted 4-bit layers."""
    from bitsandbytes.functional import dequantize_4bit

    alone = with_adapter = 0.0
    for name, module in model.get_base_model().named_modules():
        if not hasattr(module, "lora_A"):
            continue
        q = dequantize_4bit(module.base_layer.weight.data, module.base_layer.weight.quant_state).float()
        delta = module.scaling["default"] * module.lora_B["default"].weight @ module.lora_A["default"].weight
        w = original[f"{name}.weight"]
        alone += ((w - q) ** 2).sum().item()
        with_adapter += ((w - q - delta) ** 2).sum().item()
    return alone, with_adapter


@pytest.fixture(scope="module")
def original(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


# The 4-bit error is close to noise, spread over all singular values: on these 128-wide layers rank 16 holds about a
# third of its energy (rank 4: a tenth, rank 32: half), and cuts the mean logit error by about a quarter.
@pytest.mark.parametrize("params", [{"r": 16}, {"r": 16, "alpha": 64, "dropout": 0.1}, {"r": 16, "use_rslora": True}])
def test_the_loftq_start_brings_the_4bit_model_back_towards_the_original(tiny_model_dir, original, params):
    loftq = _adapted(tiny_model_dir, init="loftq", **params)
    zero = _adapted(tiny_model_dir, **params)
    weights = dict(original.named_parameters())
    alone, with_adapter = _weight_errors(loftq, weights)
    assert _weight_errors(zero, weights)[1] == pytest.approx(alone)  # default start: B = 0, the bare 4-bit error
    assert with_adapter < 0.75 * alone, (with_adapter, alone)  # whatever alpha / rsLoRA scaling the adapter has
    target = _logits(original)
    gap_zero = (_logits(zero) - target).abs().mean().item()
    gap_loftq = (_logits(loftq) - target).abs().mean().item()
    assert gap_loftq < 0.85 * gap_zero, (gap_loftq, gap_zero)


class Live(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model = model


def test_a_loftq_run_trains_and_its_adapter_reloads_as_trained(tmp_path, tiny_model_dir):
    live = Live()
    res = train(tiny_config(tmp_path, tiny_model_dir, "method.type=qlora", "method.r=16", "method.init=loftq",
                            "train.max_steps=12", "train.lr_scheduler=constant"), extra_callbacks=[live])
    assert res.status == "succeeded"
    ls = losses(res.output_dir)
    assert len(ls) == 12 and sum(ls[-3:]) < sum(ls[:3]), ls
    saved = json.loads((res.final_dir / "adapter_config.json").read_text())
    assert saved["r"] == 16  # saved as trained: it belongs on the 4-bit base, not converted for the original one
    # chat / eval / export rebuild the 4-bit base named in the adapter folder: the model that trained
    reloaded = load_for_inference(str(tiny_model_dir), adapter=str(res.final_dir), device="cpu")[0]
    assert (_logits(reloaded) - _logits(live.model)).abs().max().item() < 1e-3


@pytest.mark.parametrize("method, params, needle", [
    ("lora", {"init": "loftq"}, "use method.type=qlora"),
    ("dora", {"init": "loftq"}, "use method.type=qlora"),
    ("qlora", {"init": "loftq", "bits": 8}, "set bits=4"),
    ("qlora", {"init": "loftq", "use_dora": True}, "set use_dora=false"),
    ("qlora", {"init": "pissa"}, "a quantized base does not keep"),
])
def test_settings_loftq_cannot_serve_are_refused(method, params, needle):
    with pytest.raises(ConfigError, match="init") as err:
        METHODS[method].params(params)
    assert needle in err.value.message
