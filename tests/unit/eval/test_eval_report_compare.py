"""Reports (JSON + Markdown + HTML + PNG charts) and before/after comparison on hand-made results."""

import json

import pytest

from tuneforge.eval.compare import compare_results, is_results_path, write_compare
from tuneforge.eval.metrics import classification_metrics
from tuneforge.eval.report import load_results, write_report
from tuneforge.utils.errors import DataError


def mc_result(correct: list[bool]) -> dict:
    examples = [{"id": f"q{i}", "subject": "math" if i % 2 else "history", "question": f"question {i}",
                 "correct": c, "pred_text": "yes" if c else "no", "gold_text": "yes"} for i, c in enumerate(correct)]
    acc = sum(correct) / len(correct)
    return {"kind": "multiple_choice", "examples": examples,
            "metrics": {"n": len(correct), "acc": acc, "acc_stderr": 0.1, "acc_norm": acc, "acc_norm_stderr": 0.1,
                        "chance": 0.25},
            "per_subject": {"history": {"n": 2, "acc": 0.5, "acc_norm": 0.5, "category": "Humanities"},
                            "math": {"n": 2, "acc": 1.0, "acc_norm": 1.0, "category": "STEM"}},
            "per_category": {"Humanities": {"n": 2, "acc": 0.5, "acc_norm": 0.5}},
            "timing": {"sec_per_100": 1.0}, "settings": {"shots": 0, "style": "cloze"}}


def cls_result(preds: list[str]) -> dict:
    golds = ["1", "0", "1", "0"]
    examples = [{"id": f"dev.jsonl:{i}", "prompt": "p", "reference": g, "prediction": p, "correct": p == g,
                 "flags": {"wrong_format": 1.0} if p not in ("0", "1") else {}}
                for i, (g, p) in enumerate(zip(golds, preds))]
    from tuneforge.eval.analysis import summarize_flags

    return {"kind": "classification", "examples": examples, "flags": summarize_flags(examples),
            "metrics": classification_metrics(golds, [p if p in ("0", "1") else None for p in preds], ["0", "1"]),
            "timing": {"sec_per_100": 2.0}, "settings": {}}


def results(label: str, mc: list[bool], preds: list[str]) -> dict:
    return {"model": {"name": label, "adapter": None, "label": label}, "settings": {},
            "tasks": {"arc_easy": mc_result(mc), "sentiment": cls_result(preds)}}


def test_report_files_and_reload(tmp_path):
    paths = write_report(results("base", [True, False, True, True], ["1", "1", "??", "0"]), tmp_path)
    md = paths["markdown"].read_text()
    assert "| arc_easy | multiple_choice | 4 |" in md and "confusion" in md and "error flags" in md
    assert "<table>" in paths["html"].read_text()
    for png in ("arc_easy_subjects.png", "sentiment_confusion.png", "sentiment_flags.png"):
        assert (tmp_path / png).stat().st_size > 1000
    again = load_results(tmp_path)
    assert again["tasks"]["sentiment"]["metrics"]["n_unparseable"] == 1 and is_results_path(str(tmp_path))


def test_load_results_rejects_other_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="not a tuneforge eval results file"):
        load_results(p)


def test_compare_wins_losses_ties_and_worse_examples(tmp_path):
    a = results("base", [True, False, True, False], ["1", "1", "??", "0"])
    b = results("tuned", [True, True, False, True], ["1", "0", "1", "0"])
    cmp = compare_results(a, b)
    arc = cmp["tasks"]["arc_easy"]
    assert (arc["wins"], arc["losses"], arc["ties"]) == (2, 1, 1)
    assert arc["metrics"]["acc"]["delta"] == pytest.approx(0.25)
    assert [w["id"] for w in arc["worse"]] == ["q2"]
    sent = cmp["tasks"]["sentiment"]
    assert (sent["wins"], sent["losses"], sent["ties"]) == (2, 0, 2)
    assert sent["metrics"]["n_unparseable"]["delta"] == -1
    paths = write_compare(cmp, tmp_path)
    text = paths["markdown"].read_text()
    assert "examples that got worse (1)" in text and "| arc_easy | acc | 0.5000 | 0.7500 | +0.2500 |" in text
    assert (tmp_path / "compare.png").is_file()
