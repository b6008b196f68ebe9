"""`data preview`: the same length numbers as the doctor, the chat template only for chat stages, answer_cut shown."""

from __future__ import annotations

import json

import pytest
from train_helpers import tiny_config, write_story_data
from typer.testing import CliRunner

from tuneforge.cli.data_cmd import app
from tuneforge.data.doctor.lengths import lengths as doctor_lengths
from tuneforge.data.preview import length_stats
from tuneforge.stages.preview import preview
from tuneforge.data.records import Record
from tuneforge.utils.errors import ConfigError

# Ten lengths on which nearest-rank and interpolated percentiles differ (p90: 58 vs 61.9).
LENGTHS = [3, 7, 10, 12, 15, 20, 31, 44, 58, 97]


def test_preview_and_doctor_report_the_same_percentiles():
    shown = length_stats(LENGTHS, cutoff=50)
    records = [Record(messages=[], text="x" * n) for n in LENGTHS]
    _, stats, _ = doctor_lengths(records, model=None, template="auto", cutoff=None, k=3)
    checked = stats["chars"]["prompt"]
    for key in ("n", "min", "mean", "p50", "p90", "p99", "max"):
        assert shown[key] == checked[key], key
    assert shown["p90"] == pytest.approx(61.9)
    assert shown["at_cutoff"] == 2


def test_preview_installs_the_configured_template_and_counts_cut_answers(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, "data.cutoff_len=12", "data.on_long_answer=cut")
    samples, stats, tok = preview(cfg, n=2)
    assert "<|im_start|>" in tok.chat_template  # model.template=chatml, installed by load_tokenizer
    assert len(samples) == 2 and all(len(r.input_ids) <= 12 for r in samples)
    assert stats["render"]["answer_cut"] == stats["render"]["rows"] == 16  # every story answer is longer
    assert all(r.answer_cut for r in samples)


def test_plain_text_stage_needs_no_chat_template(tmp_path, tiny_model_dir):
    """The tiny model has no chat template: `auto` is an error for sft, and not even asked for under pt."""
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": f"Once upon a time there was a cat number {i}."}) + "\n"
                            for i in range(6)))
    with pytest.raises(ConfigError, match="no chat template"):
        preview(tiny_config(tmp_path / "sft", tiny_model_dir, "model.template=auto"))
    samples, stats, tok = preview(tiny_config(tmp_path / "pt", tiny_model_dir, "stage=pt", "model.template=auto",
                                              data=data))
    assert not getattr(tok, "chat_template", None)
    assert stats["render"]["rows"] == 6 and samples and stats["trained_tokens"]["min"] > 0


def test_cli_preview_shows_answer_cut(tmp_path, tiny_model_dir):
    data = write_story_data(tmp_path / "stories.jsonl")
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  name: {tiny_model_dir}\n  template: chatml\n"
                      f"data:\n  train: {data}\n  cutoff_len: 12\n")
    res = CliRunner().invoke(app, ["preview", str(config), "-n", "1"])
    assert res.exit_code == 0, res.output
    assert "answer cut (answer alone over the cutoff) 16" in " ".join(res.output.split())
    as_json = CliRunner().invoke(app, ["preview", str(config), "-n", "1", "--json"])
    payload = json.loads(as_json.stdout)
    assert payload["samples"][0]["answer_cut"] is True and payload["stats"]["render"]["answer_cut"] == 16
