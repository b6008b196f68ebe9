"""train.attention / lora_kernel / threads / allocator on real runs of the 656K model: the kernel switch reaches the
model and leaves the loss curve where it was, run.json records the runtime, and `tuneforge train` preloads the
allocator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerCallback

from train_helpers import losses, tiny_config, write_story_data
from tuneforge.train import cpu_runtime
from tuneforge.train.runner import train

ROOT = Path(__file__).resolve().parents[2]
# sdpa and eager compute the same softmax(QK^T/sqrt(d))V in a different order: float32 rounding only. Measured on
# this model: 5e-7 over 3 steps; 1e-4 leaves room for the growth of rounding differences over a few steps while
# any real difference (a mask, a scale) moves the loss by more than 1e-2.
ATTENTION_TOLERANCE = 1e-4


class SeenAttention(TrainerCallback):
    def __init__(self):
        self.kernel = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.kernel = model.config._attn_implementation


def _run(tmp_path, model_dir, *overrides):
    seen = SeenAttention()
    cfg = tiny_config(tmp_path, model_dir, "train.max_steps=3", "train.epochs=1", "output.plot=false",
                      "train.threads=1", *overrides)
    result = train(cfg, extra_callbacks=[seen])
    assert result.status == "succeeded"
    return losses(tmp_path / "run"), seen.kernel, json.loads((tmp_path / "run" / "run.json").read_text())


def test_eager_and_sdpa_give_the_same_loss_curve_and_are_recorded(tmp_path, tiny_model_dir):
    sdpa, kernel_s, info_s = _run(tmp_path / "sdpa", tiny_model_dir)
    eager, kernel_e, info_e = _run(tmp_path / "eager", tiny_model_dir, "train.attention=eager")
    assert (kernel_s, kernel_e) == ("sdpa", "eager")  # the switch reached the model
    assert len(sdpa) == len(eager) == 3
    assert max(abs(a - b) for a, b in zip(sdpa, eager)) < ATTENTION_TOLERANCE, (sdpa, eager)
    runtime = info_e["runtime"]
    assert runtime["attention"] == "eager" and info_s["runtime"]["attention"] == "sdpa"
    assert runtime["threads"] == 1 and runtime["threads_setting"] == 1
    assert runtime["compile"] is False and runtime["allocator_setting"] == "auto"
    assert runtime["allocator"] == cpu_runtime.loaded_allocator()  # in-process: what pytest started with


def test_packed_runs_take_varlen_by_default_with_the_sdpa_loss_curve(tmp_path, tiny_model_dir):
    """auto on packed data: each sample's attention alone (varlen), the loss curve of the block-diagonal sdpa mask."""
    from tuneforge.models import varlen

    packed = ("data.packing=true", "data.cutoff_len=128")
    auto, kernel_a, info_a = _run(tmp_path / "auto", tiny_model_dir, *packed)
    sdpa, kernel_s, info_s = _run(tmp_path / "sdpa", tiny_model_dir, *packed, "train.attention=sdpa")
    assert (kernel_a, kernel_s) == (varlen.NAME, "sdpa")
    assert (info_a["runtime"]["attention"], info_s["runtime"]["attention"]) == ("varlen", "sdpa")
    assert info_a["data"]["samples_per_sequence"] > 1.5  # rows really share sequences
    assert max(abs(a - b) for a, b in zip(auto, sdpa)) < ATTENTION_TOLERANCE, (auto, sdpa)
    saved = list((tmp_path / "auto" / "run" / "adapter").glob("*.json"))
    assert saved and not any(varlen.NAME in f.read_text() for f in saved)  # what is saved loads anywhere


