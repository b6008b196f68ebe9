#!/usr/bin/env python
"""GPU knobs of an SFT run: precision (fp32, bf16), attention (sdpa, eager, varlen), packing, Liger Kernel.

Each variant is one short `tuneforge.train.runner.train` run on CUDA (LoRA r=16 on all linear layers, fixed seed,
synthetic alpaca rows from bench/data_prep.py's generator: 20-400-word answers, so unpacked batches carry padding)
in a fresh interpreter, one after the other. Per variant, over the steps after --warmup:
  tok_s        real (non-padding) tokens per second, from metrics.jsonl's cumulative real_tokens / elapsed_s
  padding      the share of the batches' token slots that were padding (run.json's padding_fraction)
  peak_gpu_mb  torch.cuda.max_memory_allocated over the run (weights, optimizer state, activations)
  max_loss_diff  max over steps of |loss - the reference's loss| at the same step: unpacked variants against
               bf16_sdpa, packed ones against packed_sdpa (same seed, same batches; bf16 rounds differently from fp32)

    python bench/gpu_knobs.py --model PATH                 # all variants
    python bench/gpu_knobs.py --shape-of PATH              # a model of PATH's config with random weights (no
                                                           # download: throughput and memory do not need trained ones)
    python bench/gpu_knobs.py --variants bf16_sdpa,bf16_liger --steps 60
Liger variants need `pip install liger-kernel`; they are skipped (and listed as such) when it is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name → config overrides on top of BASE; the reference each is compared with (same packing)
VARIANTS = {
    "bf16_sdpa": [],
    "fp32_sdpa": ["train.precision=fp32"],
    "bf16_eager": ["train.attention=eager"],
    "bf16_liger": ["train.kernels=liger"],
    "packed_sdpa": ["data.packing=true"],
    "packed_varlen": ["data.packing=true", "train.attention=varlen"],
    "packed_varlen_liger": ["data.packing=true", "train.attention=varlen", "train.kernels=liger"],
}
BASE = ["train.precision=bf16", "train.attention=sdpa", "train.kernels=none", "data.packing=false"]
CHILD_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONUNBUFFERED": "1"}


def reference(name: str) -> str:
    return "packed_sdpa" if "data.packing=true" in VARIANTS[name] else "bf16_sdpa"


def child_main(spec_path: str) -> None:
    """One variant's run; the GPU's peak allocated memory → spec's `peak` file."""
    import torch

    from tuneforge.config.load import load_config
    from tuneforge.train.runner import train

    spec = json.loads(Path(spec_path).read_text())
    train(load_config(None, spec["overrides"]))
    cuda = torch.cuda.is_available()
    Path(spec["peak"]).write_text(json.dumps({"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0,
                                              "gpu": torch.cuda.get_device_name() if cuda else "none"}))


