"""`tuneforge runs` commands on a small hand-made registry."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli.runs_cmd import app
from tuneforge.registry import queries
from tuneforge.registry.api import RunRecorder
from tuneforge.registry.store import close_store

runner = CliRunner()


@pytest.fixture
def registry_url(tmp_path, monkeypatch):
    """SQLite only: these tests are about the CLI / mirrors, the backends are covered by the other tests."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("TUNEFORGE_REGISTRY_URL", url)
    yield url
    close_store(url)


def _run(args):
    result = runner.invoke(app, args)
    return result


@pytest.fixture
def lineage_runs(store, tmp_path):
    sft = RunRecorder.start(kind="train", config={"lr": 1e-4, "epochs": 1}, base_model="tiny",
                            base_model_identity="h", stage="sft", method="lora",
                            datasets=[("alpaca", "aaaa1111", 5)], tags=["baseline"])
    for s in range(5):
        sft.log_metrics(s, {"loss": 2.0 - 0.1 * s})
    (tmp_path / "adapter").mkdir()
    sft.add_artifact("adapter", tmp_path / "adapter")
    sft.finish()
    dpo = RunRecorder.start(kind="train", config={"lr": 5e-5, "epochs": 1, "beta": 0.1}, base_model="tiny",
                            base_model_identity="h", stage="dpo", method="lora", parent_run_id=sft.run_id,
                            datasets=[("prefs", "bbbb2222", 3)])
    for s in range(5):
        dpo.log_metrics(s, {"loss": 1.0 - 0.1 * s})
    dpo.add_eval("sentiment", {"accuracy": 0.9})
    dpo.finish()
    export = RunRecorder.start(kind="export", config={}, base_model="tiny", parent_run_id=dpo.run_id)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "model.safetensors").write_bytes(b"0" * 100)
    export.add_artifact("merged", merged)
    export.finish()
    return sft.run_id, dpo.run_id, export.run_id


def test_list_and_filters_json(lineage_runs):
    sft, dpo, export = lineage_runs
    res = _run(["list", "--json"])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)] == [export, dpo, sft]
    res = _run(["list", "--json", "--tag", "baseline"])
    assert [r["id"] for r in json.loads(res.stdout)] == [sft]
    res = _run(["list", "--json", "--dataset", "bbbb"])
    assert [r["id"] for r in json.loads(res.stdout)] == [dpo]
    assert _run(["list"]).exit_code == 0
    bad = _run(["list", "--status", "weird"])
    assert bad.exit_code != 0


def test_show_by_prefix(lineage_runs):
    sft, dpo, _ = lineage_runs
    res = _run(["show", dpo[:7], "--json"])
    d = json.loads(res.stdout)
    assert d["id"] == dpo and d["parent_run_id"] == sft and d["final_metrics"]["loss"] == pytest.approx(0.6)
    assert d["evals"][0]["metrics"] == {"accuracy": 0.9}
    assert _run(["show", dpo]).exit_code == 0


def test_compare_writes_png(lineage_runs, tmp_path):
    sft, dpo, _ = lineage_runs
    png = tmp_path / "cmp.png"
    res = _run(["compare", sft, dpo, "--out", str(png), "--json"])
    d = json.loads(res.stdout)
    assert d["config_diff"]["lr"] == [1e-4, 5e-5] and d["config_diff"]["beta"] == ["<absent>", 0.1]
    assert d["config_diff"]["stage"] == ["sft", "dpo"] and "epochs" not in d["config_diff"]
    assert d["metrics"]["loss"] == [pytest.approx(1.6), pytest.approx(0.6)]
    assert d["plot"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    assert _run(["compare", sft, dpo, "--out", str(png)]).exit_code == 0


def test_lineage_tree(lineage_runs):
    sft, dpo, export = lineage_runs
    d = json.loads(_run(["lineage", export, "--json"]).stdout)
    assert d["root"] == sft and d["datasets"][0]["fingerprint"] == "aaaa1111"
    child = d["tree"]["children"][0]
    assert child["id"] == dpo and child["children"][0]["id"] == export
    assert child["children"][0]["focus"] and child["children"][0]["artifacts"][0]["kind"] == "merged"
    text = _run(["lineage", export]).stdout
    assert "alpaca" in text and "prefs" in text and "merged" in text


def test_a_run_folder_names_its_run(lineage_runs, tmp_path):
    sft, dpo, _ = lineage_runs
    (tmp_path / "dpo_run").mkdir()
    (tmp_path / "dpo_run" / "run.json").write_text(json.dumps({"run_id": dpo, "status": "succeeded"}))
    d = json.loads(_run(["lineage", str(tmp_path / "dpo_run"), "--json"]).stdout)
    assert d["root"] == sft and d["tree"]["children"][0]["id"] == dpo


def test_rm_asks_and_never_deletes_without_confirmation(lineage_runs, store, tmp_path):
    sft, dpo, export = lineage_runs
    res = _run(["rm", export])  # CliRunner has no terminal: refuse
    assert res.exit_code != 0 and (tmp_path / "merged").exists()
    assert queries.get_run(store, export)


def test_rm_declined_then_confirmed(lineage_runs, store, tmp_path, monkeypatch):
    sft, dpo, export = lineage_runs
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    res = runner.invoke(app, ["rm", export], input="n\n")
    assert res.exit_code == 1 and (tmp_path / "merged").exists()
    res = runner.invoke(app, ["rm", sft, "--yes"])
    assert res.exit_code == 0 and not (tmp_path / "adapter").exists()
    assert queries.get_run(store, dpo).parent_run_id is None
    assert [r.id for r in queries.list_runs(store)] == [export, dpo]


def test_rm_keep_files(lineage_runs, store, tmp_path):
    _, _, export = lineage_runs
    assert runner.invoke(app, ["rm", export, "--yes", "--keep-files"]).exit_code == 0
    assert (tmp_path / "merged" / "model.safetensors").exists()
