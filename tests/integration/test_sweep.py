"""`tuneforge sweep`: two data sizes with the 656K TinyStories model, recorded as one registry group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.config.load import load_config
from tuneforge.data.catalog import DatasetSpec, fingerprint, load_dataset
from tuneforge.sweep.plan import load_pool, subset_path
from tuneforge.sweep.runner import run_sweep
from tuneforge.utils.errors import ConfigError, DataError

WORDS = {"1": ["happy", "warm", "kind", "sunny"], "0": ["sad", "cold", "mean", "gloomy"]}


def _write_rows(path: Path, n: int, start: int = 0) -> Path:
    rows = []
    for i in range(start, start + n):
        label = str(i % 2)
        word = WORDS[label][i % 4]
        rows.append({"instruction": "Is the story happy? Answer 1 or 0.",
                     "input": f"Tom felt {word} all day. ({i})", "output": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _overrides(model_dir: Path, train: Path) -> list[str]:
    return [f"model.name={model_dir}", "model.template=chatml", f"data.train={train}", "data.cutoff_len=48",
            "output.tensorboard=false", "train.batch_size=4", "train.learning_rate=5e-3", "train.epochs=1",
            "train.warmup_ratio=0", "method.r=4"]


@pytest.fixture
def sweep_data(tmp_path):
    return _write_rows(tmp_path / "train.jsonl", 20), _write_rows(tmp_path / "dev.jsonl", 4, start=100)


def test_sweep_two_sizes_one_group_nested_chart_and_resume(tmp_path, tiny_model_dir, sweep_data, monkeypatch):
    from tuneforge.cli import app
    from tuneforge.registry.queries import evals, list_runs
    from tuneforge.registry.store import open_store

    train, dev = sweep_data
    out = tmp_path / "sweep"
    args = ["sweep", *_overrides(tiny_model_dir, train), "--data-sizes", "8,4", "--eval", str(dev),
            "--labels", "0,1", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"

    state = json.loads((out / "sweep.json").read_text())
    assert [r["size"] for r in state["runs"]] == [4, 8]
    assert all(r["status"] == "succeeded" for r in state["runs"])
    for r in state["runs"]:
        _check_size_metrics(out, r, dev, tiny_model_dir)
    assert state["runs"][0]["metrics"]["eval_loss"] != state["runs"][1]["metrics"]["eval_loss"]  # two models
    assert (out / "sweep.png").stat().st_size > 1000

    # one registry group with two train runs, tagged with their size, each carrying its sweep eval
    store = open_store()
    runs = list_runs(store, group=state["group_id"])
    assert len(runs) == 2 and {r.status for r in runs} == {"succeeded"}
    assert {r.id for r in runs} == {r["run_id"] for r in state["runs"]}
    assert sorted(t for r in runs for t in r.tags if t.startswith("data_size=")) == ["data_size=4", "data_size=8"]
    assert all(evals(store, r.id)[0]["metrics"]["n_unparseable"] == 0 for r in runs)
    by_id = {r["run_id"]: r["metrics"] for r in state["runs"]}
    assert all(evals(store, r.id)[0]["metrics"] == by_id[r.id] for r in runs)

    # nested subsets: the small one is the first rows of the big one; both read back as the pool's first rows
    small = subset_path(out, 4).read_text().splitlines()
    big = subset_path(out, 8).read_text().splitlines()
    assert big[:4] == small and set(small) < set(big)
    cfg = load_config(None, _overrides(tiny_model_dir, train))
    pool = load_pool(cfg)
    for n in (4, 8):
        reread = load_dataset(DatasetSpec(path=str(subset_path(out, n)))).records
        assert fingerprint(reread) == fingerprint(pool.records[:n])
    trained = json.loads((out / "n8" / "run.json").read_text())
    assert trained["data"]["train"]["rows"] == 8

    # a re-run skips finished sizes and their evaluation (a run id the state lost is found in the registry)
    lost = json.loads((out / "sweep.json").read_text())
    lost["runs"][0]["run_id"] = None
    (out / "sweep.json").write_text(json.dumps(lost))

    def no_training(*a, **k):
        raise AssertionError("a finished size was trained again")

    monkeypatch.setattr("tuneforge.train.runner.train", no_training)
    monkeypatch.setattr("tuneforge.sweep.evaluate.evaluate", no_training)
    again = run_sweep(cfg, "4,8", out=out, eval_file=str(dev), labels=["0", "1"])
    assert again.status == "succeeded"
    assert [r["run_id"] for r in again.state["runs"]] == [r["run_id"] for r in state["runs"]]
    assert len(list_runs(store, group=state["group_id"])) == 2

    # the same folder with another config is refused
    other = load_config(None, _overrides(tiny_model_dir, train) + ["train.learning_rate=1e-3"])
    with pytest.raises(ConfigError, match="different config"):
        run_sweep(other, "4,8", out=out, eval_file=str(dev), labels=["0", "1"])


def _check_size_metrics(out: Path, entry: dict, dev: Path, model_dir: Path) -> None:
    """A size's accuracy is what `tuneforge eval task` measures on its adapter, example by example, and its eval
    loss is the one its training run measured on the same dev rows."""
    from tuneforge.eval.runner import build_plan, parse_model_spec, run

    m, run_dir = entry["metrics"], out / f"n{entry['size']}"
    assert m["eval_rows"] == 4
    swept = json.loads((run_dir / "sweep_eval.json").read_text())["classification"]["examples"]
    plan = build_plan([], [str(dev)], labels=["0", "1"], template="chatml", progress=False)
    results = run(parse_model_spec(f"{model_dir}::{run_dir / 'adapter'}"), plan, run_dir / "direct")[0]
    (direct,) = results["tasks"].values()
    assert [(e["id"], e["prediction"]) for e in swept] == [(e["id"], e["prediction"]) for e in direct["examples"]]
    for mine, theirs in zip(swept, direct["examples"]):  # same model: same label probabilities (merged vs. not)
        assert mine["probs"] == pytest.approx(theirs["probs"], abs=2e-3)
    assert m["accuracy"] == direct["metrics"]["accuracy"]
    trained = json.loads((run_dir / "run.json").read_text())
    assert trained["data"]["val"]["rows"] == 4
    assert m["eval_loss"] == trained["metrics"]["eval_loss"] > 0


def test_size_larger_than_data_fails_before_training(tmp_path, tiny_model_dir, sweep_data, monkeypatch):
    train, dev = sweep_data
    monkeypatch.setattr("tuneforge.train.runner.train", lambda *a, **k: pytest.fail("training started"))
    cfg = load_config(None, _overrides(tiny_model_dir, train))
    with pytest.raises(DataError, match=r"data size 50 is larger than the training data .*20 usable rows"):
        run_sweep(cfg, "4,50", out=tmp_path / "sweep", eval_file=str(dev))
    assert not (tmp_path / "sweep").exists()


def test_bad_labels_and_missing_eval_fail_early(tmp_path, tiny_model_dir, sweep_data):
    train, dev = sweep_data
    cfg = load_config(None, _overrides(tiny_model_dir, train))
    with pytest.raises(DataError, match="not one of the labels"):
        run_sweep(cfg, "4", out=tmp_path / "a", eval_file=str(dev), labels=["pos", "neg"])
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        run_sweep(cfg, "4", out=tmp_path / "b")
    with pytest.raises(ConfigError, match="not an integer"):
        run_sweep(cfg, "4,lots", out=tmp_path / "c", eval_file=str(dev))


def test_training_time_adds_up_resumed_segments():
    from tuneforge.sweep.runner import training_seconds

    killed_then_resumed = [{"step": 1, "loss": 1.0, "elapsed_s": 100}, {"step": 2, "loss": 1.0, "elapsed_s": 200},
                           {"step": 2, "loss": 0.9, "elapsed_s": 60}, {"step": 3, "loss": 0.8, "elapsed_s": 90},
                           {"step": 3, "train_runtime": 95.0, "elapsed_s": 95}]
    assert training_seconds(killed_then_resumed) == 295.0
    interrupted_then_resumed = [{"step": 1, "loss": 1.0, "elapsed_s": 50}, {"step": 1, "train_runtime": 55.0},
                                {"step": 2, "loss": 0.5, "elapsed_s": 30}, {"step": 2, "train_runtime": 31.0}]
    assert training_seconds(interrupted_then_resumed) == 86.0


# --- grids: a method shoot-out ----------------------------------------------------------------------------------

GRID = ["--grid", "method.type=lora,ia3", "--grid", "train.learning_rate=1e-3,5e-3"]


def test_grid_two_methods_two_rates_table_chart_group_and_resume(tmp_path, tiny_model_dir, sweep_data,
                                                                    monkeypatch):

    from tuneforge.cli import app
    from tuneforge.registry.queries import list_runs
    from tuneforge.registry.store import open_store
    from tuneforge.sweep.plot import table_rows

    train, dev = sweep_data
    out = tmp_path / "grid"
    base = [*_overrides(tiny_model_dir, train), "train.max_steps=2"]  # a lora base config with method.r=4
    res = CliRunner().invoke(app, ["sweep", *base, *GRID, "--eval", str(dev), "--labels", "0,1", "--out", str(out)])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"

    state = json.loads((out / "sweep.json").read_text())
    names = ["n20-method.type=lora-train.learning_rate=1e-3", "n20-method.type=lora-train.learning_rate=5e-3",
             "n20-method.type=ia3-train.learning_rate=1e-3", "n20-method.type=ia3-train.learning_rate=5e-3"]
    assert [r["cell"] for r in state["runs"]] == names  # all training rows (no --data-sizes), grid order
    assert list(state["cells"]) == names and state["cells"][names[2]] == {"method.type": "ia3",
                                                                         "train.learning_rate": "1e-3"}
    # the plan says, per ia3 cell, that the base config's lora rank was dropped
    plan = [line for line in res.output.splitlines() if "dropped method.r" in line]
    assert [line.split()[0] for line in plan] == names[2:]
    for r in state["runs"]:
        _check_grid_cell(out, r)
    share = {r["overrides"]["method.type"]: r["trainable_percent"] for r in state["runs"]}
    assert share["ia3"] < share["lora"]  # ia3 trains a scaling vector, lora r=4 two matrices per layer

    # one table row per cell (grid values as columns) and one bar chart
    header, rows = table_rows(state)
    assert header[:3] == ["method", "learning_rate", "size"]
    assert [row[:2] for row in rows] == [["lora", "1e-3"], ["lora", "5e-3"], ["ia3", "1e-3"], ["ia3", "5e-3"]]
    col = {h: header.index(h) for h in ("s/step", "trainable %", "peak RSS MB", "final loss", "acc")}
    assert all(float(row[col[h]]) > 0 for row in rows for h in ("s/step", "trainable %", "peak RSS MB", "final loss"))
    assert all(0 <= float(row[col["acc"]]) <= 1 for row in rows)
    assert "trainable" in res.output and "RSS" in res.output and (out / "sweep.png").stat().st_size > 1000
    assert state["chart"] == str(out / "sweep.png")

    # one registry group with the four runs, tagged with their grid values
    store = open_store()
    runs = list_runs(store, group=state["group_id"])
    assert len(runs) == 4 and {r.status for r in runs} == {"succeeded"}
    assert {r.id for r in runs} == {r["run_id"] for r in state["runs"]}
    assert sorted(r.method for r in runs) == ["ia3", "ia3", "lora", "lora"]
    assert all("method.type=" + r.method in r.tags for r in runs)

    # a re-run trains and evaluates nothing, and keeps every cell's measurements
    def no_training(*a, **k):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("tuneforge.sweep.runner.train_in_child", no_training)
    monkeypatch.setattr("tuneforge.sweep.evaluate.evaluate", no_training)
    cfg = load_config(None, base)
    again = run_sweep(cfg, out=out, grid=GRID[1::2], eval_file=str(dev), labels=["0", "1"])
    assert again.status == "succeeded" and again.state["runs"] == state["runs"]
    assert len(list_runs(store, group=state["group_id"])) == 4


def _check_grid_cell(out: Path, entry: dict) -> None:
    """The cell's values reached its run (config.yaml as trained, run.json), and its measurements are real."""
    import yaml

    method, rate = entry["overrides"]["method.type"], float(entry["overrides"]["train.learning_rate"])
    run_dir = out / entry["cell"]
    trained = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert trained["method"]["type"] == method and trained["train"]["learning_rate"] == rate
    assert trained["method"].get("r") == (4 if method == "lora" else None)  # ia3 has no rank: dropped
    assert entry["dropped"] == ([] if method == "lora" else ["r"])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["method"] == method and info["status"] == "succeeded" and info["run_id"] == entry["run_id"]
    params = info["parameters"]
    assert entry["trainable_percent"] == pytest.approx(100 * params["trainable"] / params["total"], abs=1e-4)
    assert entry["trainable_percent"] > 0
    assert entry["steps"] == 2 and entry["seconds_per_step"] > 0
    assert 50 < entry["peak_rss_mb"] < 16_000  # the cell's training process alone: interpreter, torch, model
    assert entry["final_loss"] > 0 and entry["metrics"]["eval_loss"] > 0
    assert entry["metrics"]["eval_rows"] == 4 and entry["metrics"]["n_unparseable"] == 0


