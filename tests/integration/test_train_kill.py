"""Runs that die: a signal to one torchrun rank stops every rank at the same step; SIGKILL loses no work past the
last checkpoint, and the same command resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import tiny_config, write_story_data
from tuneforge.train.runner import train

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TUNEFORGE_NO_REGISTRY": "1"}


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}: "
                                 f"{proc.stdout.read().decode()[-3000:]}")
        if time.time() > deadline:
            _kill_all(proc)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(c) for c in path.read_text().split()]
    except OSError:
        return []


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (torchrun starts its workers in sessions of their own, and
    they hold the output pipe open)."""
    pids, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += _children(pid)
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=60)


def _start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _run_to_end(cmd: list[str], env: dict, timeout: float = 300) -> tuple[int, str]:
    proc = _start(cmd, env)
    try:
        output = proc.communicate(timeout=timeout)[0].decode()
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        raise AssertionError(f"{cmd[-1]}: still running after {timeout} s") from None
    return proc.returncode, output


def _n_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _worker_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the torchrun worker process with RANK=`rank` (a child of the launcher)."""
    for pid in _children(launcher_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker pids through /proc (Linux)")
def test_sigterm_to_one_rank_stops_both_and_the_same_command_resumes(tmp_path, tiny_model_dir):
    data = write_story_data(tmp_path / "d.jsonl", n_repeat=2)  # 16 rows: 4 steps per epoch with 2 ranks × batch 2
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
           "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "model.template=chatml", f"data.train={data}",
           f"output.dir={out}", "train.batch_size=2", "train.epochs=15", "train.save_steps=100000",
           "output.tensorboard=false", "train.learning_rate=5e-3"]
    proc = _start(cmd, ENV)
    _wait_for(lambda: _n_lines(out / "metrics.jsonl") >= 3, proc, "3 logged steps")
    rank1 = _worker_pid(proc.pid, 1)
    assert rank1 is not None, "no RANK=1 worker found under the launcher"
    os.kill(rank1, signal.SIGTERM)
    try:
        output = proc.communicate(timeout=60)[0].decode()
    except subprocess.TimeoutExpired:  # the bug: rank 0 waits forever for rank 1 in the next collective
        _kill_all(proc)
        raise AssertionError("the ranks did not stop together after SIGTERM to rank 1")
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted", output[-3000:]
    ckpts = _checkpoints(out)
    assert len(ckpts) == 1, output[-3000:]
    step = int(ckpts[0].name.split("-")[1])
    assert 3 <= step < 60
    rc, output = _run_to_end(cmd, ENV)
    assert rc == 0, output[-3000:]
    assert "resuming from checkpoint" in output
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert max(steps) == 60 and min(s for s in steps if s > step) == step + 1  # continued where it stopped


def _adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_NO_REGISTRY", "1")  # like the subprocess runs: only the training is compared
    overrides = ["train.epochs=10", "train.save_steps=2", "train.save_total_limit=3", "method.dropout=0.1"]
    straight = train(tiny_config(tmp_path / "straight", tiny_model_dir, *overrides))
    (tmp_path / "killed").mkdir()
    data = write_story_data(tmp_path / "killed" / "stories.jsonl")
    out = tmp_path / "killed" / "run"
    cmd = [sys.executable, "-m", "tuneforge", "train", f"model.name={tiny_model_dir}", "model.template=chatml",
           f"data.train={data}", "data.cutoff_len=64", f"output.dir={out}", "output.tensorboard=false",
           "train.batch_size=4", "train.learning_rate=5e-3", "train.warmup_ratio=0", "train.logging_steps=1",
           "method.type=lora", "method.r=4", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNEFORGE_NO_REGISTRY": "1"}  # threads as in the in-process run
    proc = _start(cmd, env)
    _wait_for(lambda: any((c / "trainer_state.json").is_file() for c in _checkpoints(out)), proc, "a checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    last = max(int(c.name.split("-")[1]) for c in _checkpoints(out) if (c / "trainer_state.json").is_file())
    assert last < 40 and not (out / "adapter").exists()  # killed mid-run (40 steps in all)
    rc, output = _run_to_end(cmd, env)
    assert rc == 0, output[-3000:]
    assert "resuming from checkpoint" in output
    a, b = _adapter(straight.output_dir), _adapter(out)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
