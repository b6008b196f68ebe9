"""Data preparation at scale: tuneforge's `data prepare` (cold and warm cache) against LLaMA-Factory's preprocessing of
the same file. See bench/README.md.

The data: N synthetic alpaca rows (seeded; words drawn from a fixed list of common English words with a Zipf-like
frequency, answers 20–400 words, an input on 40% of rows), written once as JSONL to the work dir and reused. The model:
SmolLM2-135M-Instruct exported with its chat template (anchors.export_model), tokenizer and template of both sides.

Contestants, each its own process, run one after the other (never two at once):
    tf_cold   `tuneforge data prepare CONFIG --json` on an empty cache folder: load, render, tokenize, store as Arrow
    tf_warm   the same command again: the cache holds the result
    lf        LLaMA-Factory's own preprocessing in its venv (bench/llamafactory_anchor.py): tokenized_path saved
Wall time is the whole process from start to exit (interpreter start and imports included): the targets are judged
on it; "work s" beside it is the time after the imports, as each side measures it itself. Memory: every 0.1 s the
sum of RSS and of PSS over the process and all its descendants (tokenizer workers); the peak of each is reported,
and ru_maxrss of the biggest single process. Disk: the bytes (du) of the cache / output folder the run wrote.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
CONTESTANTS = ("tf_cold", "tf_warm", "lf")
TARGETS = {"cold_faster_than_lf": "tf_cold wall < lf wall", "warm_under_5s": "tf_warm wall < 5 s",
           "peak_under_4gb": "tf_cold and tf_warm peak tree memory (PSS) < 4 GB"}

# 240 common English words, most frequent first: sampled with weight 1/(rank + 10), a flattened Zipf law.
WORDS = """the of and to a in is that for it as was with be by on not he this are or his from at which but have an
they you were her she there one all we can has their been if more when will would who so no time people year way
day man thing woman life child world school state family student group country problem hand part place case week
company system program question work government number night point home water room mother area money story fact
month lot right study book eye job word business issue side kind head house service friend father power hour game
line end member law car city community name president team minute idea kid body information back parent face
others level office door health person art war history party result change morning reason research girl guy moment
air teacher force education make know take see come think look want give use find tell ask seem feel try leave call
good new first last long great little own other old big high different small large next early young important few
public bad same able describe explain write list summarize compare suggest create provide answer generate translate
rewrite classify identify analyze recipe poem letter essay story email plan strategy benefit example reason step
method data model language science music history climate energy health market product customer price design travel
city food""".split()


def _vocab(np):
    """The words, each also with a comma and a full stop after it, and their sampling probabilities."""
    words = np.array(WORDS + [w + "," for w in WORDS] + [w + "." for w in WORDS], dtype=object)
    base = 1.0 / (np.arange(len(WORDS)) + 10.0)
    p = np.concatenate([base * 0.86, base * 0.06, base * 0.08])
    return words, p / p.sum()


def _text(rng, words, p, n: int) -> str:
    out = words[rng.choice(len(words), size=n, p=p)].tolist()
    out[0] = out[0].capitalize()
    if not out[-1].endswith("."):
        out[-1] = out[-1].rstrip(",") + "."
    return " ".join(out)


def _lengths(rng, n: int, median: float, sigma: float, lo: int, hi: int):
    return rng.lognormal(mean=math.log(median), sigma=sigma, size=n).clip(lo, hi).astype(int)


def write_rows(path: Path, rows: int, seed: int = 0) -> Path:
    """N synthetic alpaca rows as JSONL at `path`, unless a file of the same rows and seed is already there."""
    import numpy as np

    meta = path.with_suffix(".meta.json")
    want = {"rows": rows, "seed": seed, "generator": 1}
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == want:
        return path
    rng = np.random.default_rng(seed)
    words, p = _vocab(np)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            ins, inp, ans = _lengths(rng, n, 14, 0.5, 4, 60), _lengths(rng, n, 40, 0.8, 5, 300), \
                _lengths(rng, n, 110, 0.7, 20, 400)
            has_input = rng.random(n) < 0.4
            for i in range(n):
                row = {"instruction": _text(rng, words, p, ins[i]),
                       "input": _text(rng, words, p, inp[i]) if has_input[i] else "",
                       "output": _text(rng, words, p, ans[i])}
                f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    meta.write_text(json.dumps(want))
    return path


# --- measuring one process tree --------------------------------------------------------------------------------------


class TreeMemory(threading.Thread):
    """Samples every `period` s the summed RSS and PSS of a process and all its descendants; keeps the peaks."""

    def __init__(self, pid: int, period: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.root, self.period, self.stop = psutil.Process(pid), period, threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.peak_procs = 1

    def _sample(self) -> None:
        import psutil

        procs = [self.root, *self.root.children(recursive=True)]
        rss = pss = 0
        for proc in procs:
            try:
                mem = proc.memory_full_info()  # reads /proc/PID/smaps_rollup: PSS counts shared pages once
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss, pss = rss + mem.rss, pss + getattr(mem, "pss", mem.rss)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(procs))

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._sample()
            except Exception:  # the process ended between listing and reading: the last sample stands
                pass
            self.stop.wait(self.period)


def du_bytes(folder: Path) -> int:
    """Disk usage of `folder` as du counts it (allocated blocks), 0 when it does not exist."""
    if not folder.exists():
        return 0
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(folder) for f in files)


def run_measured(cmd: list[str], env: dict, log: Path, cwd: Path | None = None) -> dict:
    """Run `cmd` alone; → wall seconds, exit code, peak tree RSS/PSS, ru_maxrss of its biggest process, stdout."""
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        mem = TreeMemory(proc.pid)
        mem.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage only (its reaped descendants included)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        mem.stop.set()
        mem.join()
    return {"wall_s": wall, "returncode": proc.returncode, "peak_tree_rss_gb": mem.peak_rss / GB,
            "peak_tree_pss_gb": mem.peak_pss / GB, "max_single_rss_gb": usage.ru_maxrss * 1024 / GB,
            "peak_processes": mem.peak_procs, "cpu_s": usage.ru_utime + usage.ru_stime,
            "stdout": log.with_suffix(".out").read_text(), "stderr_tail": log.with_suffix(".err").read_text()[-3000:]}


def _last_json(text: str) -> dict | None:
    """The JSON object the command printed (the whole stdout, else its last line that parses)."""
    try:
        return json.loads(text)
    except ValueError:
        for line in reversed(text.strip().splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


# --- the contestants -------------------------------------------------------------------------------------------------


def tf_command() -> list[str]:
    exe = Path(sys.executable).parent / "tuneforge"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tuneforge"]


def write_tf_config(args, data: Path, model: Path, cache: Path) -> Path:
    import yaml

    cfg = {"stage": "sft", "model": {"name": str(model), "template": args.template},
           "data": {"train": [{"path": str(data), "format": "alpaca"}], "cutoff_len": args.cutoff,
                    "num_proc": args.num_proc, "cache_dir": str(cache)}}
    path = args.work / "tf_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_tf(args, config: Path, cache: Path, name: str) -> dict:
    hf_cache = args.work / "tf_hf_datasets_cache"  # emptied with the cache before tf_cold: nothing cold is reused
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(hf_cache)}
    res = run_measured([*tf_command(), "data", "prepare", str(config), "--json"], env, args.work / f"{name}.log")
    reported = _last_json(res["stdout"]) if res["returncode"] == 0 else None
    if res["returncode"] != 0 or reported is None:
        return {"ok": False, "error": f"exit {res['returncode']}: {res['stderr_tail'][-1500:]}", **_slim(res)}
    return {"ok": True, "reported": reported, "items": reported.get("train_items"), "disk_bytes": du_bytes(cache),
            "cache_hit": reported.get("hit"), "work_s": reported.get("seconds"), "hf_cache_bytes": du_bytes(hf_cache),
            **_slim(res)}


def run_lf(args, data: Path, model: Path, system: str | None) -> dict:
    from llamafactory_anchor import TEMPLATE, lf_python, versions, write_inputs

    try:
        python = lf_python()
    except subprocess.CalledProcessError as exc:
        return {"ok": False, "error": f"could not create the LLaMA-Factory venv: {exc}"}
    work = args.work / "lf"
    shutil.rmtree(work, ignore_errors=True)
    config = write_inputs(data, model, work, args.cutoff, args.num_proc, system)
    hf_cache = work / "hf_datasets_cache"  # a fresh datasets cache: the JSON → Arrow conversion is part of the run
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(hf_cache),
           "PYTHONPATH": "", "DISABLE_VERSION_CHECK": "1", "LLAMAFACTORY_VERBOSITY": "WARN"}
    result = work / "result.json"
    anchor = Path(__file__).resolve().parent / "llamafactory_anchor.py"
    res = run_measured([str(python), str(anchor), str(config), str(result)], env, work / "lf.log", cwd=work)
    if res["returncode"] != 0 or not result.exists():
        return {"ok": False, "error": f"exit {res['returncode']}: {res['stderr_tail'][-1500:]}", **_slim(res)}
    reported = json.loads(result.read_text())
    return {"ok": True, "items": reported["train_items"], "disk_bytes": du_bytes(work / "tokenized"),
            "hf_cache_bytes": du_bytes(hf_cache), "template": TEMPLATE, "default_system": system,
            "versions": versions(python), "reported": {k: reported[k] for k in ("seconds", "import_s")},
            "work_s": reported["seconds"] - reported["import_s"],
            "first": {k: reported[k] for k in ("first_text", "first_input_ids", "first_labels")}, **_slim(res)}


def headline(error: str) -> str:
    """The last line of an error that says something (typer draws its message inside a box)."""
    lines = [x.strip(" \u2502\u256d\u256e\u2570\u256f\u2500") for x in error.strip().splitlines()]
    return next((x for x in reversed(lines) if any(c.isalnum() for c in x)), error.strip())[:200]


def _slim(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("stdout", "stderr_tail")}


# --- the model, its template, and whether LLaMA-Factory renders the same text ---------------------------------------


def default_system(tok) -> str | None:
    """The system prompt the model's own template inserts when a conversation has none (SmolLM2: one)."""
    text = tok.apply_chat_template([{"role": "user", "content": "X"}], tokenize=False)
    head = "<|im_start|>system\n"
    return text[len(head):text.index("<|im_end|>")] if text.startswith(head) else None


