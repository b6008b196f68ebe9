"""Path-valued config keys: `${VAR}` and `~` expand once, relative paths resolve against the YAML file's folder;
overrides, output.dir and train.resume stay relative to the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.config.load import load_config
from tuneforge.utils.errors import ConfigError

EVERY_PATH_KEY = """
model: {name: "${DEMO}/model.gguf", template: "${DEMO}/chat.jinja"}
data:
  train: ["${DEMO}/a.jsonl", {path: "$DEMO/b.json"}]
  eval: {path: "${DEMO}/dev.jsonl"}
  dataset_info: "${DEMO}/dataset_info.json"
eval: {classification: {labels: ["0", "1"], data: "${DEMO}/cls.jsonl"}}
output: {dir: "${DEMO}/runs/{run_name}"}
train: {resume: "${DEMO}/runs/x/checkpoints/checkpoint-2"}
"""


def _yaml(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_path_key_expands_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO", "/demo")
    cfg = load_config(_yaml(tmp_path, EVERY_PATH_KEY))
    assert cfg.model.name == "/demo/model.gguf" and cfg.model.template == "/demo/chat.jinja"
    assert [d.path for d in cfg.data.train] == ["/demo/a.jsonl", "/demo/b.json"]
    assert cfg.data.eval[0].path == "/demo/dev.jsonl" and cfg.data.dataset_info == "/demo/dataset_info.json"
    assert cfg.eval.classification.data == "/demo/cls.jsonl"
    assert cfg.output.dir == "/demo/runs/{run_name}"  # {run_name} is filled in later, not an environment variable
    assert cfg.train.resume == "/demo/runs/x/checkpoints/checkpoint-2"


def test_an_unset_variable_names_the_key_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_TEST_UNSET", raising=False)
    path = _yaml(tmp_path, "data: {train: x.jsonl}\neval:\n  classification:\n"
                           "    labels: ['0', '1']\n    data: ${TF_TEST_UNSET}/dev.jsonl\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "eval.classification.data" in msg and "TF_TEST_UNSET is not set" in msg
    monkeypatch.setenv("TF_TEST_UNSET", "")  # empty counts as unset: it would turn the path into "/dev.jsonl"
    with pytest.raises(ConfigError, match=r"data\.train\[0\]: environment variable TF_TEST_UNSET is not set"):
        load_config(_yaml(tmp_path, "data: {train: [$TF_TEST_UNSET/a.jsonl]}\n"))


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cfgs"
    (folder / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_yaml(folder, """
model: {name: tiny, template: templates/chat.jinja}
data:
  train: [data/missing.jsonl, {path: ../shared.json}]
  dataset_info: info
eval: {classification: {labels: ["0", "1"], data: data/dev.jsonl}}
output: {dir: runs/x}
train: {resume: runs/x/checkpoints/checkpoint-3}
"""))
    here = folder.resolve()
    assert cfg.model.name == str(here / "tiny") and cfg.model.template == str(here / "templates" / "chat.jinja")
    # a path that does not exist yet still resolves there, so the "no such file" error names the real place
    assert [d.path for d in cfg.data.train] == [str(here / "data" / "missing.jsonl"), str(tmp_path / "shared.json")]
    assert cfg.data.dataset_info == str(here / "info")
    assert cfg.eval.classification.data == str(here / "data" / "dev.jsonl")
    assert cfg.output.dir == "runs/x" and cfg.train.resume == "runs/x/checkpoints/checkpoint-3"  # working dir


def test_names_that_are_not_paths_are_left_alone(tmp_path):
    cfg = load_config(_yaml(tmp_path, """
model: {name: Qwen/Qwen2.5-0.5B-Instruct, template: chatml}
data: {train: [alpaca_en_demo, {path: tatsu-lab/alpaca}]}
train: {resume: never}
"""))
    assert cfg.model.name == "Qwen/Qwen2.5-0.5B-Instruct" and cfg.model.template == "chatml"
    assert cfg.data.train[0].name == "alpaca_en_demo" and cfg.data.train[1].path == "tatsu-lab/alpaca"
    assert cfg.train.resume == "never"
    for keyword in ("auto", "force"):  # keywords, not checkpoint paths
        resume = load_config(_yaml(tmp_path, f"data: {{train: a.jsonl}}\ntrain: {{resume: {keyword}}}\n"))
        assert resume.train.resume == keyword
    assert load_config(_yaml(tmp_path, "model: {name: smollm2-135m-instruct}\ndata: {train: a.jsonl}\n")
                       ).model.name == "smollm2-135m-instruct"


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(_yaml(tmp_path, "data: {train: ~/a.jsonl}\noutput: {dir: ~/runs/x}\n"))
    assert cfg.data.train[0].path == str(tmp_path / "home" / "a.jsonl")
    assert cfg.output.dir == str(tmp_path / "home" / "runs" / "x")


def test_overrides_expand_but_stay_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEMO", "/demo")
    path = _yaml(tmp_path / "cfgs", "data: {train: a.jsonl}\nmodel: {template: chat.jinja}\n")
    cfg = load_config(path, ["data.train=mine/b.jsonl", "eval.classification.labels=[a, b]",
                             "eval.classification.data=${DEMO}/dev.jsonl"])
    assert cfg.data.train[0].path == "mine/b.jsonl"
    assert cfg.model.template == str(tmp_path / "cfgs" / "chat.jinja")  # from the YAML: its folder
    assert cfg.eval.classification.data == "/demo/dev.jsonl"
    assert load_config(None, ["data.train=~/c.jsonl"]).data.train[0].path == str(Path.home() / "c.jsonl")


def test_variables_expand_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO", "/odd/$HOME")  # a value holding '$' is taken literally, not expanded again
    cfg = load_config(_yaml(tmp_path, "data: {train: '${DEMO}/a.jsonl'}\n"), ["train.epochs=1"])
    assert cfg.data.train[0].path == "/odd/$HOME/a.jsonl"


def test_reward_files_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg_dir = tmp_path / "configs"
    (cfg_dir / "runs" / "rm").mkdir(parents=True)
    text = """
stage:
  type: grpo
  rewards:
    - {name: my_rewards.py:short}
    - {name: label_match}
    - {name: my_pkg.rewards:fmt}
    - {name: rm, model: runs/rm}
    - {name: judge, endpoint: "http://127.0.0.1:1/v1", api_model: m, rubric_file: rubric.txt}
data: {train: a.jsonl}
"""
    cfg = load_config(str(_yaml(cfg_dir, text)))
    rewards = cfg.stage.model_extra["rewards"]
    assert rewards[0]["name"] == f"{cfg_dir.resolve() / 'my_rewards.py'}:short"
    assert [r["name"] for r in rewards[1:3]] == ["label_match", "my_pkg.rewards:fmt"]
    assert rewards[3]["model"] == str((cfg_dir / "runs" / "rm").resolve())
    assert rewards[4]["rubric_file"] == str((cfg_dir / "rubric.txt").resolve())
    override = load_config(None, ["stage=grpo", "stage.rewards=[{name: x.py:f}]", "data.train=a.jsonl"])
    assert override.stage.model_extra["rewards"][0]["name"] == "x.py:f"  # overrides stay relative to the cwd
