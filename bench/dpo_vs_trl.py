"""DPO with LoRA: tuneforge's `dpo` stage against TRL's DPOTrainer (run directly, in its own venv: see
bench/anchors.py), on the same model folder, data and batches; and the memory of DPO against SFT with LoRA on the
same sequences. See bench/README.md.

Each contestant runs alone in a fresh process, one after the other (never two at once), round after round:
    tf_dpo   tuneforge.train.runner.train, stage dpo, LoRA (reference = the adapter disabled)
    trl_dpo  trl.DPOTrainer with peft_config (reference = the adapter disabled), the same LoRA settings
    tf_sft   tuneforge SFT with LoRA on the chosen and the rejected conversations, batch 2×B: the same sequences
Both DPO trainers draw batches with the Trainer's seeded random sampler over datasets of the same length, so step
k holds the same pairs in both. A step is timed from on_step_begin to on_step_end; the first `--warmup` steps are
left out. Peak RSS is the process's VmHWM.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTESTANTS = ("tf_dpo", "trl_dpo", "tf_sft")


def _write_pairs(args, path: Path) -> Path:
    """The pairs as conversations: {"prompt": [messages], "chosen": [message], "rejected": [message]}."""
    from tuneforge.data.catalog import dataset_spec, load_dataset

    records = load_dataset(dataset_spec(path=args.data, max_samples=args.rows)).records
    path.write_text("".join(json.dumps({"prompt": r.messages, "chosen": r.chosen, "rejected": r.rejected}) + "\n"
                            for r in records), encoding="utf-8")
    return path


def _read_pairs(args) -> list[dict]:
    return [json.loads(x) for x in Path(args.pairs).read_text(encoding="utf-8").splitlines()]


def _write_rows(args, path: Path, sft: bool) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for r in _read_pairs(args):
            if sft:
                for side in (r["chosen"], r["rejected"]):
                    f.write(json.dumps({"messages": r["prompt"] + side}) + "\n")
            else:
                f.write(json.dumps({"messages": r["prompt"], "chosen": r["chosen"][-1],
                                    "rejected": r["rejected"][-1]}) + "\n")
    return path


def _tf(args, sft: bool) -> dict:
    from tuneforge.config.load import load_config
    from tuneforge.train.runner import train

    from anchors import step_timer

    tmp = Path(tempfile.mkdtemp())
    data = _write_rows(args, tmp / "rows.jsonl", sft)
    timer = step_timer()
    cfg = load_config(None, [
        f"stage={'sft' if sft else 'dpo'}", f"model.name={args.model}", f"data.train={data}",
        f"data.cutoff_len={args.cutoff}", "data.mask=last", "method.type=lora", f"method.r={args.r}",
        "method.target_modules=all-linear", f"train.batch_size={args.batch * (2 if sft else 1)}",
        f"train.max_steps={args.steps}", f"train.learning_rate={args.lr}", "train.group_by_length=false",
        "train.warmup_ratio=0", f"output.dir={tmp / 'run'}", "output.report_to=[]", "output.plot=false",
        f"train.gradient_checkpointing={args.gc == 'on'}"])
    res = train(cfg, extra_callbacks=[timer])
    return {"step_s": timer.times, "loss": [r.get("loss") for r in _metrics(res.output_dir)]}


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]


def _trl(args) -> dict:
    from anchors import step_timer
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    ds = Dataset.from_list(_read_pairs(args))
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="float32")
    peft = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    timer = step_timer()
    tmp = tempfile.mkdtemp()
    cfg = DPOConfig(output_dir=tmp, per_device_train_batch_size=args.batch, max_steps=args.steps,
                    gradient_checkpointing=args.gc == "on",
                    learning_rate=args.lr, max_length=args.cutoff, beta=0.1, report_to="none", use_cpu=True,
                    logging_steps=1, save_strategy="no", seed=42, data_seed=42, warmup_steps=0,
                    lr_scheduler_type="cosine", disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=peft,
                         callbacks=[timer])
    trainer.train()
    return {"step_s": timer.times, "loss": [r["loss"] for r in trainer.state.log_history if "loss" in r]}


def run_one(args) -> None:
    import torch

    from anchors import peak_rss_mib

    torch.set_num_threads(args.threads)
    out = _trl(args) if args.run == "trl_dpo" else _tf(args, sft=args.run == "tf_sft")
    out.update(contestant=args.run, peak_rss_mib=peak_rss_mib())
    Path(args.result).write_text(json.dumps(out))


def _ratios(summary: dict) -> dict:
    out = {}
    if {"tf_dpo", "trl_dpo"} <= set(summary):
        out["speed_tf_vs_trl"] = summary["trl_dpo"]["median_step_s"] / summary["tf_dpo"]["median_step_s"]
        out["rss_tf_vs_trl"] = summary["tf_dpo"]["peak_rss_mib"] / summary["trl_dpo"]["peak_rss_mib"]
    if {"tf_dpo", "tf_sft"} <= set(summary):
        out["rss_dpo_vs_sft"] = summary["tf_dpo"]["peak_rss_mib"] / summary["tf_sft"]["peak_rss_mib"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get("TUNEFORGE_SHARED", str(ROOT.parent / "shared"))
    p.add_argument("--data", default=f"{shared}/data/llamafactory_demo/dpo_en_demo.json")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cutoff", type=int, default=512)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gc", choices=("on", "off"), default="off",
                   help="gradient checkpointing, the same on both sides (TRL's own default is on, tuneforge's auto is "
                        "off on CPU)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 steps, 1 round, cutoff 128")
    p.add_argument("--out", default=str(ROOT / "bench" / "dpo_results.json"))
    p.add_argument("--run", choices=CONTESTANTS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--pairs", help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.run:
        return run_one(args)
    if args.quick:
        args.steps, args.rounds, args.cutoff, args.warmup, args.rows = 4, 1, 128, 1, 32
    from anchors import anchor_python, export_model, run_rounds, summarise

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = export_model(args.model, Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors"))
                             / f"model-{Path(args.model).name}")
        pairs = _write_pairs(args, tmp / "pairs.jsonl")
        passed = [f"--{k}={getattr(args, k)}" for k in ("rows", "batch", "steps", "cutoff", "r", "lr", "threads",
                                                                  "gc")]
        passed += [f"--model={model}", f"--pairs={pairs}"]
        python = Path(sys.executable)
        contestants = {"tf_dpo": python, "trl_dpo": anchor_python(), "tf_sft": python}
        results = run_rounds(Path(__file__).resolve(), contestants, args.rounds, passed, tmp, args.warmup)
    summary = summarise(results, args.warmup, lambda runs: {"first_losses": runs[0]["loss"][:3]})
    summary.update(_ratios(summary))
    Path(args.out).write_text(json.dumps({"config": vars(args), "summary": summary, "runs": results}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