def first_row_rendering(tok, data: Path) -> dict:
    """SmolLM2's own template on the file's first row (user = instruction and input joined by a newline)."""
    with data.open(encoding="utf-8") as f:
        row = json.loads(f.readline())
    user = "\n".join(x for x in (row["instruction"], row["input"]) if x)
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    text = tok.apply_chat_template(messages, tokenize=False)
    return {"text": text, "ids": tok(text, add_special_tokens=False)["input_ids"]}


def compare_rendering(own: dict, lf: dict, cutoff: int) -> dict:
    ids = lf["first_input_ids"]
    cut = len(own["ids"]) > cutoff
    return {"text_identical": lf["first_text"] == own["text"] if not cut else None,
            "ids_identical": ids == own["ids"] if not cut else None, "first_row_cut": cut,
            "own_tokens": len(own["ids"]), "lf_tokens": len(ids),
            "first_difference": next((i for i, (a, b) in enumerate(zip(lf["first_text"], own["text"])) if a != b),
                                     None)}


def tf_first_item(cache_entry: str | None) -> dict | None:
    """The first training item tuneforge stored (first record batch of its first Arrow shard), None if unreadable."""
    import pyarrow as pa

    try:
        shard = sorted(Path(cache_entry).glob("train-*.arrow"))[0]
        with pa.OSFile(str(shard)) as f:
            return pa.ipc.open_stream(f).read_next_batch().slice(0, 1).to_pylist()[0]
    except Exception:  # another layout, or no entry: the check is reported as not made
        return None


