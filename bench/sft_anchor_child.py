"""The anchor contestants of bench/sft_throughput.py: TRL's SFTTrainer and LLaMA-Factory, each run as its users run
it, in its own virtual environment, driven step by step by the benchmark's parent process.

    python sft_anchor_child.py ROLE RFD WFD SPEC.json      (started by sft_throughput.py, never by hand)

ROLE is trl_unpacked, trl_packed, lf_unpacked or lf_packed. The script never imports tuneforge (the anchor venvs do
not have it): it shares the parent's tiny pipe protocol through bench/bench_pipe.py (standard library only) and
puts one TrainerCallback into the anchor's own Trainer:

- on_train_begin: one untimed forward/backward pre-warm (as every tuneforge contestant does), "ready", then wait for
  the parent's first "go";
- on_step_end: report the step (wall and CPU seconds since "go", real and padded tokens of its batch), wait for the
  next "go". Waiting there and not in on_step_begin keeps everything the framework does per step (logging of the
  previous step, fetching and collating the batch) inside the timed window, exactly as for tuneforge's contestants.

Tokens are counted where the anchor collates a batch (a wrapper around TRL's collator, a subclass of LLaMA-Factory's):
real = the tokens of the samples, padded = the size of the collated `input_ids`. Bookkeeping only: the batches the
anchors train on are their own.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from pathlib import Path

from bench_pipe import Channel, cpu_since, peak_rss_mb, release_free_memory, rss_mb

T_START = time.perf_counter()
LF_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
           "system_tag": "system"}


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "datasets", "trl", "llamafactory"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------------- token counting

def sample_tokens(feature: dict) -> int:
    """Non-padding tokens of one collator input: a sample, or a pack of samples.

    LLaMA-Factory pads every pack to cutoff_len with position id 0 (and, without neat_packing, attention mask 1), so a
    pack's trailing run of position id 0 is its padding; a sample's own first position is 0 too but never trails."""
    ids = list(feature["input_ids"])
    pos = feature.get("position_ids")
    if pos is not None and len(pos) == len(ids) and len(ids) > 1:
        pos = list(pos)
        end = len(pos)
        while end > 1 and pos[end - 1] == 0:
            end -= 1
        return end
    mask = feature.get("attention_mask")
    if mask is not None:
        return sum(1 for m in mask if m)
    return len(ids)


def count_batch(features: list[dict], batch, counts: deque) -> None:
    """Queue (real, padded) of a collated batch; batches are collated in the order the steps consume them."""
    counts.append((sum(sample_tokens(f) for f in features), int(batch["input_ids"].numel())))


class CountingCollator:
    """Wraps a data collator (TRL's), queueing the tokens of each batch it collates."""

    def __init__(self, inner, counts: deque):
        self.inner, self.counts = inner, counts

    def __call__(self, features):
        batch = self.inner(features)
        count_batch(features, batch, self.counts)
        return batch

    def __getattr__(self, name):
        return getattr(self.inner, name)


# --------------------------------------------------------------------------------------------------- lockstep

def lockstep_callback(chan: Channel, counts: deque, threads: int):
    """The TrainerCallback that puts the anchor's own Trainer into the parent's lockstep rounds."""
    import torch
    from transformers import TrainerCallback

    class Lockstep(TrainerCallback):
        def __init__(self):
            self.t0, self.c0 = 0.0, None
            self.losses: list[list] = []
            self.n_params = 0

        def wait(self, control) -> None:
            msg = chan.recv()
            self.t0, self.c0 = time.perf_counter(), os.times()
            if msg.get("cmd") != "go":
                control.should_training_stop = True

        def on_train_begin(self, args, state, control, model=None, **kw):
            torch.set_num_threads(threads)  # again: a framework may have set its own count while loading
            self.n_params = sum(p.numel() for p in model.parameters() if not p.requires_grad)
            t = time.perf_counter()
            prewarm(model)
            chan.send(kind="ready", setup_s=time.perf_counter() - T_START, prewarm_s=time.perf_counter() - t,
                      n_params=self.n_params, versions=versions())
            self.wait(control)

        def on_step_end(self, args, state, control, **kw):
            wall, cpu = time.perf_counter() - self.t0, cpu_since(self.c0)
            real, padded = counts.popleft()
            release_free_memory()  # outside the timed window: the parent waits for this report
            chan.send(kind="step", step=state.global_step, wall=wall, **cpu, real=real, padded=padded,
                      idle_rss_mb=rss_mb())
            self.wait(control)
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append([state.global_step, float(logs["loss"])])

    return Lockstep()


def prewarm(model) -> None:
    """One untimed forward+backward on a 2×32 batch, gradients dropped (the parent's `prewarm`, without data)."""
    import torch

    ids = torch.arange(1000, 1032).repeat(2, 1)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone())
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    release_free_memory()


def warmup_steps(spec: dict) -> int:
    """tuneforge's default warmup_ratio (0.03) as whole steps, which every transformers version takes."""
    return math.ceil(0.03 * spec["steps"])


def finish(chan: Channel, lockstep, n_items: int, **extra) -> None:
    chan.send(kind="done", peak_rss_mb=peak_rss_mb(), losses=lockstep.losses, n_items=n_items, **extra)


# ------------------------------------------------------------------------------------------------------- TRL

