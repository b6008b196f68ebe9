"""The Trainer every stage builds on: real-token counting, our callbacks, a separate eval collator."""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset, IterableDataset
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback

from tuneforge.stages.base import item_tokens
from tuneforge.stages.token_loss import labelled_token_loss
from tuneforge.utils.io import atomic_write_json


class TokenCounter:
    """Counts real (non-padding) tokens seen by this process; filled by TuneforgeTrainer.training_step.

    Saved in every checkpoint (FILE) and read back on resume, so the counts continue instead of restarting at 0.
    """

    FILE = "tuneforge_tokens.json"

    def __init__(self, real_tokens: int = 0, padded_tokens: int = 0):
        self.real_tokens = real_tokens
        self.padded_tokens = padded_tokens

    def save(self, checkpoint: Path) -> None:
        if checkpoint.is_dir():
            atomic_write_json(checkpoint / self.FILE, {"real_tokens": self.real_tokens,
                                                       "padded_tokens": self.padded_tokens})

    def load(self, checkpoint: Path) -> None:
        """Continue from a checkpoint's counts (a checkpoint written before counts were saved keeps 0)."""
        p = Path(checkpoint) / self.FILE
        if p.is_file():
            saved = json.loads(p.read_text(encoding="utf-8"))
            self.real_tokens, self.padded_tokens = int(saved["real_tokens"]), int(saved["padded_tokens"])


class ListDataset(Dataset):
    """Dict examples (input_ids and labels, or the `<side>_ids`/`<side>_labels` of a pair): a list, or memory-mapped
    Arrow items (`tuneforge.data.arrow_items.ArrowItems`, which count their lengths without reading rows)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def lengths(self) -> list[int]:
        """Tokens of every item (what length grouping sorts by)."""
        if hasattr(self.items, "lengths"):
            return self.items.lengths()
        return [item_tokens(it) for it in self.items]


class StreamDataset(IterableDataset):
    """A token-block stream (`tuneforge.data.streaming.TokenStream`, data.streaming) as torch's IterableDataset.

    Unsized: the Trainer runs train.max_steps steps, with no sampler (no length grouping) and no epochs. Each
    data-loader worker of each process reads its own shard of the rows (shard = process × workers + worker), so
    the tokenizing is split and no block is read twice; `TuneforgeTrainer.get_train_dataloader` tells it the
    process and keeps accelerate from splitting it again."""

    def __init__(self, stream):
        self.stream = stream
        self.process, self.processes = 0, 1

    def for_process(self, index: int, count: int) -> None:
        self.process, self.processes = index, count

    def __iter__(self):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.stream.blocks(shard=self.process * workers + worker, n_shards=self.processes * workers)


class TuneforgeTrainer(Trainer):
    """Trainer that counts real (non-padding) tokens for the throughput shown in the progress bar and logs.

    `eval_collator` batches the validation rows, which are never packed (the training collator may be).
    """

    def __init__(self, *args, token_counter: TokenCounter | None = None, eval_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_counter = token_counter or TokenCounter()
        self.eval_collator = eval_collator
        self.remove_callback(PrinterCallback)  # our ProgressCallback/MetricsCallback show and store the logs

    def get_train_dataloader(self):
        """A StreamDataset shards itself by process: accelerate must neither read it on rank 0 for everyone
        (dispatch_batches, its default for an IterableDataset) nor split its batches between processes again
        (IterableDatasetShard, made a pass-through here, as transformers does for its own rank-aware samplers)."""
        dataset = self.train_dataset
        if not isinstance(dataset, StreamDataset):
            return super().get_train_dataloader()
        dataset.for_process(self.args.process_index, self.args.world_size)
        config = self.accelerator.dataloader_config
        dispatch, config.dispatch_batches = config.dispatch_batches, False
        try:
            loader = super().get_train_dataloader()
        finally:
            config.dispatch_batches = dispatch
        from accelerate.data_loader import IterableDatasetShard

        shard = getattr(loader, "dataset", None)
        if isinstance(shard, IterableDatasetShard):
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def _get_train_sampler(self, train_dataset=None):
        """Length grouping measures every item by its tokens (pairs included), not only by `input_ids`."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, ListDataset):
            from transformers.trainer_pt_utils import LengthGroupedSampler

            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        dataset=dataset, lengths=dataset.lengths())
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        """Validation items are sorted by length already (data_prep): read them in order on one process; length
        grouping, where it applies, measures items by their tokens as in training."""
        if isinstance(eval_dataset, ListDataset):
            if self.args.world_size <= 1:
                from torch.utils.data import SequentialSampler

                return SequentialSampler(eval_dataset)
            if self.args.train_sampling_strategy == "group_by_length":
                import torch
                from transformers.trainer_pt_utils import LengthGroupedSampler

                return LengthGroupedSampler(self.args.eval_batch_size, dataset=eval_dataset,
                                            lengths=eval_dataset.lengths(),
                                            generator=torch.Generator().manual_seed(self.args.seed))
        return super()._get_eval_sampler(eval_dataset)

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator = self.data_collator
        self.data_collator = self.eval_collator or train_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

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


class CausalLMTrainer(TuneforgeTrainer):
    """pt and sft: the next-token loss over the labelled positions only, without whole logits
    (`tuneforge.stages.token_loss`), normalised as the model's own loss would be. In a multi-process run, with label
    smoothing or a custom loss function, when outputs are asked for (evaluation) and for the models `token_loss`
    names, the model computes its own loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        found = None
        if not return_outputs and self.label_smoother is None and self.compute_loss_func is None \
                and self.accelerator.num_processes == 1:
            found = labelled_token_loss(model, inputs)
        if found is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        total, count = found
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            return total / num_items_in_batch  # already scaled for gradient accumulation, as the model's own loss
        return total / count.clamp(min=1)


class BatchMetricsTrainer(TuneforgeTrainer):
    """A Trainer whose `compute_loss` is a batch mean (the Trainer divides it by the accumulation steps) and stores
    per-row metrics with `store(model, {name: tensor})`: their means since the last log are added to each training
    log, and their means over an evaluation to its metrics (`eval_<name>`), averaged over every process. Every batch
    must store the same names (a tensor may be empty)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self._stored: dict[str, list[dict]] = {"train": [], "eval": []}

    def store(self, model, metrics: dict) -> None:
        self._stored["train" if model.training else "eval"].append({k: v.detach() for k, v in metrics.items()})

    def averages(self, split: str) -> dict[str, float]:
        """Means of the stored metrics since the last call, over every process (sums and counts reduced)."""
        import torch

        rows, self._stored[split] = self._stored[split], []
        keys = sorted({k for r in rows for k in r})
        if not keys:
            return {}
        totals = torch.zeros(len(keys), 2)
        for row in rows:
            for k, v in row.items():
                totals[keys.index(k)] += torch.tensor([v.float().sum().item(), float(v.numel())])
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum").cpu()
        return {k: s / n for k, (s, n) in zip(keys, totals.tolist()) if n > 0}

    def log(self, logs, *args, **kwargs):
        if "loss" in logs:  # a training log: add the metrics of the steps since the last one
            logs = {**logs, **self.averages("train")}
        return super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        import torch

        inputs = self._prepare_inputs({k: v for k, v in inputs.items() if k != "n_real"})
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluation_loop(self, *args, **kwargs):
        self._stored["eval"] = []
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        output.metrics.update({f"{prefix}_{k}": v for k, v in self.averages("eval").items()})
        return output

