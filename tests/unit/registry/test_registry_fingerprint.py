"""Dataset fingerprints as the registry uses them: content only, stable across files, formats and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlalchemy import func, select

from tuneforge.data.catalog import DatasetSpec, load_dataset
from tuneforge.registry import queries
from tuneforge.registry.api import RunRecorder
from tuneforge.registry.records import Dataset

ROWS = [{"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "Add", "input": "1 + 1", "output": "2"}]


def _fp(path) -> str:
    return load_dataset(DatasetSpec(path=str(path))).fingerprint


def test_same_content_same_fingerprint_across_files_and_formats(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    b = tmp_path / "copy" / "b.json"  # other name, folder, container format, key order and whitespace
    b.parent.mkdir()
    b.write_text(json.dumps([dict(reversed(list(r.items()))) for r in ROWS], indent=4))
    c = tmp_path / "c.jsonl"  # the same conversations as OpenAI messages
    c.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": "\n".join(x for x in (r["instruction"], r["input"]) if x)},
        {"role": "assistant", "content": r["output"]}]}) + "\n" for r in ROWS))
    assert _fp(a) == _fp(b) == _fp(c)
    changed = tmp_path / "d.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:1] + [{**ROWS[1], "output": "3"}]))
    assert _fp(changed) != _fp(a)


def test_fingerprint_is_stable_across_processes(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    code = ("import sys; from tuneforge.data.catalog import DatasetSpec, load_dataset; "
            "print(load_dataset(DatasetSpec(path=sys.argv[1])).fingerprint)")
    outs = {subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert outs == {_fp(path)}


def test_registry_links_runs_by_content(store, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.json"
    a.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    b.write_text(json.dumps(ROWS))
    ids = []
    for path in (a, b):
        res = load_dataset(DatasetSpec(path=str(path)))
        rec = RunRecorder.start(kind="train", config={}, base_model="tiny",
                                datasets=[(res.name, res.fingerprint, len(res.records))])
        rec.finish()
        ids.append(rec.run_id)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 1
    fp = load_dataset(DatasetSpec(path=str(a))).fingerprint
    assert {r.id for r in queries.list_runs(store, dataset=fp[:10])} == set(ids)
