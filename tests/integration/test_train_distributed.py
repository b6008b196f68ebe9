"""Data-parallel training through the standard launcher: 2 CPU processes (gloo) under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from train_helpers import write_story_data


def test_torchrun_two_processes(tmp_path, tiny_model_dir):
    data = write_story_data(tmp_path / "d.jsonl", n_repeat=2)  # 16 rows
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "model.template=chatml",
           f"data.train={data}", f"output.dir={out}", "train.batch_size=4", "train.epochs=2",
           "output.tensorboard=false", "train.learning_rate=5e-3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TUNEFORGE_NO_REGISTRY": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "succeeded"
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    # 16 rows / (batch 4 × 2 processes) = 2 steps per epoch; one process alone would take 4.
    assert max(steps) == 4, steps
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert done.stderr.count("trainable params") == 1  # only rank 0 prints
