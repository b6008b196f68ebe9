"""`tuneforge eval` end to end on the 656K model: bad input fails before any weights load; reports are written;
compare works from saved results."""

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.utils.errors import DataError, TuneforgeError

runner = CliRunner()


def _no_weights(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("model weights were loaded before the input was validated")

    monkeypatch.setattr("tuneforge.models.load.load_for_inference", boom)


def test_bad_benchmark_file_fails_before_the_model_loads(tmp_path, monkeypatch, tiny_model_dir):
    _no_weights(monkeypatch)
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n'
                   '{"question": "q", "choices": ["a", "b"], "answer": 5}\n')
    res = runner.invoke(app, ["eval", "bench", "-m", str(tiny_model_dir), "--tasks", f"arc_easy,{bad}"])
    assert isinstance(res.exception, DataError)
    assert f"{bad}:2 field 'answer'" in str(res.exception)


def test_bad_label_in_task_file_fails_before_the_model_loads(tmp_path, monkeypatch, tiny_model_dir):
    _no_weights(monkeypatch)
    data = tmp_path / "dev.jsonl"
    rows = [{"instruction": "sentiment?", "input": "good", "output": "1"},
            {"instruction": "sentiment?", "input": "bad", "output": "negative"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = runner.invoke(app, ["eval", "task", "-m", str(tiny_model_dir), "--data", str(data), "--labels", "0,1"])
    assert isinstance(res.exception, DataError)
    assert (res.exception.file, res.exception.line, res.exception.field) == (str(data), 2, "output")


def test_missing_chat_template_is_a_clear_error_before_weights(monkeypatch, tiny_model_dir, demo_data):
    _no_weights(monkeypatch)
    res = runner.invoke(app, ["eval", "task", "-m", str(tiny_model_dir), "--data",
                              str(demo_data / "sentiment_en" / "dev.jsonl"), "--labels", "0,1", "--limit", "4"])
    assert isinstance(res.exception, TuneforgeError)
    assert "no chat template" in res.exception.message and "--template" in (res.exception.hint or "")


def test_bench_task_and_compare_end_to_end(tmp_path, tiny_model_dir, demo_data):
    bench = tmp_path / "mine.jsonl"
    bench.write_text("\n".join(json.dumps({"id": f"q{i}", "question": f"Tom has {i} cats. How many cats?",
                                           "choices": [str(i), str(i + 1), "none"], "answer": 0,
                                           "subject": "count"}) for i in range(6)) + "\n")
    base = ["-m", str(tiny_model_dir), "--no-progress", "--batch-size", "4"]
    res = runner.invoke(app, ["eval", "bench", *base, "--tasks", f"{bench},mmlu", "--limit", "4",
                              "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "a" / "results.json").read_text())
    assert out["tasks"]["mine"]["metrics"]["n"] == 4 and out["tasks"]["mmlu"]["kind"] == "multiple_choice"
    assert (tmp_path / "a" / "report.md").is_file() and (tmp_path / "a" / "report.html").is_file()
    res = runner.invoke(app, ["eval", "task", *base, "--template", "chatml", "--data",
                              str(demo_data / "sentiment_en" / "dev.jsonl"), "--labels", "0,1", "--limit", "6",
                              "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    cls = json.loads((tmp_path / "b" / "results.json").read_text())["tasks"]["sentiment_en/dev"]
    assert cls["metrics"]["n"] == 6 and len(cls["metrics"]["confusion"]["matrix"]) == 2
    edited, expected = _flip_first_two(out)
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "results.json").write_text(json.dumps(edited))
    res = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "edited" / "results.json"),
                              "-o", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert (cmp["a"], cmp["b"]) == (out["model"]["label"], "edited copy")
    mine = cmp["tasks"]["mine"]
    assert (mine["wins"], mine["losses"], mine["ties"]) == expected
    assert [w["id"] for w in mine["worse"]] == [e["id"] for e in out["tasks"]["mine"]["examples"][:2]
                                               if e["correct"]]
    assert mine["metrics"]["acc"]["delta"] == pytest.approx((expected[0] - expected[1]) / 4)
    assert cmp["tasks"]["mmlu"]["ties"] == 4 and cmp["tasks"]["mmlu"]["metrics"]["acc"]["delta"] == 0


def _flip_first_two(results: dict) -> tuple[dict, tuple[int, int, int]]:
    """A copy of saved results in which the first two `mine` answers flipped between right and wrong."""
    edited = json.loads(json.dumps(results))
    edited["model"]["label"] = "edited copy"
    task = edited["tasks"]["mine"]
    for ex in task["examples"][:2]:
        ex["correct"] = not ex["correct"]
    task["metrics"]["acc"] = sum(e["correct"] for e in task["examples"]) / len(task["examples"])
    wins = sum(e["correct"] for e in task["examples"][:2])
    return edited, (wins, 2 - wins, 2)


@pytest.mark.parametrize("spec,expected", [("m", ("m", None)), ("m::runs/x/adapter", ("m", "runs/x/adapter"))])
def test_model_spec(spec, expected):
    from tuneforge.eval.runner import parse_model_spec

    s = parse_model_spec(spec)
    assert (s.model, s.adapter) == expected