def run_variant(name: str, args, workdir: Path) -> dict:
    out_dir = workdir / name
    spec = {"overrides": common_overrides(args, out_dir, workdir) + BASE + VARIANTS[name],
            "peak": str(workdir / f"{name}.peak")}
    spec_path = workdir / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, **CHILD_ENV, "TUNEFORGE_REGISTRY_URL": f"sqlite:///{workdir / 'registry.db'}"}
    log = workdir / f"{name}.log"
    with log.open("w") as f:
        code = subprocess.call([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                               stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    if code != 0:
        return {"error": f"exit {code}: " + log.read_text()[-2500:]}
    return {**measure(out_dir, args.warmup), **json.loads(Path(spec["peak"]).read_text())}


def common_overrides(args, out_dir: Path, workdir: Path) -> list[str]:
    return [f"model.name={args.model}", f"model.template={args.template}", f"data.train={args.data}",
            f"data.cutoff_len={args.cutoff}", f"data.cache_dir={workdir / 'cache'}", "method.type=lora",
            "method.r=16", "method.target_modules=all-linear", "method.dropout=0.0", f"model.device={args.device}",
            "train.gradient_checkpointing=false", f"train.batch_size={args.batch_size}", "train.learning_rate=2e-4",
            "train.epochs=1", f"train.max_steps={args.steps}", f"train.seed={args.seed}", "train.logging_steps=1",
            f"output.dir={out_dir}", "output.overwrite=true", "output.plot=false"]


def measure(out_dir: Path, warmup: int) -> dict:
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = {r["step"]: r for r in rows if "loss" in r}
    first, last = steps[max(warmup, 1)], steps[max(steps)]
    wall = max(last["elapsed_s"] - first["elapsed_s"], 1e-9)
    run = json.loads((out_dir / "run.json").read_text())
    return {"tok_s": (last["real_tokens"] - first["real_tokens"]) / wall,
            "step_s": wall / max(last["step"] - first["step"], 1),
            "padding": run.get("metrics", {}).get("padding_fraction"),
            "losses": [steps[s]["loss"] for s in sorted(steps)], "runtime": run.get("runtime", {})}


def summarize(results: dict) -> dict:
    table = {}
    for name, r in results.items():
        if "error" in r or "skipped" in r:
            table[name] = r
            continue
        ref = results.get(reference(name), {})
        row = {k: r[k] for k in ("tok_s", "step_s", "padding", "peak_gpu_mb")}
        if "losses" in ref:
            row["max_loss_diff"] = max(abs(a - b) for a, b in zip(r["losses"], ref["losses"]))
        if "tok_s" in results.get("bf16_sdpa", {}):
            row["vs_bf16_sdpa"] = r["tok_s"] / results["bf16_sdpa"]["tok_s"]
        table[name] = row
    return table


def print_table(table: dict) -> None:
    print(f"{'variant':<22} {'tok/s':>10} {'x bf16_sdpa':>11} {'s/step':>8} {'padding':>8} {'peak GPU MB':>12} "
          f"{'max |Δloss|':>12}")
    for name, t in table.items():
        if "tok_s" not in t:
            print(f"{name:<22} {t.get('skipped') or t.get('error', '')[-300:]}")
            continue
        diff = f"{t['max_loss_diff']:.2e}" if "max_loss_diff" in t else "—"
        print(f"{name:<22} {t['tok_s']:>10.0f} {t.get('vs_bf16_sdpa', float('nan')):>11.3f} {t['step_s']:>8.4f} "
              f"{t['padding']:>8.3f} {t['peak_gpu_mb']:>12.0f} {diff:>12}")


def random_model(config_dir: Path, folder: Path) -> Path:
    """A model of `config_dir`'s config with random weights (seeded), saved with its tokenizer to `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(folder)
    return folder


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder or name tuneforge loads")
    p.add_argument("--shape-of", help="a folder with config.json and a tokenizer: random weights of that shape")
    p.add_argument("--template", default="auto")
    p.add_argument("--data", default=None, help="alpaca JSONL (default: --rows synthetic rows)")
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=8, help="first steps left out (CUDA and Triton warm-up)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cutoff", type=int, default=1024)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cuda", help="model.device (cpu only to smoke-test this script)")
    p.add_argument("--out", default="bench/gpu_knobs.json")
    a = p.parse_args(argv)
    if bool(a.model) == bool(a.shape_of):
        p.error("give --model or --shape-of")
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if a.warmup >= a.steps:
        p.error("--warmup must be below --steps")
    return a


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from data_prep import write_rows

    workdir = Path(tempfile.mkdtemp(prefix="gpu_knobs_"))
    if args.shape_of:
        args.model = str(random_model(Path(args.shape_of), workdir / "model"))
    args.data = args.data or str(write_rows(workdir / "rows.jsonl", args.rows, seed=args.seed))
    liger = importlib.util.find_spec("liger_kernel") is not None
    results, started = {}, time.time()
    for name in args.variants:
        if "train.kernels=liger" in VARIANTS[name] and not liger:
            results[name] = {"skipped": "liger-kernel is not installed"}
            continue
        results[name] = run_variant(name, args, workdir)
        print(f"{name}: {results[name].get('tok_s', 0):.0f} tok/s {results[name].get('error', '')[-400:]}",
              flush=True)
        save(args, results, started)  # after every variant: a run cut short keeps what it measured
    print_table(save(args, results, started))
    print(f"results: {args.out}; work folder {workdir}")


def save(args, results: dict, started: float) -> dict:
    table = summarize(results)
    Path(args.out).write_text(json.dumps({"args": vars(args), "variants": table, "runs": results,
                                          "seconds": time.time() - started}, indent=1))
    return table


if __name__ == "__main__":
    main()
