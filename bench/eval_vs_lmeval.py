#!/usr/bin/env python
"""Eval scoring: `tuneforge eval bench` against lm-evaluation-harness on the same ARC-Easy items and model folder.

Both sides score the same items (tuneforge's own `--limit/--seed` sample of the built-in arc_easy, written for
lm-eval in the hub's ARC schema from the original-format file) with the same model folder, float32, CPU, the same
--batch-size, 0-shot. Each side is its own process, run one after the other (never two at once):
    tuneforge  the CLI as a user runs it: `tuneforge eval bench --tasks arc_easy ...` (its results.json)
    lm-eval    bench/lmeval_anchor.py in lm-eval's own venv (same torch/transformers/datasets/accelerate/peft as
               tuneforge): lm-eval's installed arc_easy.yaml with only the data source swapped for a local file
Reported per side: acc, acc_norm, items/s of scoring (time inside the log-likelihood scorer) and end to end
(process wall: imports, model load, scoring, reports). Per item: the choice each side picks for acc and acc_norm,
agreement rates, and every item where the picks differ, with both sides' log-likelihoods and the cause:
    normalisation  acc_norm only: tuneforge's own log-likelihoods, divided the lm-eval way, pick what lm-eval picks
    boundary       the tokenizer merges the last context character with the choice's leading space (":▁"); lm-eval
                   splits context/continuation at the context's own token count, tuneforge at the first differing
                   token, so the log-likelihoods differ (never with SmolLM2's byte-level BPE)
    prompt         the context or continuation strings differ
    near-tie       log-likelihoods equal within --tol: float noise between batched forward passes decides
    other          none of the above (a scoring difference to investigate)

    python bench/eval_vs_lmeval.py                 # all 1,000 ARC-Easy items in shared, SmolLM2-135M-Instruct
    python bench/eval_vs_lmeval.py --limit 200     # tuneforge's seeded sample of 200 items
    python bench/eval_vs_lmeval.py --quick         # smoke run: tinystories-656k, 20 items
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LMEVAL = "lm_eval==0.4.13"
SHARED_PINS = ("torch", "transformers", "datasets", "accelerate", "peft")
ORIGINAL = "arc_easy/original/ARC-Easy-Test.slice.jsonl"


# ------------------------------------------------------------------------------------------------ the two sides

def lmeval_python() -> Path:
    """The python of lm-eval's venv ($TUNEFORGE_ANCHORS/lmeval-KEY), created on first use with tuneforge's own
    versions of the libraries both sides share (torch pinned through constraints.txt, never resolved freely)."""
    from importlib import metadata

    pins = [f"{p}=={metadata.version(p).split('+')[0]}" for p in SHARED_PINS] + [LMEVAL]
    key = hashlib.sha256(" ".join(pins).encode()).hexdigest()[:10]
    venv = Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors")) / f"lmeval-{key}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the lm-eval venv {venv} ({', '.join(pins)}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), *pins],
                       check=True)
    return python


def child_env(args, tmp: Path) -> dict:
    """Offline, one tokenizer thread, the chosen torch threads; caches and registry inside the temp folder."""
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_CACHE": str(tmp / "hf_datasets"),
           "TUNEFORGE_HOME": str(tmp / "tfhome")}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    return env


def run_tuneforge(args, model: Path, tmp: Path, rnd: int) -> dict:
    """`tuneforge eval bench` in its own process → {wall_s, score_s, metrics, examples}."""
    out = tmp / f"tf_{rnd}"
    cmd = [str(Path(sys.executable).with_name("tuneforge")), "eval", "bench", "-m", str(model), "--tasks",
           "arc_easy", "--seed", str(args.seed), "--dtype", "float32", "--device", "cpu", "--batch-size",
           str(args.batch_size), "--no-progress", "-o", str(out)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    wall = _timed_run(cmd, child_env(args, tmp))
    task = json.loads((out / "results.json").read_text(encoding="utf-8"))["tasks"]["arc_easy"]
    return {"side": "tuneforge", "wall_s": wall, "score_s": task["timing"]["seconds"], "metrics": task["metrics"],
            "settings": task["settings"], "examples": task["examples"]}


def run_lmeval(args, python: Path, model: Path, data: Path, tmp: Path, rnd: int) -> dict:
    """bench/lmeval_anchor.py in lm-eval's venv → its result dict plus the process wall time."""
    res = tmp / f"lm_{rnd}.json"
    cmd = [str(python), str(ROOT / "bench" / "lmeval_anchor.py"), "--model", str(model), "--data", str(data),
           "--batch-size", str(args.batch_size), "--dtype", "float32", "--result", str(res)]
    wall = _timed_run(cmd, child_env(args, tmp))
    return {**json.loads(res.read_text(encoding="utf-8")), "wall_s": wall}