def test_invalid_grid_cell_fails_before_any_training(tmp_path, tiny_model_dir, sweep_data, monkeypatch):
    from tuneforge.cli import app

    train, dev = sweep_data
    monkeypatch.setattr("tuneforge.sweep.runner.train_in_child", lambda *a, **k: pytest.fail("training started"))
    out = tmp_path / "bad"
    res = CliRunner().invoke(app, ["sweep", *_overrides(tiny_model_dir, train), "--grid", "method.type=lora,nosuch",
                                   "--eval", str(dev), "--out", str(out)])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "sweep cell n20-method.type=nosuch" in res.exception.message
    assert "unknown method 'nosuch'" in res.exception.message and res.exception.hint
    assert not out.exists()
    cfg = load_config(None, _overrides(tiny_model_dir, train))
    with pytest.raises(ConfigError, match="a sweep needs data sizes, a grid, or both"):
        run_sweep(cfg, out=out, eval_file=str(dev))


def test_a_cell_process_reports_its_exit_and_its_own_peak_memory(tmp_path):
    from tuneforge.sweep.child import train_in_child

    ballast = b"x" * 1_500_000_000  # a big parent: a forked child inherits its high-water mark in ru_maxrss
    run = train_in_child(tmp_path / "missing.yaml", "sweep-test")  # the child starts, finds no config, exits 2
    assert run.exit_code == 2 and run.status == "failed"
    assert run.peak_rss_mb is not None and 5 < run.peak_rss_mb < 1000 < len(ballast) / 2**20


