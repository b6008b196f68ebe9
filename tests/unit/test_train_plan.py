"""The printed plan shows the eval/save schedule, with values derived from others and why."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.config.auto import resolve_auto, resolve_schedule
from tuneforge.methods import METHODS
from tuneforge.config.load import load_config
from tuneforge.models.load import load_tokenizer
from tuneforge.models.source import resolve_model
from tuneforge.stages import stage_and_params
from tuneforge.train.data_prep import prepare_data
from tuneforge.train.report import print_plan


def _cfg(tmp_path, model_dir, *over):
    rows = [{"instruction": "q", "output": "short"}] * 8
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return load_config(None, [f"model.name={model_dir}", "model.template=chatml", f"data.train={f}",
                              "data.cutoff_len=32", *over])


def test_plan_shows_the_derived_schedule(tmp_path, tiny_model_dir, capsys):
    cfg = _cfg(tmp_path, tiny_model_dir, "data.val_size=2", "train.eval_steps=5", "train.load_best=eval_loss")
    tok = load_tokenizer(resolve_model(str(tiny_model_dir)))
    from tuneforge.data.templates import ensure_chat_template

    ensure_chat_template(tok, "chatml")
    data = prepare_data(cfg, tok, *stage_and_params(cfg))
    schedule = resolve_schedule(cfg.train, has_validation=bool(data.val))
    print_plan(cfg, data, resolve_auto(cfg.train, METHODS["lora"], data.n_train_rows, "cpu"), "cpu", Path("out"), None,
               schedule)
    shown = " ".join(capsys.readouterr().err.split())
    assert "validation" in shown and "eval loss every 5 steps" in shown
    assert "save_steps=5 (follows eval_steps" in shown and "eval_loss (lower is better)" in shown