def read_rows(path: str) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def run_trl(spec: dict, chan: Channel, packing: bool) -> None:
    """TRL's SFTTrainer on conversational prompt-completion rows (loss on the completion, TRL's default for them).

    packing=True is TRL's default packing: best-fit decreasing into max_length bins, padding-free (the batch is one
    flattened row with restarting position ids; transformers derives the block-diagonal mask from them)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    a = spec["anchor"]
    counts: deque = deque()
    lockstep = lockstep_callback(chan, counts, spec["threads"])
    tok = AutoTokenizer.from_pretrained(a["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(a["model_dir"], dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    cfg = SFTConfig(
        output_dir=str(Path(spec["workdir"]) / f"run-{spec['name']}"), per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, num_train_epochs=1, max_steps=spec["steps"], learning_rate=spec["lr"],
        lr_scheduler_type="cosine", warmup_steps=warmup_steps(spec), weight_decay=0.0, max_grad_norm=1.0,
        seed=spec["seed"], data_seed=spec["seed"], max_length=spec["cutoff"], packing=packing,
        # TRL's own defaults differ from the benchmark's settings here: no checkpointing, fp32, log every step
        activation_checkpointing=False, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
        logging_steps=1, save_strategy="no", report_to="none",
        train_sampling_strategy="random" if packing else spec["anchor"]["unpacked_order"])
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(read_rows(a["trl_rows"])),
                         processing_class=tok, peft_config=lora, callbacks=[lockstep])
    trainer.data_collator = CountingCollator(trainer.data_collator, counts)
    trainer.train()
    finish(chan, lockstep, len(trainer.train_dataset), padding_free=bool(getattr(trainer, "padding_free", False)))


# -------------------------------------------------------------------------------------------- LLaMA-Factory

def default_system(model_dir: str) -> str | None:
    """The system prompt the model's own chat template inserts when a conversation has none (SmolLM2: one), so that
    LLaMA-Factory's `smollm2` template renders the same text as tuneforge and TRL."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "X"}], tokenize=False)
    head = "<|im_start|>system\n"
    return text[len(head):text.index("<|im_end|>")] if text.startswith(head) else None


def lf_args(spec: dict, packing: bool, work: Path) -> dict:
    """LLaMA-Factory's training arguments, as a YAML config of `llamafactory-cli train` would hold them."""
    a = spec["anchor"]
    (work / "dataset_info.json").write_text(json.dumps({"bench_rows": {
        "file_name": a["lf_rows"], "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": LF_TAGS}}))
    args = {
        "model_name_or_path": a["model_dir"], "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target": "all",
        "dataset": "bench_rows", "dataset_dir": str(work), "template": "smollm2", "cutoff_len": spec["cutoff"],
        "overwrite_cache": True, "output_dir": str(work / "output"), "per_device_train_batch_size": spec["batch_size"],
        "gradient_accumulation_steps": 1, "learning_rate": spec["lr"], "num_train_epochs": 1.0,
        "max_steps": spec["steps"], "lr_scheduler_type": "cosine", "warmup_steps": warmup_steps(spec),
        "seed": spec["seed"], "logging_steps": 1, "save_strategy": "no", "report_to": "none", "plot_loss": False,
        "bf16": False, "fp16": False,  # on a CPU LLaMA-Factory computes in fp32 then
        "disable_gradient_checkpointing": True,  # LLaMA-Factory checkpoints by default
        "packing": packing,
        "train_sampling_strategy": "random" if packing else a["unpacked_order"],
    }
    if packing and a["lf_packing"] == "neat":
        args["neat_packing"] = True  # packs without attention across samples, as tuneforge's and TRL's packing
    system = default_system(a["model_dir"])
    if system is not None:
        args["default_system"] = system
    return args


def run_lf(spec: dict, chan: Channel, packing: bool) -> None:
    """LLaMA-Factory 0.9.5 through its Python API (`run_exp`, what `llamafactory-cli train` calls)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from llamafactory.train import tuner
    from llamafactory.train.sft import workflow
    from transformers import TrainerCallback

    counts: deque = deque()
    lockstep = lockstep_callback(chan, counts, spec["threads"])
    seen = {"items": 0}

    class CountingLFCollator(workflow.SFTDataCollatorWith4DAttentionMask):
        def __call__(self, features):
            batch = super().__call__(features)
            count_batch(features, batch, counts)
            return batch

    workflow.SFTDataCollatorWith4DAttentionMask = CountingLFCollator  # run_sft builds its collator from this name

    class ItemCount(TrainerCallback):  # the size of the train set LLaMA-Factory built (rows, or packs)
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            if train_dataloader is not None:
                seen["items"] = len(train_dataloader.dataset)

    work = Path(spec["workdir"]) / f"run-{spec['name']}"
    work.mkdir(parents=True, exist_ok=True)
    tuner.run_exp(args=lf_args(spec, packing, work), callbacks=[ItemCount(), lockstep])
    finish(chan, lockstep, seen["items"], neat_packing=bool(packing and spec["anchor"]["lf_packing"] == "neat"))


ROLES = {"trl_unpacked": (run_trl, False), "trl_packed": (run_trl, True),
         "lf_unpacked": (run_lf, False), "lf_packed": (run_lf, True)}


def main(argv: list[str]) -> None:
    role, rfd, wfd, spec_path = argv[0], int(argv[1]), int(argv[2]), argv[3]
    if role not in ROLES:
        raise SystemExit(f"unknown anchor role {role!r}; known: {', '.join(ROLES)}")
    spec = json.loads(Path(spec_path).read_text())
    run, packing = ROLES[role]
    run(spec, Channel(rfd, wfd), packing)


if __name__ == "__main__":
    main(sys.argv[1:])
