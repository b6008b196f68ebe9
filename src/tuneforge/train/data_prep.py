"""Everything about the data of a run that happens before any model weight loads.

Load and validate every dataset (bad rows fail here with file:line:field, or are skipped and counted), split off
validation rows with a fixed seed, render them as the stage needs (chat template and loss mask, pairs, text
chunks), truncate, pack. Counts a user should see (skipped, truncated, dropped, padding) are returned, never
swallowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.data.packing import pack_examples
from tuneforge.data.render import Rendered
from tuneforge.stages.trainer import item_tokens
from tuneforge.utils.errors import DataError
from tuneforge.data.run_records import dataset_specs, load_train_records  # noqa: F401  (re-exported)


@dataclass
class PreparedData:
    train: list[dict]
    val: list[dict]
    n_train_rows: int
    stats: dict
    datasets: list[tuple[str, str, int]] = field(default_factory=list)  # (name, fingerprint, n_records)
    val_records: list = field(default_factory=list)
    train_records: list = field(default_factory=list)


def _packed(items: list[dict], cutoff: int) -> tuple[list[dict], dict]:
    bins = pack_examples([Rendered(it["input_ids"], it["labels"]) for it in items], cutoff)
    packed = [{"input_ids": b.input_ids, "labels": b.labels, "position_ids": b.position_ids} for b in bins]
    return packed, {"packed_sequences": len(packed), "samples_per_sequence": round(len(items) / max(len(packed), 1), 2)}


def prepare_data(cfg, tok, stage, params) -> PreparedData:
    """Records → model-ready items for `stage` (a tuneforge.stages.Stage with its validated `params`)."""
    records, val_records, summaries, skipped = load_train_records(cfg, prompts=stage.trains_on_prompts)
    stage.check_records(records + val_records)
    d = cfg.data
    train = stage.prepare(records, tok, d, params)
    if not train.items:
        raise DataError(f"all {train.stats['rows']} training rows were dropped while rendering "
                        f"({train.stats.get('dropped_no_target', 0)} had no answer tokens left after truncation)",
                        hint=f"raise data.cutoff_len (now {d.cutoff_len})")
    val = stage.prepare(val_records, tok, d, params) if val_records else None
    train_items, pack_info = _packed(train.items, d.cutoff_len) if d.packing else (train.items, {})
    stats = {"train": train.stats, "val": val.stats if val else None,
             "skipped_rows": len(skipped), "skipped_examples": [str(e) for e in skipped[:5]], **pack_info}
    val_items = sorted(val.items, key=item_tokens) if val else []  # similar lengths batch together: less padding
    return PreparedData(train_items, val_items, len(records), stats, summaries, val_records, records)
