"""The stage table: names, per-stage parameters with "did you mean", the data-kind check before rendering, and
`stage:` written as a name or as a mapping."""

from __future__ import annotations

import pytest

from tuneforge.config.load import load_config
from tuneforge.data.records import Record
from tuneforge.stages import STAGES, get_stage, stage_and_params, stages_accepting
from tuneforge.stages.base import record_kind
from tuneforge.utils.errors import ConfigError, DataError

CHAT = Record(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], source="plain.json:1")
PROMPT = Record(messages=[{"role": "user", "content": "no answer"}], source="prompts.json:4")
PAIR = Record(messages=[{"role": "user", "content": "q"}], chosen=[{"role": "assistant", "content": "good"}],
              rejected=[{"role": "assistant", "content": "bad"}], source="data/dpo.json:57")
KTO = Record(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], label=True,
             source="data/kto.json:9")
TEXT = Record(messages=[], text="once upon a time", source="t.txt:1")


def _cfg(*over):
    return load_config(None, ["data.train=d.jsonl", *over])


def test_stage_is_a_name_or_a_mapping_and_overrides_reach_its_parameters():
    assert _cfg().stage.type == "sft" and _cfg("stage=pt").stage.type == "pt"
    cfg = _cfg("stage={type: sft}")
    assert cfg.stage.type == "sft" and cfg.stage.params == {}
    assert str(cfg.stage) == "sft"


def test_unknown_stage_and_unknown_stage_key_say_what_is_valid():
    with pytest.raises(ConfigError, match="did you mean 'sft'"):
        get_stage("sfft")
    with pytest.raises(ConfigError) as err:
        stage_and_params(_cfg("stage.beta=0.1"))  # sft has no parameters
    assert "stage.beta: unknown key for stage sft" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        stage_and_params(_cfg("stage=dpo", "stage.betta=0.1"))


def test_record_kinds():
    kinds = [record_kind(r) for r in (CHAT, PAIR, KTO, TEXT, PROMPT)]
    assert kinds == ["chat", "pairwise", "unpaired", "text", "prompt"]


@pytest.mark.parametrize("name", ["sft", "pt"])
def test_preference_data_for_sft_or_pt_is_refused_naming_file_line_and_the_stages_that_take_it(name):
    with pytest.raises(DataError) as e:
        STAGES[name].check_records([CHAT, PAIR])
    msg = str(e.value)
    assert e.value.file == "data/dpo.json" and "pairwise preference data (chosen/rejected)" in msg
    assert f"stage {name} trains on" in msg and "data/dpo.json:57" in e.value.hint
    assert set(stages_accepting("pairwise")) == {"rm", "dpo", "simpo", "orpo", "kto"}
    for other in stages_accepting("pairwise"):
        assert other in msg
    with pytest.raises(DataError, match="KTO data") as e:
        STAGES[name].check_records([CHAT, KTO])
    assert e.value.file == "data/kto.json"


def test_kind_check_accepts_what_each_stage_trains_on():
    STAGES["sft"].check_records([CHAT])
    STAGES["pt"].check_records([TEXT, CHAT])  # conversations are read as text
    with pytest.raises(DataError, match="plain text"):
        STAGES["sft"].check_records([TEXT])


def test_readme_and_the_stages_command_cover_every_stage():
    from pathlib import Path

    from typer.testing import CliRunner

    from tuneforge.cli import app

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    res = CliRunner().invoke(app, ["stages"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for name in STAGES:
        assert f"| `{name}` |" in readme, name
        assert f" {name} " in res.output, name
    one = CliRunner().invoke(app, ["stages", "dpo"], env={"COLUMNS": "200"})
    assert "label_smoothing" in one.output and "precompute_ref" in one.output


def test_pair_checks_name_file_line_and_field():
    from tuneforge.stages.pairs import check_pair

    same = Record(messages=[{"role": "user", "content": "q"}], chosen=[{"role": "assistant", "content": "a "}],
                  rejected=[{"role": "assistant", "content": "a"}], source="p.jsonl:3")
    with pytest.raises(DataError, match="identical") as e:
        check_pair(same)
    assert (e.value.file, e.value.line, e.value.field) == ("p.jsonl", 3, "rejected")
    empty = Record(messages=[{"role": "user", "content": "  "}], chosen=PAIR.chosen, rejected=PAIR.rejected,
                   source="p.jsonl:4")
    with pytest.raises(DataError, match="empty prompt"):
        check_pair(empty)


def test_stage_settings_it_cannot_honour_are_config_errors():
    from tuneforge.stages.compat import check_stage_compat

    with pytest.raises(ConfigError, match="data.packing") as e:
        check_stage_compat(_cfg("stage=dpo", "data.packing=true"), STAGES["dpo"])
    assert "data.packing=false" in e.value.hint
    with pytest.raises(ConfigError, match="eval.classification"):
        check_stage_compat(_cfg("stage=rm", "eval.classification={labels: [a, b]}"), STAGES["rm"])
    check_stage_compat(_cfg("stage=sft", "data.packing=true"), STAGES["sft"])


def test_stage_parameters_are_validated_with_their_ranges():
    with pytest.raises(ConfigError, match="stage.loss"):
        stage_and_params(_cfg("stage=dpo", "stage.loss=ipoo"))
    with pytest.raises(ConfigError, match="label_smoothing applies to loss sigmoid or robust"):
        stage_and_params(_cfg("stage={type: dpo, loss: ipo, label_smoothing: 0.1}"))
    stage, params = stage_and_params(_cfg("stage=dpo", "stage.beta=0.3"))
    assert stage.name == "dpo" and params.beta == 0.3 and params.loss == "sigmoid"