def _timed_run(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{cmd[0]} failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return wall


# ------------------------------------------------------------------------------------------------ the items

def model_folder(args) -> Path:
    """The HF folder both sides load: tinystories-656k as it is, or `args.model` exported once (anchors.py)."""
    from tuneforge.utils.paths import shared_dir

    if args.quick:
        return shared_dir() / "models" / "tinystories-656k"
    from anchors import export_model

    anchors = Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors"))
    return export_model(args.model, anchors / f"model-{Path(args.model).name}")


def tuneforge_items(args):
    """tuneforge's own arc_easy sample (the items its CLI will score) and the plain prompts it builds for them."""
    from tuneforge.eval.prompts import plain_request
    from tuneforge.eval.tasks import load_task

    task = load_task("arc_easy", limit=args.limit, seed=args.seed)
    return task.items, {it.id: plain_request(task, it, []) for it in task.items}


def write_hub_schema(items, path: Path) -> list[str]:
    """The same items from the original ARC file, in the hub's schema that lm-eval's arc_easy reads
    ({id, question, choices: {text, label}, answerKey}); → ids whose text or answer differ from tuneforge's."""
    from tuneforge.utils.paths import shared_dir

    rows = {}
    for line in (shared_dir() / "data" / "benchmarks" / ORIGINAL).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["id"]] = row
    mismatched, lines = [], []
    for it in items:
        q = rows[it.id]["question"]
        doc = {"id": it.id, "question": q["stem"], "choices": {"text": [c["text"] for c in q["choices"]],
                                                               "label": [c["label"] for c in q["choices"]]},
               "answerKey": rows[it.id]["answerKey"]}
        if (doc["question"], doc["choices"]["text"], doc["choices"]["label"].index(doc["answerKey"])) != \
                (it.question, it.choices, it.answer):
            mismatched.append(it.id)
        lines.append(json.dumps(doc))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mismatched


