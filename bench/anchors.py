"""What the stage benchmarks share: the anchor's own virtual environment, the model both contestants load, a step
timer, peak memory, and the round-robin driver that runs every contestant alone in a fresh process.

The anchor (TRL's own trainer) runs in a venv of its own, created here on first use with the same versions of torch,
transformers, peft, accelerate, datasets and TRL that tuneforge has installed (so a difference is tuneforge's code,
not a library version); it never imports tuneforge. Both contestants load the same model folder, written once by
`export_model` (the quickstart model is a GGUF file that only tuneforge dequantizes).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR_PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "trl")


def anchor_python() -> Path:
    """The python of the anchor venv ($TUNEFORGE_ANCHORS, default /tmp/tuneforge-anchors), created when missing."""
    from importlib import metadata

    pins = [f"{p}=={metadata.version(p).split('+')[0]}" for p in ANCHOR_PACKAGES]
    key = hashlib.sha256(" ".join(pins).encode()).hexdigest()[:10]
    venv = Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors")) / f"trl-{key}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the anchor venv {venv} ({', '.join(pins)}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), *pins],
                       check=True)
    return python


def export_model(name: str, folder: Path) -> Path:
    """Write model `name` (any name tuneforge loads) and its tokenizer, chat template included, to `folder`."""
    if (folder / "config.json").exists():
        return folder
    from tuneforge.data.templates import ensure_chat_template
    from tuneforge.models.load import load_model, load_tokenizer

    tok = load_tokenizer(name)
    ensure_chat_template(tok, "auto")
    load_model(name, device="cpu").save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def step_timer():
    """A TrainerCallback recording each optimizer step's wall seconds."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def run_rounds(script: Path, contestants: dict[str, Path], rounds: int, passed: list[str], tmp: Path,
               warmup: int) -> list[dict]:
    """Run each contestant (name → python) alone, one after the other, `rounds` times; → their result dicts."""
    results = []
    for rnd in range(rounds):
        for name, python in contestants.items():
            res = tmp / f"{name}_{rnd}.json"
            cmd = [str(python), str(script), "--run", name, "--result", str(res), *passed]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ""})
            results.append(json.loads(res.read_text()))
            steps = results[-1]["step_s"][warmup:]
            print(f"round {rnd + 1} {name}: median {statistics.median(steps):.2f} s/step, peak RSS "
                  f"{results[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    return results


def summarise(results: list[dict], warmup: int, extra=lambda runs: {}) -> dict:
    """Per contestant: median/mean step seconds over all rounds (warm-up steps left out), peak RSS, `extra(runs)`."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["contestant"], []).append(r)
    out = {}
    for name, runs in by.items():
        steps = [s for r in runs for s in r["step_s"][warmup:]]
        out[name] = {"median_step_s": statistics.median(steps), "mean_step_s": statistics.fmean(steps),
                     "steps_timed": len(steps), "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), **extra(runs)}
    return out
