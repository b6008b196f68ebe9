"""The HF Trainer, configured by tuneforge: arguments per device, real-token counting, our callbacks."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from tuneforge.train.callbacks import TokenCounter


class ListDataset(Dataset):
    """A list of dict examples (input_ids, labels[, position_ids])."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class TuneforgeTrainer(Trainer):
    """Trainer that counts real (non-padding) tokens for the throughput shown in the progress bar and logs."""

    def __init__(self, *args, token_counter: TokenCounter | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_counter = token_counter or TokenCounter()
        self.remove_callback(PrinterCallback)  # our ProgressCallback/MetricsCallback show and store the logs

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = dict(inputs)
        inputs.pop("n_real", None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def training_step(self, model, inputs, num_items_in_batch=None):
        inputs = dict(inputs)
        n_real = inputs.pop("n_real", None)  # per-row real lengths from PadCollator (not a model input)
        self.token_counter.real_tokens += int(n_real.sum()) if n_real is not None else int(inputs["input_ids"].numel())
        self.token_counter.padded_tokens += int(inputs["input_ids"].numel())
        return super().training_step(model, inputs, num_items_in_batch)


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def training_arguments(cfg, resolved, out_dir: Path, device: str, n_train: int) -> TrainingArguments:
    """Map our TrainSection (+ resolved auto values) onto TrainingArguments, with per-device defaults."""
    t = cfg.train
    on_cpu = not device.startswith("cuda")
    save_steps = t.save_steps
    return TrainingArguments(
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
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=resolved.precision == "bf16",
        fp16=resolved.precision == "fp16",
        activation_checkpointing=resolved.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if (t.group_by_length and not cfg.data.packing) else "random",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if save_steps else "epoch",
        save_steps=save_steps or 500,
        save_total_limit=t.save_total_limit,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=t.num_workers,
        use_cpu=on_cpu,
        ddp_backend="gloo" if (on_cpu and is_distributed()) else None,
        ddp_find_unused_parameters=False if is_distributed() else None,
        save_only_model=False,
        restore_callback_states_from_checkpoint=True,
    )


def set_threads_for_cpu() -> None:
    """Under torchrun on CPU, split cores between processes instead of oversubscribing them."""
    world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if world > 1 and not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
