"""`tuneforge eval compare MODEL MODEL::ADAPTER` runs both sides on the same validated plan and pairs the examples.

The adapter is a freshly initialised LoRA (B = 0), so it must change nothing: every example is a tie.
"""

import json

from typer.testing import CliRunner

from tuneforge.cli import app


def test_compare_model_with_and_without_adapter(tmp_path, tiny_model_dir, demo_data):
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.load import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model(str(tiny_model_dir), device="cpu")
        peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        adapter = tmp_path / "run" / "adapter"
        peft.save_pretrained(str(adapter))
        args = ["eval", "compare", str(tiny_model_dir), f"{tiny_model_dir}::{adapter}", "--tasks", "arc_easy",
                "--data", str(demo_data / "sentiment_en" / "dev.jsonl"), "--labels", "0,1", "--template", "chatml",
                "--limit", "8", "--no-progress", "-o", str(tmp_path / "cmp")]
        res = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert cmp["b"].endswith("::" + str(adapter))
    for task in ("arc_easy", "sentiment_en/dev"):
        c = cmp["tasks"][task]
        assert (c["wins"], c["losses"], c["ties"]) == (0, 0, 8)
        assert all(abs(v["delta"]) < 1e-9 for v in c["metrics"].values())
    assert (tmp_path / "cmp" / "a" / "results.json").is_file() and (tmp_path / "cmp" / "compare.md").is_file()