def test_an_interrupted_or_failed_cell_stops_the_sweep(tmp_path, tiny_model_dir, sweep_data, monkeypatch):
    from tuneforge.sweep.child import ChildRun
    from tuneforge.utils.errors import TuneforgeError

    train, dev = sweep_data
    cfg = load_config(None, _overrides(tiny_model_dir, train))
    monkeypatch.setattr("tuneforge.sweep.runner.train_in_child", lambda *a, **k: ChildRun(130, 321.0))
    stopped = run_sweep(cfg, out=tmp_path / "s", grid=["method.type=lora,ia3"], eval_file=str(dev))
    assert stopped.status == "interrupted" and stopped.chart is None
    assert [(r["status"], r.get("peak_rss_mb")) for r in stopped.state["runs"]] == [("interrupted", 321.0)]
    assert (tmp_path / "s" / "configs" / "n20-method.type=lora.yaml").is_file()  # what the child would train

    monkeypatch.setattr("tuneforge.sweep.runner.train_in_child", lambda *a, **k: ChildRun(-9, 100.0))
    with pytest.raises(TuneforgeError, match=r"sweep cell n20-method.type=lora: training was killed by SIGKILL"):
        run_sweep(cfg, out=tmp_path / "s", grid=["method.type=lora,ia3"], eval_file=str(dev))
    state = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert state["runs"][0]["status"] == "failed" and state["runs"][0]["peak_rss_mb"] == 321.0  # the largest peak
