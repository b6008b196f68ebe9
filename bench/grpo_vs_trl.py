"""GRPO with LoRA on CPU: tuneforge's `grpo` stage against TRL's GRPOTrainer run directly (in its own venv, see
bench/anchors.py), on the same model folder, prompts, reward, LoRA settings, G and batch. See bench/README.md.

    tf_grpo   `tuneforge.train.runner.train` with stage grpo, as a user runs it (progress, metrics, registry)
    trl_grpo  trl.GRPOTrainer with peft_config, configured by hand with the same values

Sampling makes completion lengths differ between the two, so next to seconds per step the benchmark reports
completion tokens per second (completions per step × their mean length / step seconds) and completions per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
CONTESTANTS = ("tf_grpo", "trl_grpo")


def brevity(prompts, completions, completion_ids=None, **columns):
    """The benchmark's reward: 1 for an answer of at most 8 words, less the longer it gets (cheap, deterministic)."""
    out = []
    for c in completions:
        words = len((c[0]["content"] if isinstance(c, list) else c).split())
        out.append(min(1.0, 8 / max(words, 1)))
    return out


def _prompts(args) -> list[list[dict]]:
    rows = [json.loads(x) for x in Path(args.data).read_text(encoding="utf-8").splitlines()[:args.rows]]
    return [[{"role": "user", "content": f"{r['instruction']}\n{r.get('input', '')}".strip()}] for r in rows]


def _tf(args, data: Path, out: Path) -> dict:
    sys.path.insert(0, str(HERE.parent))
    from anchors import step_timer

    from tuneforge.config.load import load_config
    from tuneforge.train.runner import train

    timer = step_timer()
    cfg = load_config(None, [
        "stage=grpo", f"stage.rewards=[{{name: '{HERE}:brevity'}}]", f"stage.num_generations={args.g}",
        f"stage.max_completion_length={args.completion}", "stage.temperature=1.0", f"model.name={args.model}",
        f"data.train={data}", "data.cutoff_len=512", "method.type=lora", f"method.r={args.r}",
        "method.target_modules=all-linear", f"train.batch_size={args.batch}", f"train.max_steps={args.steps}",
        f"train.learning_rate={args.lr}", "train.warmup_ratio=0", "train.logging_steps=1", "train.seed=42",
        f"train.gradient_checkpointing={args.gc == 'on'}",
        f"output.dir={out}", "output.report_to=[]", "output.plot=false", "eval.preview_prompts=[]"])
    res = train(cfg, extra_callbacks=[timer])
    logs = [json.loads(x) for x in (res.output_dir / "metrics.jsonl").read_text().splitlines()]
    return {"step_s": timer.times, "mean_length": [r["completions/mean_length"] for r in logs if "reward" in r],
            "reward": [r["reward"] for r in logs if "reward" in r]}


def _trl(args, data: Path, out: Path) -> dict:
    sys.path.insert(0, str(HERE.parent))
    from anchors import step_timer
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    rows = [json.loads(x) for x in data.read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="float32")
    peft = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    timer = step_timer()
    cfg = GRPOConfig(output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.steps,
                     gradient_checkpointing=args.gc == "on",
                     learning_rate=args.lr, num_generations=args.g, max_completion_length=args.completion,
                     temperature=1.0, beta=0.0, report_to="none", use_cpu=True, logging_steps=1, save_strategy="no",
                     seed=42, warmup_steps=0, lr_scheduler_type="cosine", disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[brevity], args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, peft_config=peft, callbacks=[timer])
    trainer.train()
    logs = [r for r in trainer.state.log_history if "reward" in r]
    return {"step_s": timer.times, "mean_length": [r["completions/mean_length"] for r in logs],
            "reward": [r["reward"] for r in logs]}


def run_one(args) -> None:
    import torch

    sys.path.insert(0, str(HERE.parent))
    from anchors import peak_rss_mib

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    out = (_trl if args.run == "trl_grpo" else _tf)(args, Path(args.prompts), tmp / "run")
    out.update(contestant=args.run, peak_rss_mib=peak_rss_mib())
    Path(args.result).write_text(json.dumps(out))


def _throughput(args, warmup: int):
    def extra(runs: list[dict]) -> dict:
        steps = [s for r in runs for s in r["step_s"][warmup:]]
        lengths = [m for r in runs for m in r["mean_length"][warmup:]]
        tokens_per_step = args.batch * statistics.fmean(lengths)
        return {"completions_per_s": args.batch / statistics.fmean(steps), "mean_completion_tokens":
                statistics.fmean(lengths), "completion_tokens_per_s": tokens_per_step / statistics.fmean(steps),
                "first_rewards": runs[0]["reward"][:3]}
    return extra


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get("TUNEFORGE_SHARED", str(HERE.parents[2] / "shared"))
    p.add_argument("--data", default=f"{shared}/data/sentiment_en/train.jsonl")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--g", type=int, default=4)
    p.add_argument("--batch", type=int, default=8, help="completions per step")
    p.add_argument("--completion", type=int, default=32, help="max completion tokens")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gc", choices=("on", "off"), default="off",
                   help="gradient checkpointing, the same on both sides (TRL's own default is on, tuneforge's auto is "
                        "off on CPU)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 1 round, completions of 8 tokens")
    p.add_argument("--out", default=str(HERE.parent / "grpo_results.json"))
    p.add_argument("--run", choices=CONTESTANTS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        return run_one(args)
    if args.quick:
        args.steps, args.rounds, args.completion, args.warmup = 3, 1, 8, 1
    sys.path.insert(0, str(HERE.parent))
    from anchors import anchor_python, export_model, run_rounds, summarise

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = export_model(args.model, Path(os.environ.get("TUNEFORGE_ANCHORS", "/tmp/tuneforge-anchors"))
                             / f"model-{Path(args.model).name}")
        prompts = tmp / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in _prompts(args)))
        passed = [f"--{k}={getattr(args, k)}" for k in ("g", "batch", "completion", "steps", "r", "lr", "threads",
                                                                  "gc")]
        passed += [f"--model={model}", f"--prompts={prompts}"]
        contestants = {"tf_grpo": Path(sys.executable), "trl_grpo": anchor_python()}
        results = run_rounds(HERE, contestants, args.rounds, passed, tmp, args.warmup)
    summary = summarise(results, args.warmup, _throughput(args, args.warmup))
    if set(CONTESTANTS) <= set(summary):
        tf, trl = summary["tf_grpo"], summary["trl_grpo"]
        summary["step_speed_tf_vs_trl"] = trl["median_step_s"] / tf["median_step_s"]
        summary["completion_tokens_per_s_tf_vs_trl"] = tf["completion_tokens_per_s"] / trl["completion_tokens_per_s"]
        summary["rss_tf_vs_trl"] = tf["peak_rss_mib"] / trl["peak_rss_mib"]
    Path(args.out).write_text(json.dumps({"config": vars(args), "summary": summary, "runs": results}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
