"""Interruption and resume: a stopped run leaves a checkpoint, and resuming gives the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from train_helpers import StopAt, losses, tiny_config
from tuneforge.train.runner import train


def _adapter(res):
    return load_file(str(res.final_dir / "adapter_model.safetensors"))


def test_resume_matches_uninterrupted_run(tmp_path, tiny_model_dir):
    common = ("train.epochs=2", "train.save_steps=2", "method.dropout=0.1")  # dropout: RNG state matters
    straight = train(tiny_config(tmp_path / "a", tiny_model_dir, *common))
    cfg_b = tiny_config(tmp_path / "b", tiny_model_dir, *common)
    first = train(cfg_b, extra_callbacks=[StopAt(3)])
    assert first.status == "interrupted"
    assert json.loads((first.output_dir / "run.json").read_text())["status"] == "interrupted"
    assert (first.output_dir / "checkpoints" / "checkpoint-3").is_dir()
    resumed = train(cfg_b)  # same config again: resume=auto picks up checkpoint-3
    assert resumed.status == "succeeded" and resumed.output_dir == first.output_dir
    a, b = _adapter(straight), _adapter(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    la, lb = losses(straight.output_dir), losses(resumed.output_dir)
    assert len(la) == len(lb) and max(abs(x - y) for x, y in zip(la, lb)) < 1e-5
    assert resumed.metrics["real_tokens"] == straight.metrics["real_tokens"]  # counts continue across the resume


def test_sigint_saves_checkpoint_and_same_command_resumes(tmp_path, tiny_model_dir):
    from train_helpers import write_story_data

    data = write_story_data(tmp_path / "d.jsonl", n_repeat=8)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "model.template=chatml",
            f"data.train={data}", f"output.dir={out}", "train.epochs=50", "train.batch_size=2",
            "output.tensorboard=false", "train.save_steps=100000"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNEFORGE_NO_REGISTRY": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=240)[0].decode()
    assert proc.returncode == 130, output[-2000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "interrupted"
    ckpts = list((out / "checkpoints").glob("checkpoint-*"))
    assert len(ckpts) == 1, output[-2000:]
    step = int(ckpts[0].name.split("-")[1])
    # The same command resumes (here with a step cap so the test ends quickly: a changed config, so it takes
    # train.resume=force — without it the resume is refused, see test_train_resume_guard.py).
    done = subprocess.run(args + [f"train.max_steps={step + 2}", "train.resume=force"], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from checkpoint" in done.stderr
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert max(r["step"] for r in rows) == step + 2
