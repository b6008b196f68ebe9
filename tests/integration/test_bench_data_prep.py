"""Smoke test of the data preparation benchmark (bench/data_prep.py): its synthetic rows, and its tuneforge side
(`tuneforge data prepare`, cold then warm) on 200 rows and the 656K TinyStories model. The LLaMA-Factory side is left
out: it installs a venv of its own (minutes). No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "data_prep.py"


@pytest.fixture(scope="module")
def data_prep():
    sys.path.insert(0, str(BENCH.parent))
    try:
        import data_prep

        yield data_prep
    finally:
        sys.path.remove(str(BENCH.parent))


def test_synthetic_rows_are_seeded_varied_and_reused(tmp_path, data_prep):
    a = data_prep.write_rows(tmp_path / "a.jsonl", 300, seed=1)
    b = data_prep.write_rows(tmp_path / "b.jsonl", 300, seed=1)
    c = data_prep.write_rows(tmp_path / "c.jsonl", 300, seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert len(rows) == 300 and all(set(r) == {"instruction", "input", "output"} for r in rows)
    answers = [len(r["output"].split()) for r in rows]
    assert min(answers) >= 20 and max(answers) <= 400 and len(set(answers)) > 100
    assert 0.25 < sum(bool(r["input"]) for r in rows) / len(rows) < 0.55
    written = a.stat().st_mtime_ns
    data_prep.write_rows(a, 300, seed=1)  # the same rows and seed: the file is reused, not written again
    assert a.stat().st_mtime_ns == written


@pytest.mark.timeout(120)
def test_tuneforge_side_cold_then_warm(tmp_path, tiny_model_dir):
    out = tmp_path / "data_prep.json"
    cmd = [sys.executable, str(BENCH), "--rows", "200", "--num-proc", "1", "--contestants", "tf_cold,tf_warm",
           "--model", str(tiny_model_dir), "--template", "chatml", "--work", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=str(ROOT), timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| tf_cold |" in proc.stdout and "target warm_under_5s" in proc.stdout  # the printed table

    result = json.loads(out.read_text())
    cold, warm = result["results"]["tf_cold"], result["results"]["tf_warm"]
    assert cold["ok"] and warm["ok"], (cold.get("error"), warm.get("error"))
    assert (cold["cache_hit"], warm["cache_hit"]) == (False, True)
    assert cold["reported"]["cache_dir"] == warm["reported"]["cache_dir"]
    for run in (cold, warm):
        assert run["items"] == 200 and run["disk_bytes"] > 0 and run["wall_s"] > 0 and run["rows_per_s"] > 0
        assert 0 < run["peak_tree_pss_gb"] <= run["peak_tree_rss_gb"] and run["max_single_rss_gb"] > 0
    assert set(result["targets"]) == {"warm_under_5s", "peak_under_4gb"}  # cold vs LLaMA-Factory: not run
    assert result["ratios"]["tf_warm_s"] == warm["wall_s"]