def test_lora_runs_take_the_fused_kernel_by_default_with_the_peft_loss_curve(tmp_path, tiny_model_dir, monkeypatch):
    """auto: every LoRA linear layer runs as one autograd function; the loss curve is PEFT's forward's."""
    from tuneforge.models import fused_lora

    calls = []
    real = fused_lora.LoraLinearFunction.apply
    monkeypatch.setattr(fused_lora.LoraLinearFunction, "apply", lambda *a: calls.append(1) or real(*a))
    peft, _, info_p = _run(tmp_path / "peft", tiny_model_dir, "train.lora_kernel=peft")
    assert not calls and info_p["runtime"]["lora_kernel"] == "peft"
    auto, _, info_a = _run(tmp_path / "auto", tiny_model_dir)
    assert calls and info_a["runtime"]["lora_kernel"] == "fused" and info_a["runtime"]["lora_kernel_setting"] == "auto"
    assert max(abs(a - b) for a, b in zip(auto, peft)) < ATTENTION_TOLERANCE, (auto, peft)
    saved = list((tmp_path / "auto" / "run" / "adapter").glob("*.json"))
    assert saved and not any(fused_lora.NAME in f.read_text() for f in saved)
    full = _run(tmp_path / "full", tiny_model_dir, "method.type=full")[2]
    assert full["runtime"]["lora_kernel"] == "none"


def test_train_command_preloads_the_allocator_and_records_it(tmp_path, tiny_model_dir):
    data = write_story_data(tmp_path / "stories.jsonl")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "model.template=chatml",
           f"data.train={data}", "data.cutoff_len=64", f"output.dir={out}", "output.plot=false",
           "train.batch_size=4", "train.max_steps=1", "method.r=4", "train.allocator=jemalloc"]
    env = {k: v for k, v in os.environ.items() if k not in (cpu_runtime.MARKER, "LD_PRELOAD")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "COLUMNS": "200"}, cwd=str(ROOT),
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runtime = json.loads((out / "run.json").read_text())["runtime"]
    plan = next(line for line in proc.stderr.splitlines() if "runtime" in line)
    assert "threads" in plan and "compile off" in plan and "attention sdpa" in plan
    if cpu_runtime.find_allocator("jemalloc"):
        assert runtime["allocator"] == "jemalloc" and "libjemalloc" in plan
    else:  # not installed: said once in the plan, with the package to install, and the run goes on
        assert runtime["allocator"] == "system" and "apt-get install libjemalloc2" in plan


@pytest.mark.skipif(cpu_runtime._glibc() is None, reason="glibc's malloc only (mallopt)")
def test_train_command_keeps_freed_memory_under_auto_and_records_it(tmp_path, tiny_model_dir):
    data = write_story_data(tmp_path / "stories.jsonl")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "model.template=chatml",
           f"data.train={data}", "data.cutoff_len=64", f"output.dir={out}", "output.plot=false",
           "train.batch_size=4", "train.max_steps=1", "method.r=4"]
    drop = (cpu_runtime.MARKER, "LD_PRELOAD", *cpu_runtime.GLIBC_MALLOC_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "COLUMNS": "300"}, cwd=str(ROOT),
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runtime = json.loads((out / "run.json").read_text())["runtime"]
    assert runtime["allocator"] == "system" and runtime["allocator_setting"] == "auto"
    assert runtime["allocator_why"] == cpu_runtime.KEPT_NOTE
    assert "keeping freed memory" in next(line for line in proc.stderr.splitlines() if "runtime" in line)


def test_cpu_knobs_bench_quick_reports_every_field(tmp_path, tiny_model_dir, demo_data):
    """bench/cpu_knobs.py --quick on two variants: the table's fields are there (no timing is asserted)."""
    out = tmp_path / "knobs.json"
    cmd = [sys.executable, str(ROOT / "bench" / "cpu_knobs.py"), "--quick", "--variants", "baseline,eager",
           "--steps", "2", "--max-samples", "8", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = json.loads(out.read_text())["variants"]
    assert set(table) == {"baseline", "eager"}
    for name, row in table.items():
        assert row["tok_s"] > 0 and row["peak_rss_mb"] > 0 and 0 <= row["sys_share"] <= 1, (name, row)
        assert row["user_s"] >= 0 and row["sys_s"] >= 0
    assert table["baseline"]["max_loss_diff"] == 0
    assert table["eager"]["max_loss_diff"] < ATTENTION_TOLERANCE and table["eager"]["runtime"]["attention"] == "eager"
    assert table["baseline"]["runtime"]["allocator"] == "system"
