"""data.streaming end to end on the 656K TinyStories model: a streamed pt run learns and records that it streamed,
an interrupted streamed run resumes to the uninterrupted result (the Trainer iterates past the consumed blocks),
and two processes under torchrun each read their own half of the rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from train_helpers import StopAt, losses
from tuneforge.config.load import load_config
from tuneforge.train.runner import train

STORIES = [
    "Once upon a time there was a little cat. The cat liked to play with a red ball in the sun.",
    "Lily went to the park with her mom. She saw a big dog and they played all day.",
    "Tom had a small boat. He took it to the pond and watched it float on the water.",
    "The bird sang a sweet song every morning, and the children came out to listen.",
    "Ben was sad because his kite was stuck in the tree. His dad helped him get it down.",
]


def _corpus(path: Path, n: int = 40) -> Path:
    path.write_text("\n".join(STORIES[i % len(STORIES)] + f" Day {i}." for i in range(n)) + "\n")
    return path


def _config(tmp_path: Path, model_dir: Path, *overrides: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = _corpus(tmp_path / "corpus.txt")
    return load_config(None, [f"model.name={model_dir}", "stage=pt", f"data.train={data}", "data.streaming=true",
                              "data.cutoff_len=64", f"output.dir={tmp_path / 'run'}", "output.tensorboard=false",
                              "train.batch_size=4", "train.learning_rate=5e-3", "train.max_steps=12",
                              "train.warmup_ratio=0", "train.logging_steps=1", "method.type=lora", "method.r=4",
                              *overrides])


def test_a_streamed_pt_run_learns_and_records_that_it_streamed(tmp_path, tiny_model_dir):
    res = train(_config(tmp_path, tiny_model_dir))
    assert res.status == "succeeded"
    seen = losses(res.output_dir)
    assert len(seen) == 12 and sum(seen[-3:]) / 3 < sum(seen[:3]) / 3 - 0.2, seen
    info = json.loads((res.output_dir / "run.json").read_text())
    s = info["data"]["streaming"]
    assert s["scanned"] and s["documents"] == 40 and s["block_tokens"] == 64
    assert s["streamed"]["blocks"] >= 12 * 4 and s["streamed"]["late_skipped"] == 0
    assert info["datasets"][0][2] == 40 and "epochs" not in info["auto"]
    assert res.metrics["padding_fraction"] == 0  # every block is full
    assert res.metrics["real_tokens"] == 12 * 4 * 64


def test_an_interrupted_streamed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir):
    common = ("train.save_steps=3", "method.dropout=0.1", "data.shuffle_buffer=4", "train.max_steps=6")
    straight = train(_config(tmp_path / "a", tiny_model_dir, *common))
    cfg_b = _config(tmp_path / "b", tiny_model_dir, *common)
    first = train(cfg_b, extra_callbacks=[StopAt(3)])
    assert first.status == "interrupted"
    resumed = train(cfg_b)
    assert resumed.status == "succeeded"
    a = load_file(str(straight.final_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.final_dir / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    la, lb = losses(straight.output_dir), losses(resumed.output_dir)
    assert len(la) == len(lb) == 6 and max(abs(x - y) for x, y in zip(la, lb)) < 1e-5


def test_two_processes_each_stream_their_own_rows(tmp_path, tiny_model_dir):
    """Rank 0 reads rows 0, 2, 4, ... of 20: a pass over its shard is 10 rows. (It tokenizes documents in batches,
    so its counts run ahead of training; documents per pass tell the shard's size.)"""
    data = _corpus(tmp_path / "corpus.txt", n=20)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TUNEFORGE_NO_REGISTRY": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
           "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "stage=pt", f"data.train={data}",
           "data.streaming=true", "data.cutoff_len=32", f"output.dir={out}", "train.batch_size=2",
           "train.max_steps=6", "output.tensorboard=false", "method.r=4"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "succeeded" and info["distributed"] == {"mode": "ddp", "processes": 2}
    streamed = info["data"]["streaming"]["streamed"]  # rank 0's own counts
    assert streamed["passes"] >= 1 and streamed["documents"] / streamed["passes"] < 15, streamed  # 20: unsharded
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6
