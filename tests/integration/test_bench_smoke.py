"""Smoke test of the SFT throughput benchmark (bench/sft_throughput.py --quick) on the 656K TinyStories model.

Checks that every contestant ran and that the JSON carries the reported fields; no timing is asserted (the numbers
of a shared 2-core machine mean nothing in a test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "sft_throughput.py"


@pytest.mark.timeout(300)
def test_bench_quick_writes_the_table_fields(tmp_path, tiny_model_dir, demo_data):
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(BENCH), "--quick", "--model", str(tiny_model_dir), "--template", "chatml",
           "--data", str(demo_data / "llamafactory_demo" / "alpaca_en_demo.json"), "--max-samples", "48",
           "--steps", "2", "--contestants", "tf_unpacked,hand,tf_packed", "--out", str(out)]  # anchors: no venvs
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=str(ROOT), timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "unpacked_vs_hand" in proc.stdout  # the printed table

    result = json.loads(out.read_text())
    assert set(result["contestants"]) == {"tf_unpacked", "hand", "tf_packed"}
    for name, c in result["contestants"].items():
        for key in ("tokens_per_s", "tokens_per_cpu_s", "padding_fraction", "peak_rss_mb", "quiet_steps", "steps"):
            assert key in c, (name, key)
        assert c["quiet_steps"] == 1 and len(c["steps"]) == 2
        assert c["tokens_per_s"] > 0 and 0 <= c["padding_fraction"] < 1 and c["peak_rss_mb"] > 0
        for step in c["steps"]:  # CPU time split into user and system seconds, which add up to it
            assert step["user"] > 0 and step["sys"] >= 0 and abs(step["user"] + step["sys"] - step["cpu"]) < 1e-6
        assert c["tokens_per_user_s"] >= c["tokens_per_cpu_s"]
    # the hand loop replayed exactly tuneforge's unpacked batches
    assert [s["real"] for s in result["contestants"]["hand"]["steps"]] == \
        [s["real"] for s in result["contestants"]["tf_unpacked"]["steps"]]
    for key in ("unpacked_vs_hand", "packed_vs_unpacked"):
        r = result["ratios"][key]
        assert {"median_round_wall", "median_round_cpu", "median_round_user", "aggregate_wall"} <= set(r)
        assert key in result["targets"]
    assert result["config"]["batch_size"] == 4 and result["config"]["cutoff"] == 64  # --quick
    assert result["config"]["malloc_trim"] is True  # --trim auto with three contestants
    assert result["epoch_plan"]["grouped"]["padding_fraction"] >= 0
    assert result["contestants"]["tf_unpacked"]["runner"]["real_tokens"] > 0


@pytest.mark.timeout(300)
def test_serve_load_bench_writes_levels_and_equal_texts(tmp_path, tiny_model_dir):
    """bench/serve_load.py on the 656K model, N=1,2: a row per level, server answers equal the in-process ones."""
    out = tmp_path / "serve.json"
    cmd = [sys.executable, str(ROOT / "bench" / "serve_load.py"), "--model", str(tiny_model_dir), "--template",
           "chatml", "--device", "cpu", "--concurrency", "1,2", "--max-tokens", "6", "--requests-per-level", "3",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=str(ROOT), timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TTFT p50" in proc.stdout  # the printed table

    result = json.loads(out.read_text())
    assert [s["concurrency"] for s in result["levels"]] == [1, 2] and result["all_texts_match"]
    for level in result["levels"]:
        assert level["requests"] == 3 and level["texts_match"] and level["throughput_ratio"] > 0
        assert 0 < level["ttft_p50_s"] <= level["ttft_p95_s"] and level["latency_p50_s"] <= level["latency_p95_s"]
        assert all(r["tokens"] == 6 for r in level["server"] + level["in_process"])  # the base never ends early
