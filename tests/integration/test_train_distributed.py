"""Data-parallel training through the standard launcher: 2 CPU processes (gloo) under torchrun; and why FSDP is
refused on CPU (accelerate would quietly run DDP instead)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from train_helpers import write_story_data

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TUNEFORGE_NO_REGISTRY": "1"}


def test_torchrun_two_processes(tmp_path, tiny_model_dir):
    data = write_story_data(tmp_path / "d.jsonl", n_repeat=2)  # 16 rows
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "model.template=chatml",
           f"data.train={data}", f"output.dir={out}", "train.batch_size=4", "train.epochs=2",
           "output.tensorboard=false", "train.learning_rate=5e-3"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "succeeded"
    assert info["distributed"] == {"mode": "ddp", "processes": 2}  # train.distributed=auto under a launcher
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    # 16 rows / (batch 4 × 2 processes) = 2 steps per epoch; one process alone would take 4.
    assert max(steps) == 4, steps
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert done.stderr.count("trainable params") == 1  # only rank 0 prints


ACCELERATE_ON_CPU = """
from accelerate import Accelerator
from accelerate.utils import FullyShardedDataParallelPlugin
acc = Accelerator(cpu=True, fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=2))
fsdp = getattr(acc.state, "fsdp_plugin", None) is not None  # how transformers' Trainer decides is_fsdp_enabled
import pathlib, sys  # one file per rank: printed lines of two processes can interleave mid-line
pathlib.Path(sys.argv[1], f"rank{acc.process_index}.txt").write_text(f"{acc.distributed_type.value} fsdp={fsdp}")
"""


def test_accelerate_does_not_shard_on_cpu(tmp_path):
    """The reason behind compat's fsdp × cpu rule: given an FSDP2 plugin, accelerate keeps CPU processes on plain
    multi-CPU data parallelism (FSDP is enabled for GPU-like devices only). If this starts failing, accelerate
    shards on CPU too, and the rule can go."""
    script = tmp_path / "probe.py"
    script.write_text(ACCELERATE_ON_CPU)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
           str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert seen == ["MULTI_CPU fsdp=False"] * 2, (seen, done.stdout)
