"""The stages on a real task: sentiment_en with SmolLM2, dev accuracy through `tuneforge eval task`, with the train
time of each step. Runs the commands a user would run, one after the other (see bench/README.md):

    base   the model as shipped
    sft    SFT with LoRA on N rows (r16, lr 2e-4, batch 8, 1 epoch, cutoff 128, loss on the answer)
    grpo   GRPO with LoRA on N further rows as prompts, starting from the sft run (model.name=RUN): 4 sampled
           answers per review, reward `label_match` (the row's answer is the label), auto learning rate
    dpo    DPO with LoRA on the same N further rows, starting from the sft run: chosen = the correct label,
           rejected = the other one, auto learning rate
Only the instruct SmolLM2 ships with tuneforge (no base model is available offline), so every step starts from it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _write(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _as_pair(row: dict, labels: tuple[str, str]) -> dict:
    wrong = labels[1] if row["output"] == labels[0] else labels[0]
    return {"instruction": row["instruction"], "input": row.get("input", ""), "chosen": row["output"],
            "rejected": wrong}


def _tf(*args: str) -> float:
    """Run `tuneforge ARGS`; returns its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tuneforge", *args], check=True)
    return time.perf_counter() - start


def _accuracy(out: Path, model: str, adapter: str | None, dev: Path, limit: int | None) -> float:
    args = ["eval", "task", "--model", model, "--data", str(dev), "--labels", "0,1", "--output", str(out),
            "--no-progress"] + (["--adapter", adapter] if adapter else []) + (["--limit", str(limit)] if limit else [])
    _tf(*args)
    results = json.loads((out / "results.json").read_text())
    (task,) = results["tasks"].values()
    return task["metrics"]["accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("TUNEFORGE_SHARED", ROOT.parent / "shared"))
    p.add_argument("--data", type=Path, default=shared / "data" / "sentiment_en")
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--dev-limit", type=int, default=None, help="evaluate on N dev rows (default: all)")
    p.add_argument("--out", type=Path, default=Path("/tmp/tuneforge_stages_sentiment"))
    args = p.parse_args()
    rows = _rows(args.data / "train.jsonl")
    random.Random(0).shuffle(rows)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    sft_data = _write(rows[:args.rows], out / "sft.jsonl")
    grpo_data = _write(rows[args.rows:2 * args.rows], out / "prompts.jsonl")
    pairs = _write([_as_pair(r, ("0", "1")) for r in rows[args.rows:2 * args.rows]], out / "pairs.jsonl")
    dev = args.data / "dev.jsonl"
    common = ["model.name=smollm2-135m-instruct", "data.cutoff_len=128", "data.mask=last", "method.type=lora",
              "method.r=16", "train.batch_size=8", "train.epochs=1", "output.report_to=[]",
              "output.overwrite=true"]
    report = {"rows": args.rows, "dev": str(dev), "dev_limit": args.dev_limit}
    report["base_accuracy"] = _accuracy(out / "eval_base", "smollm2-135m-instruct", None, dev, args.dev_limit)
    report["sft_train_s"] = _tf("train", f"data.train={sft_data}", "stage=sft", "train.learning_rate=2e-4",
                                f"output.dir={out / 'sft'}", *common)
    report["sft_accuracy"] = _accuracy(out / "eval_sft", "smollm2-135m-instruct", str(out / "sft" / "adapter"), dev,
                                       args.dev_limit)
    report["grpo_train_s"] = _tf("train", f"data.train={grpo_data}", "stage=grpo", f"output.dir={out / 'grpo'}",
                                 "stage.rewards=[{name: label_match}]", "stage.num_generations=4",
                                 "stage.max_completion_length=4", *common, f"model.name={out / 'sft'}")
    report["grpo_accuracy"] = _accuracy(out / "eval_grpo", str(out / "sft"), str(out / "grpo" / "adapter"), dev,
                                        args.dev_limit)
    report["dpo_train_s"] = _tf("train", f"data.train={pairs}", "stage=dpo", f"output.dir={out / 'dpo'}",
                                *common, f"model.name={out / 'sft'}")
    report["dpo_accuracy"] = _accuracy(out / "eval_dpo", str(out / "sft"), str(out / "dpo" / "adapter"), dev,
                                       args.dev_limit)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
