#!/usr/bin/env python
"""CPU runtime knobs of an SFT run: allocator, glibc malloc settings, attention kernel, torch.compile, threads.

Each variant is one short `tuneforge.train.runner.train` run (SmolLM2, LoRA r=8 on all linear layers, batch 8,
cutoff 512, alpaca_en_demo, fixed seed) in a fresh interpreter, started the way `tuneforge train` starts: the
config is loaded, then `reexec_with_allocator` restarts the child once with train.allocator preloaded
(LD_PRELOAD). Variants run in rounds (A B C … A B C …), so a slow phase of the machine hits all of them alike.

Per variant (medians over rounds, steps after --warmup only):
  tok_s        real (non-padding) tokens per second, from metrics.jsonl's cumulative real_tokens / elapsed_s
  user_s/sys_s CPU time of the measured steps (getrusage of the child at each step end): sys is kernel time,
               mostly page faults of memory the allocator gave back and asked for again
  sys_share    sys / (user + sys)
  faults_per_step  minor page faults per measured step: memory handed back to the kernel and faulted in again
               (a count, not a time: it does not depend on what else runs on the machine)
  peak_rss_mb  the child's peak resident memory (wait4), load included
  max_loss_diff  max over steps of |loss - baseline loss| at the same step, same round (same seed, same data)

    python bench/cpu_knobs.py                      # all variants, 3 rounds of 20 steps (quiet machine!)
    python bench/cpu_knobs.py --variants baseline,jemalloc --rounds 2
    python bench/cpu_knobs.py --quick              # smoke: 656K model, 3 steps, cutoff 64, 1 round
Run it with no OMP_NUM_THREADS set (threads auto then means the physical cores), and nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLIBC_TUNED = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # glibc's ceiling for it
               "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}
# name → (config overrides, extra environment); baseline: glibc malloc, sdpa, no compile, threads auto
VARIANTS = {
    "baseline": ([], {}),
    "jemalloc": (["train.allocator=jemalloc"], {}),  # with tuneforge's MALLOC_CONF (cpu_runtime.ALLOCATOR_ENV)
    "jemalloc_default": (["train.allocator=jemalloc"], {"MALLOC_CONF": "dirty_decay_ms:10000,muzzy_decay_ms:0"}),
    "tcmalloc": (["train.allocator=tcmalloc"], {}),
    "glibc_tuned": ([], GLIBC_TUNED),
    "glibc_keep": (["train.allocator=auto"], {}),  # auto: glibc keeps freed memory (cpu_runtime.keep_freed_memory)
    "eager": (["train.attention=eager"], {}),
    "compile": (["train.compile=true"], {}),
    "threads1": (["train.threads=1"], {}),
    "threads2": (["train.threads=2"], {}),
}
BASE = ["train.allocator=system", "train.attention=sdpa", "train.compile=false", "train.threads=auto"]
CHILD_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------------------------------------------------- child

def child_main(spec_path: str) -> None:
    """One variant's run, as `tuneforge train` runs it (allocator restart included); CPU times per step → spec's
    clock file."""
    import resource

    from tuneforge.config.load import load_config
    from tuneforge.train.cpu_runtime import reexec_with_allocator

    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(None, spec["overrides"])
    reexec_with_allocator(cfg.train.allocator, own_process=True)
    from transformers import TrainerCallback

    from tuneforge.train.runner import train

    class CpuClock(TrainerCallback):
        def __init__(self):
            self.rows = []

        def on_step_end(self, args, state, control, **kw):
            ru = resource.getrusage(resource.RUSAGE_SELF)
            self.rows.append({"step": state.global_step, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                              "minflt": ru.ru_minflt, "wall": time.perf_counter()})

    clock = CpuClock()
    train(cfg, extra_callbacks=[clock])
    Path(spec["clock"]).write_text(json.dumps(clock.rows))


# --------------------------------------------------------------------------------------------------------- parent

def run_variant(name: str, args, workdir: Path, round_no: int) -> dict:
    overrides, env = VARIANTS[name]
    tag = f"{name}-r{round_no}"
    out_dir = workdir / tag
    spec = {"overrides": common_overrides(args, out_dir) + BASE + overrides, "clock": str(workdir / f"{tag}.clock")}
    spec_path = workdir / f"{tag}.json"
    spec_path.write_text(json.dumps(spec))
    child_env = {**os.environ, **CHILD_ENV, **env, "TUNEFORGE_REGISTRY_URL": f"sqlite:///{workdir / 'registry.db'}"}
    log = (workdir / f"{tag}.log").open("w")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)],
                            stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=str(ROOT))
    _, status, usage = os.wait4(proc.pid, 0)  # the restarted child keeps its pid: its own rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        tail = (workdir / f"{tag}.log").read_text()[-3000:]
        raise SystemExit(f"variant {name} failed (exit {proc.returncode}):\n{tail}")
    return measure(out_dir, json.loads(Path(spec["clock"]).read_text()), usage, args.warmup)


def common_overrides(args, out_dir: Path) -> list[str]:
    over = [f"model.name={args.model}", f"model.template={args.template}", f"data.train={args.data}",
            f"data.cutoff_len={args.cutoff}", "data.packing=false", "method.type=lora", "method.r=8",
            "method.target_modules=all-linear", "method.dropout=0.0", "train.precision=fp32",
            "train.gradient_checkpointing=false", f"train.batch_size={args.batch_size}", "train.learning_rate=2e-4",
            "train.epochs=1", f"train.max_steps={args.steps}", f"train.seed={args.seed}", "train.logging_steps=1",
            f"output.dir={out_dir}", "output.overwrite=true", "output.plot=false"]
    return over + ([f"data.max_samples={args.max_samples}"] if args.max_samples else [])


def measure(out_dir: Path, clock: list[dict], usage, warmup: int) -> dict:
    """Throughput and CPU times over the steps after `warmup` (the first steps load, allocate, compile)."""
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = {r["step"]: r for r in rows if "loss" in r}
    first, last = steps[max(warmup, 1)], steps[max(steps)]  # from the end of step `warmup` to the last one's
    ticks = {c["step"]: c for c in clock}
    c0, c1 = ticks[first["step"]], ticks[last["step"]]
    user, sys_ = c1["user_s"] - c0["user_s"], c1["sys_s"] - c0["sys_s"]
    wall = max(last["elapsed_s"] - first["elapsed_s"], 1e-9)
    run = json.loads((out_dir / "run.json").read_text())
    faults = (c1["minflt"] - c0["minflt"]) / max(last["step"] - first["step"], 1)
    return {"tok_s": (last["real_tokens"] - first["real_tokens"]) / wall, "user_s": user, "sys_s": sys_,
            "faults_per_step": faults,
            "sys_share": sys_ / max(user + sys_, 1e-9), "peak_rss_mb": usage.ru_maxrss / 1024,
            "losses": [steps[s]["loss"] for s in sorted(steps)], "runtime": run.get("runtime", {}),
            "measured_steps": last["step"] - first["step"]}


def summarize(results: dict[str, list[dict]]) -> dict:
    base = results.get("baseline")
    table = {}
    for name, runs in results.items():
        diffs = [max(abs(a - b) for a, b in zip(r["losses"], b_["losses"])) for r, b_ in zip(runs, base)] \
            if base else []
        table[name] = {"tok_s": statistics.median(r["tok_s"] for r in runs),
                       "user_s": statistics.median(r["user_s"] for r in runs),
                       "sys_s": statistics.median(r["sys_s"] for r in runs),
                       "sys_share": statistics.median(r["sys_share"] for r in runs),
                       "faults_per_step": statistics.median(r["faults_per_step"] for r in runs),
                       "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                       "max_loss_diff": max(diffs) if diffs else None,
                       "rounds": len(runs), "runtime": runs[-1]["runtime"]}
        if base:
            table[name]["vs_baseline"] = table[name]["tok_s"] / statistics.median(r["tok_s"] for r in base)
    return table


def print_table(table: dict) -> None:
    print(f"{'variant':<16} {'tok/s':>8} {'x base':>7} {'user s':>8} {'sys s':>7} {'sys %':>6} {'faults/step':>11} "
          f"{'RSS MB':>8} {'max |Δloss|':>12}  runtime")
    for name, t in table.items():
        rt = t["runtime"]
        diff = "—" if t["max_loss_diff"] is None else f"{t['max_loss_diff']:.2e}"
        print(f"{name:<16} {t['tok_s']:>8.1f} {t.get('vs_baseline', 1):>7.3f} {t['user_s']:>8.2f} "
              f"{t['sys_s']:>7.2f} {100 * t['sys_share']:>5.1f}% {t['faults_per_step']:>11.0f} "
              f"{t['peak_rss_mb']:>8.0f} {diff:>12}  "
              f"threads {rt.get('threads')}, {rt.get('allocator')}, {rt.get('attention')}, "
              f"compile {rt.get('compile')} {rt.get('malloc_env') or ''}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--template", default="auto")
    p.add_argument("--data", default=None, help="dataset file (default ../shared alpaca_en_demo.json)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=None, help="runs of every variant (default 3; --quick 1)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 20; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="first steps left out (default 3; --quick 1)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cutoff", type=int, default=None, help="data.cutoff_len (default 512; --quick 64)")
    p.add_argument("--max-samples", type=int, default=None, help="data.max_samples (default 200; --quick 32)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quick", action="store_true", help="smoke run: the 656K model, 3 steps, 1 round")
    p.add_argument("--out", default="bench/cpu_knobs.json")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, run folders)")
    a = p.parse_args(argv)
    q = a.quick
    a.rounds, a.steps = a.rounds or (1 if q else 3), a.steps or (3 if q else 20)
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 3)
    a.cutoff, a.max_samples = a.cutoff or (64 if q else 512), a.max_samples or (32 if q else 200)
    if q and a.model == "smollm2-135m-instruct":
        a.model, a.template = _tiny_model(), "chatml"
    a.data = a.data or str(_shared() / "data" / "llamafactory_demo" / "alpaca_en_demo.json")
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if a.warmup >= a.steps:
        p.error("--warmup must be below --steps")
    return a


def _shared() -> Path:
    from tuneforge.utils.paths import shared_dir

    shared = shared_dir()
    if shared is None:
        raise SystemExit("../shared not found: pass --data (and --model), or set TUNEFORGE_SHARED")
    return shared


def _tiny_model() -> str:
    return str(_shared() / "models" / "tinystories-656k")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cpu_knobs_"))
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    started = time.time()
    for r in range(args.rounds):
        for name in args.variants:
            results[name].append(run_variant(name, args, workdir, r))
            print(f"round {r + 1}/{args.rounds} {name}: {results[name][-1]['tok_s']:.1f} tok/s", flush=True)
    table = summarize(results)
    print_table(table)
    Path(args.out).write_text(json.dumps({"args": vars(args), "variants": table,
                                          "runs": results, "seconds": time.time() - started}, indent=1))
    print(f"results: {args.out}; work folder {workdir}" + ("" if args.keep else " (removed)"))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
