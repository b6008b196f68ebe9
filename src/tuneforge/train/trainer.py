"""The HF Trainer, configured by tuneforge: arguments per device, real-token counting, our callbacks."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainingArguments

from tuneforge.config.auto import resolve_schedule
from tuneforge.config.compat import distributed_mode
from tuneforge.train.cpu_runtime import set_threads
from tuneforge.train.distributed import world_size


# FSDP2 through accelerate (transformers' fsdp_config keys). Each decoder layer is one sharded unit (the model's
# _no_split_modules), resharded after its forward. FULL_STATE_DICT: a checkpoint holds the whole model and optimizer
# state gathered on rank 0 (pytorch_model_fsdp.bin, optimizer.bin), which resumes on any number of GPUs, and the
# final save writes an ordinary model / adapter folder (with SHARDED_STATE_DICT the Trainer's save_model writes no
# weights at all).
FSDP_CONFIG = {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
               "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False}


def distributed_arguments(cfg, device: str, checkpointing: bool) -> dict:
    """The TrainingArguments of train.distributed (auto resolved by the launch): DDP's backend, FSDP2's config,
    DeepSpeed's JSON file (its "auto" values are filled by transformers from the other arguments). Under FSDP the
    activations are checkpointed by FSDP itself: the Trainer refuses its own checkpointing beside it."""
    mode = distributed_mode(cfg, world_size())
    if mode == "ddp":
        return {"ddp_backend": None if device.startswith("cuda") else "gloo", "ddp_find_unused_parameters": False}
    if mode == "fsdp":
        return {"fsdp": True, "fsdp_config": {**FSDP_CONFIG, "activation_checkpointing": checkpointing},
                "activation_checkpointing": False}
    if mode == "deepspeed":
        return {"deepspeed": cfg.train.deepspeed_config}
    return {}


def _schedule_arguments(schedule, eval_on_start: bool = False) -> dict:
    """Evaluation / checkpoint / best-model arguments (see config.auto.resolve_schedule)."""
    save, ev = schedule.save_steps, schedule.eval_steps
    args = {"save_strategy": "steps" if save else "epoch", "save_steps": save or 500,
            "eval_strategy": ("steps" if ev else "epoch") if schedule.evaluate else "no", "eval_steps": ev or None,
            "eval_on_start": bool(eval_on_start and schedule.evaluate)}
    if schedule.load_best:
        args.update(load_best_model_at_end=True, metric_for_best_model=schedule.load_best,
                    greater_is_better=schedule.greater_is_better)
    return args


# train.optim → transformers' optimizer names
_OPTIMIZERS = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "adafactor": "adafactor", "sgd": "sgd"}


def training_arguments(cfg, resolved, out_dir: Path, device: str, n_train: int, schedule=None) -> TrainingArguments:
    """Map our TrainSection (+ resolved auto values, + the eval/save schedule) onto TrainingArguments."""
    t = cfg.train
    schedule = schedule or resolve_schedule(t, has_validation=False)
    args = dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=resolved.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=resolved.batch_size,
        per_device_eval_batch_size=resolved.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=resolved.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of total steps in transformers 5
        weight_decay=t.weight_decay,
        optim=_OPTIMIZERS[t.optim],
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=resolved.precision == "bf16",
        fp16=resolved.precision == "fp16",
        use_liger_kernel=t.kernels == "liger",  # the Trainer patches the model's RMSNorm, RoPE and SwiGLU
        activation_checkpointing=resolved.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if (t.group_by_length and not cfg.data.packing) else "random",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_total_limit=t.save_total_limit,
        **_schedule_arguments(schedule, t.eval_on_start),
        report_to=list(cfg.output.report_to) or "none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=t.num_workers,
        use_cpu=device == "cpu",  # only the CPU: "mps" must not fall back to it (cuda and mps pick themselves)
        save_only_model=False,
        restore_callback_states_from_checkpoint=True,
        torch_compile=t.compile,  # inductor (on CPU too); see train.compile
    )
    args.update(distributed_arguments(cfg, device, resolved.gradient_checkpointing))
    return TrainingArguments(**args)


def set_threads_for_cpu(setting="auto") -> int:
    """torch's intra-op threads as train.threads says (auto: OMP_NUM_THREADS, else the physical cores divided by
    the processes of this machine, so torchrun on CPU splits the cores instead of oversubscribing them)."""
    return set_threads(setting)[0]


def keep_later_within_noise(trainer, threshold: float) -> None:
    """train.load_best with a noise threshold: an evaluation within `threshold` of the best value so far counts as
    good as the best, and being later (more data seen, a lower learning rate) it becomes the kept checkpoint. The
    Trainer's own rule keeps a strictly higher value, so an early checkpoint that won by noise on a few hundred
    scored rows would beat the annealed end of the run. `state.best_metric` stays the best value seen, which early
    stopping compares against."""
    if threshold <= 0:
        return

    def determine(metrics: dict, trial=None) -> bool:
        key = trainer.args.metric_for_best_model
        value = metrics[key if key.startswith("eval_") else f"eval_{key}"]
        sign = 1.0 if trainer.args.greater_is_better else -1.0
        state = trainer.state
        better = state.best_metric is None or sign * (value - state.best_metric) > 0
        if better:
            state.best_metric = value
        if better or sign * (state.best_metric - value) <= threshold:
            state.best_global_step = state.global_step
            return True
        return False

    trainer._determine_best_metric = determine