def boundary_merges(model: Path, requests: dict) -> set[tuple[str, int]]:
    """(item id, choice index) where context + choice does not tokenize as the context's own tokens followed by
    more: the tokenizer merged across the boundary, so lm-eval and tuneforge score different tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    merged = set()
    for item_id, req in requests.items():
        ctx = tok(req.context)["input_ids"]
        merged |= {(item_id, i) for i, c in enumerate(req.continuations)
                   if tok(req.context + c)["input_ids"][: len(ctx)] != ctx}
    return merged


# ------------------------------------------------------------------------------------------------ comparison

def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _norm_pick(lls: list[float], lengths: list[int]) -> int:
    return _argmax([lp / max(n, 1) for lp, n in zip(lls, lengths)])


def _cause(metric: str, tf: dict, lm: dict, req, item, merged: set, tol: float) -> str:
    """Why the two sides pick differently; "+"-joined when several reasons hold (see the module docstring)."""
    if (req.context, req.continuations) != (lm["context"], lm["continuations"]):
        return "prompt"
    causes = []
    lm_lengths = [len(c) for c in item.choices]
    if metric == "acc_norm" and _norm_pick(tf["logprobs"], lm_lengths) != tf["pred_norm"]:
        causes.append("normalisation")
    differs = [i for i, (a, b) in enumerate(zip(tf["logprobs"], lm["loglik"])) if abs(a - b) > tol]
    if differs:
        causes.append("boundary" if all((item.id, i) in merged for i in differs) else "other")
    return "+".join(causes) or "near-tie"


def _picks(item, tf: dict, lm: dict) -> tuple[dict, dict]:
    lm_lengths = [len(c) for c in item.choices]
    return ({"acc": tf["pred"], "acc_norm": tf["pred_norm"]},
            {"acc": _argmax(lm["loglik"]), "acc_norm": _norm_pick(lm["loglik"], lm_lengths)})


def _checks(items, requests: dict, tf_by: dict, lm_by: dict, merged: set) -> dict:
    """Same prompts? Do lm-eval's logged acc/acc_norm follow from its logged log-likelihoods? How far apart are
    the log-likelihoods of choices that tokenize the same way on both sides?"""
    prompts_equal = self_check = 0
    deltas = []
    for it in items:
        tf, lm, req = tf_by[it.id], lm_by[it.id], requests[it.id]
        _, lm_pick = _picks(it, tf, lm)
        prompts_equal += (req.context, req.continuations) == (lm["context"], lm["continuations"])
        self_check += (lm_pick["acc"] == it.answer) == bool(lm["acc"]) and \
            (lm_pick["acc_norm"] == it.answer) == bool(lm["acc_norm"])
        deltas += [abs(a - b) for i, (a, b) in enumerate(zip(tf["logprobs"], lm["loglik"])) if (it.id, i) not in merged]
    return {"prompts_equal": prompts_equal, "lmeval_picks_match_its_metrics": self_check,
            "items_with_boundary_merge": len({i for i, _ in merged}), "choices_with_boundary_merge": len(merged),
            "max_abs_loglik_delta_unmerged": max(deltas) if deltas else None,
            "median_abs_loglik_delta_unmerged": statistics.median(deltas) if deltas else None}


def compare(items, requests: dict, tf_run: dict, lm_run: dict, merged: set, tol: float) -> dict:
    """Per-item picks of both sides → agreement, the differing items with causes, and consistency checks."""
    tf_by = {e["id"]: e for e in tf_run["examples"]}
    lm_by = {r["id"]: r for r in lm_run["items"]}
    agree = {"acc": 0, "acc_norm": 0}
    diffs, renorm_correct, renorm_flips = [], 0, []
    for it in items:
        tf, lm = tf_by[it.id], lm_by[it.id]
        tf_pick, lm_pick = _picks(it, tf, lm)
        renorm = _norm_pick(tf["logprobs"], [len(c) for c in it.choices])
        renorm_correct += renorm == it.answer
        if renorm != tf["pred_norm"]:
            renorm_flips.append(it.id)
        for metric in agree:
            if tf_pick[metric] == lm_pick[metric]:
                agree[metric] += 1
                continue
            diffs.append({"id": it.id, "metric": metric, "gold": it.answer, "tuneforge": tf_pick[metric],
                          "lm_eval": lm_pick[metric], "cause": _cause(metric, tf, lm, requests[it.id], it, merged, tol),
                          "choices": it.choices, "tuneforge_loglik": tf["logprobs"],
                          "lm_eval_loglik": [round(x, 4) for x in lm["loglik"]]})
    n = len(items)
    causes: dict[str, dict[str, int]] = {"acc": {}, "acc_norm": {}}
    for d in diffs:
        causes[d["metric"]][d["cause"]] = causes[d["metric"]].get(d["cause"], 0) + 1
    return {"n": n, "agreement": {k: v / n for k, v in agree.items()}, "agree_counts": agree, "causes": causes,
            "tuneforge_acc_norm_lmeval_definition": renorm_correct / n,
            "tuneforge_norm_picks_changed_by_lmeval_definition": renorm_flips,
            "checks": _checks(items, requests, tf_by, lm_by, merged), "differences": diffs}


# ------------------------------------------------------------------------------------------------ report

def summarise(side_runs: list[dict], n: int) -> dict:
    """Metrics of the first round (scores are deterministic), timing as medians over rounds."""
    first = side_runs[0]
    score_s = statistics.median(r["score_s"] for r in side_runs)
    wall_s = statistics.median(r["wall_s"] for r in side_runs)
    m = first["metrics"]
    return {"acc": m["acc"], "acc_norm": m["acc_norm"], "acc_stderr": m.get("acc_stderr"),
            "acc_norm_stderr": m.get("acc_norm_stderr"), "score_s": score_s, "wall_s": wall_s,
            "score_items_per_s": n / score_s, "end_to_end_items_per_s": n / wall_s,
            "rounds": [{"score_s": r["score_s"], "wall_s": r["wall_s"]} for r in side_runs]}


def table(summary: dict, comparison: dict) -> str:
    tf, lm, n = summary["tuneforge"], summary["lm_eval"], comparison["n"]
    rows = [("acc", "acc", ".4f"), ("acc_norm", "acc_norm", ".4f"), ("scoring items/s", "score_items_per_s", ".1f"),
            ("end-to-end items/s", "end_to_end_items_per_s", ".2f"), ("scoring s", "score_s", ".2f"),
            ("process wall s", "wall_s", ".2f")]
    lines = [f"{'':22} {'tuneforge':>12} {'lm-eval':>12}"]
    lines += [f"{label:22} {tf[key]:>12{fmt}} {lm[key]:>12{fmt}}" for label, key, fmt in rows]
    ag, counts = comparison["agreement"], comparison["agree_counts"]
    lines += [f"items: {n}; agreement of picks: acc {ag['acc']:.3f} ({counts['acc']}/{n}), acc_norm "
              f"{ag['acc_norm']:.3f} ({counts['acc_norm']}/{n})",
              f"items/s tuneforge / lm-eval: scoring {summary['ratio_score_items_per_s']:.2f}x, end to end "
              f"{summary['ratio_end_to_end_items_per_s']:.2f}x",
              f"tuneforge's acc_norm with lm-eval's divisor len(choice) instead of len(' ' + choice): "
              f"{comparison['tuneforge_acc_norm_lmeval_definition']:.4f} "
              f"({len(comparison['tuneforge_norm_picks_changed_by_lmeval_definition'])} picks change)",
              f"differences by cause: {json.dumps(comparison['causes'])}",
              f"checks: {json.dumps(comparison['checks'])}"]
    for d in comparison["differences"][:20]:
        lines.append(f"  {d['id']} {d['metric']}: gold {d['gold']} tf {d['tuneforge']} lm {d['lm_eval']} "
                     f"[{d['cause']}] tf {d['tuneforge_loglik']} lm {d['lm_eval_loglik']}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="any name tuneforge loads (exported once)")
    p.add_argument("--limit", type=int, default=None, help="tuneforge's seeded sample of N items (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--batch-size", type=int, default=8, help="passed to both (tuneforge: items per forward pass, "
                                                             "lm-eval: context/choice rows per forward pass)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of both sides (default: inherited)")
    p.add_argument("--rounds", type=int, default=1, help="run both sides this many times (timing: medians)")
    p.add_argument("--tol", type=float, default=1e-2, help="log-likelihoods closer than this count as equal")
    p.add_argument("--quick", action="store_true", help="smoke run: tinystories-656k, 20 items")
    p.add_argument("--out", default=str(ROOT / "bench" / "eval_vs_lmeval.json"))
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.quick:
        args.limit, args.model = 20, "tinystories-656k"
    python = lmeval_python()
    model = model_folder(args)
    items, requests = tuneforge_items(args)
    with tempfile.TemporaryDirectory(prefix="eval-vs-lmeval-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "arc_easy_hub_schema.jsonl"
        mismatched = write_hub_schema(items, data)
        runs: dict[str, list[dict]] = {"tuneforge": [], "lm_eval": []}
        for rnd in range(args.rounds):
            runs["tuneforge"].append(run_tuneforge(args, model, tmp, rnd))
            runs["lm_eval"].append(run_lmeval(args, python, model, data, tmp, rnd))
            print(f"round {rnd + 1}: tuneforge {runs['tuneforge'][-1]['wall_s']:.1f} s, lm-eval "
                  f"{runs['lm_eval'][-1]['wall_s']:.1f} s (process wall)", flush=True)
    comparison = compare(items, requests, runs["tuneforge"][0], runs["lm_eval"][0], boundary_merges(model, requests),
                         args.tol)
    comparison["checks"]["data_mismatches"] = mismatched
    n = len(items)
    summary = {"tuneforge": summarise(runs["tuneforge"], n), "lm_eval": summarise(runs["lm_eval"], n)}
    for key in ("score_items_per_s", "end_to_end_items_per_s"):
        summary[f"ratio_{key}"] = summary["tuneforge"][key] / summary["lm_eval"][key]
    lm_first = runs["lm_eval"][0]
    report = {"config": {**vars(args), "model_folder": str(model), "lm_eval_version": lm_first["version"]},
              "lm_eval_task": {"config": lm_first["task_config"], "changes": lm_first["task_changes"]},
              "tuneforge_settings": runs["tuneforge"][0]["settings"], "summary": summary, "comparison": comparison,
              "items": [it.id for it in items]}
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(table(summary, comparison))
    print(f"lm-eval {lm_first['version']}; JSON: {args.out}")


if __name__ == "__main__":
    main()
