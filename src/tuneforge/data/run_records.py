"""The records of one run: its configured datasets loaded, mixed and split into train and validation.

Lives in the data layer so that everything before model loading (preview, doctor, sweeps, training) reads a run's
data the same way, without importing the training package.
"""

from __future__ import annotations

from tuneforge.utils.errors import DataError


def dataset_specs(entries):
    """The config's dataset entries, as load_datasets takes them (the same DatasetEntry class)."""
    return list(entries)


def load_train_records(cfg, *, prompts: bool = False, progress=None):
    """Load, mix and split the configured datasets → (train records, val records, dataset summaries, skipped).

    `prompts`: the stage trains on prompts (grpo, ppo), so rows without an answer load as prompts. `progress(n)` is
    called as rows are read."""
    from tuneforge.data.catalog import load_datasets, split_train_val

    d = cfg.data
    result = load_datasets(dataset_specs(d.train), dataset_info=d.dataset_info, on_error=d.on_error, mix=d.mix,
                           seed=d.seed, max_samples=d.max_samples, prompts=prompts, progress=progress)
    summaries = [(result.name, result.fingerprint, len(result.records))]
    records = result.records
    val = []
    if d.eval:
        ev = load_datasets(dataset_specs(d.eval), dataset_info=d.dataset_info, on_error=d.on_error, seed=d.seed,
                           prompts=prompts, progress=progress)
        val = ev.records
        summaries.append((f"eval:{ev.name}", ev.fingerprint, len(val)))
    elif d.val_size:
        records, val = split_train_val(records, d.val_size, d.seed)
    if not records:
        raise DataError(f"no training rows left after holding out val_size={d.val_size}",
                        hint="lower data.val_size or add data")
    return records, val, summaries, result.skipped