# --- report ----------------------------------------------------------------------------------------------------------


def summarise(results: dict, rows: int) -> tuple[dict, dict]:
    ratios, targets = {}, {}
    cold, warm, lf = (results.get(k, {}) for k in CONTESTANTS)
    for r in results.values():
        if r.get("ok"):
            r["rows_per_s"] = rows / r["wall_s"]
    if cold.get("ok") and lf.get("ok"):
        ratios["tf_cold_vs_lf_time"] = cold["wall_s"] / lf["wall_s"]
        ratios["tf_cold_vs_lf_work_time"] = cold["work_s"] / lf["work_s"]
        targets["cold_faster_than_lf"] = ratios["tf_cold_vs_lf_time"] < 1
    if warm.get("ok"):
        ratios["tf_warm_s"] = warm["wall_s"]
        targets["warm_under_5s"] = warm["wall_s"] < 5
    tf_runs = [r for r in (cold, warm) if r.get("ok")]
    if tf_runs:
        ratios["tf_peak_pss_gb"] = max(r["peak_tree_pss_gb"] for r in tf_runs)
        ratios["tf_peak_rss_sum_gb"] = max(r["peak_tree_rss_gb"] for r in tf_runs)
        targets["peak_under_4gb"] = ratios["tf_peak_pss_gb"] < 4
    return ratios, targets


