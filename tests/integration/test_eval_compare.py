"""`tuneforge eval compare BEFORE MODEL::ADAPTER` with an adapter that really was trained: the comparison must see
that the adapter changes answers, and the eval of the adapter is recorded as a child of its training run.

The untrained 656K TinyStories model answers (almost) every sentiment row with the same label. The adapter is
trained for a second on rows of the other label (LoRA, high learning rate), so it moves answers to that label;
both sides are scored on the same 16 dev rows (the seeded --limit sample).
"""

import json
from collections import Counter

from typer.testing import CliRunner

from train_helpers import tiny_config
from tuneforge.cli import app

N_DEV = 16


def _eval_args(demo_data, out):
    return ["--data", str(demo_data / "sentiment_en" / "dev.jsonl"), "--labels", "0,1", "--template", "chatml",
            "--limit", str(N_DEV), "--no-progress", "-o", str(out)]


def _train_adapter(tmp_path, tiny_model_dir, demo_data, label: str):
    from tuneforge.train.runner import train

    rows = [r for r in (demo_data / "sentiment_en" / "train.jsonl").read_text(encoding="utf-8").splitlines()
            if json.loads(r)["output"] == label][:48]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = train(tiny_config(tmp_path, tiny_model_dir, "data.cutoff_len=128", "train.epochs=3", data=data))
    assert result.status == "succeeded" and result.run_id
    return tmp_path / "run" / "adapter", result.run_id


def test_compare_base_with_trained_adapter_sees_the_difference(tmp_path, tiny_model_dir, demo_data):
    import torch

    from tuneforge.registry import queries
    from tuneforge.registry.lineage import lineage
    from tuneforge.registry.store import open_store

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(app, ["eval", "task", "-m", str(tiny_model_dir), *_eval_args(demo_data,
                                                                                              tmp_path / "before")])
        assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
        before = json.loads((tmp_path / "before" / "results.json").read_text())
        usual = Counter(e["prediction"] for e in before["tasks"]["sentiment_en/dev"]["examples"]).most_common(1)[0][0]
        adapter, train_run = _train_adapter(tmp_path, tiny_model_dir, demo_data, "1" if usual == "0" else "0")
        res = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "before"), f"{tiny_model_dir}::{adapter}",
                                       *_eval_args(demo_data, tmp_path / "cmp")])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"

    cmp = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert cmp["b"].endswith("::" + str(adapter))
    c = cmp["tasks"]["sentiment_en/dev"]
    assert c["paired"] == N_DEV and c["wins"] + c["losses"] > 0, c
    after = json.loads((tmp_path / "cmp" / "b" / "results.json").read_text())
    ex_a, ex_b = (side["tasks"]["sentiment_en/dev"]["examples"] for side in (before, after))
    assert [e["id"] for e in ex_a] == [e["id"] for e in ex_b]  # the same seeded sample on both sides
    assert sum(ea["correct"] != eb["correct"] for ea, eb in zip(ex_a, ex_b)) == c["wins"] + c["losses"]
    acc = [side["tasks"]["sentiment_en/dev"]["metrics"]["accuracy"] for side in (before, after)]
    assert c["metrics"]["accuracy"]["delta"] == acc[1] - acc[0] == (c["wins"] - c["losses"]) / N_DEV

    # lineage: data -> train -> eval of its adapter; the eval of the bare model has no parent
    store = open_store()
    assert queries.get_run(store, after["run_id"]).parent_run_id == train_run
    assert queries.get_run(store, before["run_id"]).parent_run_id is None
    tree = lineage(store, after["run_id"])
    assert tree["root"] == train_run and tree["datasets"][0]["role"] == "train"
    child = next(n for n in tree["tree"]["children"] if n["id"] == after["run_id"])
    assert child["kind"] == "eval" and child["evals"][0]["name"] == "sentiment_en/dev"
    assert [d["role"] for d in child["datasets"]] == ["eval"]