def print_table(results: dict, ratios: dict, targets: dict, rows: int) -> None:
    print(f"\n{rows:,} rows\n| contestant | wall s | work s | rows/s | CPU s | peak tree PSS | peak tree RSS | "
          "biggest process | disk | items |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if not r.get("ok"):
            print(f"| {name} | failed: {headline(r.get('error', '?'))[:100]} ||||||||| ")
            continue
        print(f"| {name} | {r['wall_s']:.1f} | {r['work_s']:.1f} | {r['rows_per_s']:,.0f} | {r['cpu_s']:.1f} | "
              f"{r['peak_tree_pss_gb']:.2f} GB | {r['peak_tree_rss_gb']:.2f} GB | {r['max_single_rss_gb']:.2f} GB | "
              f"{r['disk_bytes'] / 1e6:.1f} MB | {r['items']} |")
    print("wall s: the whole process (interpreter start and imports included); work s: after the imports, as the "
          "command reports it; disk: the cache entry (tuneforge) or tokenized_path (LLaMA-Factory)")
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    for key, text in TARGETS.items():
        state = {True: "met", False: "NOT met", None: "not measured"}[targets.get(key)]
        print(f"target {key} ({text}): {state}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cutoff", type=int, default=1024)
    p.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="a name tuneforge loads (exported once with its chat template), or a ready model folder")
    p.add_argument("--template", default="auto", help="tuneforge's model.template (auto: the model's own); "
                   "LLaMA-Factory always uses its smollm2 template")
    p.add_argument("--work", type=Path, default=Path("/tmp/tf-bench-dataprep"))
    p.add_argument("--contestants", default=",".join(CONTESTANTS), help="comma-separated subset of "
                                                                            + ", ".join(CONTESTANTS))
    p.add_argument("--quick", action="store_true", help="smoke run: 2,000 rows")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "data_prep.json")
    args = p.parse_args()
    if args.quick:
        args.rows = 2_000
    chosen = [c.strip() for c in args.contestants.split(",") if c.strip()]
    if unknown := set(chosen) - set(CONTESTANTS):
        p.error(f"unknown contestants {sorted(unknown)}; choose from {', '.join(CONTESTANTS)}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from anchors import export_model
    from transformers import AutoTokenizer

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = write_rows(args.work / f"alpaca-{args.rows}-seed{args.seed}.jsonl", args.rows, args.seed)
    generate_s = time.perf_counter() - t0
    anchors_dir = Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors"))
    model = Path(args.model) if (Path(args.model) / "config.json").exists() else \
        export_model(args.model, anchors_dir / f"model-{Path(args.model).name}")
    tok = AutoTokenizer.from_pretrained(model)
    print(f"data {data} ({data.stat().st_size / 1e6:.1f} MB, written/checked in {generate_s:.1f} s), model {model}",
          flush=True)

    cache = args.work / "tf_cache"
    config = write_tf_config(args, data, model, cache)
    results = {}
    for name in chosen:
        if name == "tf_cold":
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(args.work / "tf_hf_datasets_cache", ignore_errors=True)
        print(f"running {name} ...", flush=True)
        if name == "lf":
            results[name] = run_lf(args, data, model, default_system(tok))
        else:
            results[name] = run_tf(args, config, cache, name)
        r = results[name]
        print(f"  {name}: " + (f"{r['wall_s']:.1f} s, peak tree PSS {r['peak_tree_pss_gb']:.2f} GB" if r["ok"]
                               else f"FAILED {headline(r['error'])}"), flush=True)
    rendering = None
    if results.get("lf", {}).get("ok"):
        lf_first = results["lf"].pop("first")
        rendering = compare_rendering(first_row_rendering(tok, data), lf_first, args.cutoff)
        tf_item = tf_first_item(results.get("tf_cold", {}).get("reported", {}).get("cache_dir"))
        rendering["tf_first_item_equals_lf"] = None if tf_item is None else \
            (tf_item.get("input_ids"), tf_item.get("labels")) == (lf_first["first_input_ids"], lf_first["first_labels"])
        results["lf"]["renders_identically"] = rendering
    ratios, targets = summarise(results, args.rows)
    print_table(results, ratios, targets, args.rows)
    if rendering:
        print(f"LLaMA-Factory template {results['lf']['template']!r}: first row text identical "
              f"{rendering['text_identical']}, token ids identical {rendering['ids_identical']}; tuneforge's first "
              f"stored item (input_ids, labels) equals LLaMA-Factory's: {rendering['tf_first_item_equals_lf']}")
    config_out = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
    args.out.write_text(json.dumps({"config": config_out, "data": {"path": str(data), "bytes": data.stat().st_size,
                                                                   "generate_s": generate_s},
                                    "model": str(model), "env": env, "cpu_count": os.cpu_count(),
                                    "results": results, "ratios": ratios, "targets": targets}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
