"""Everything about the data of a run that happens before any model weight loads.

Load and validate every dataset (bad rows fail here with file:line:field, or are skipped and counted), split off
validation rows with a fixed seed, render with the chat template and loss mask, truncate, pack. Counts a user
should see (skipped, truncated, dropped, padding) are returned, never swallowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.data.packing import pack_examples
from tuneforge.data.render import RenderStats, Rendered, render_records
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


def _as_items(examples: list[Rendered], packed: bool, cutoff: int) -> tuple[list[dict], dict]:
    if packed:
        bins = pack_examples(examples, cutoff)
        items = [{"input_ids": b.input_ids, "labels": b.labels, "position_ids": b.position_ids} for b in bins]
        return items, {"packed_sequences": len(items),
                       "samples_per_sequence": round(len(examples) / max(len(items), 1), 2)}
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples], {}


def prepare_data(cfg, tok) -> PreparedData:
    """Records → model-ready examples for the configured stage (pt | sft)."""
    records, val_records, summaries, skipped = load_train_records(cfg)
    d = cfg.data
    render = dict(stage=cfg.stage, mask=d.mask, cutoff=d.cutoff_len, on_long_answer=d.on_long_answer)
    train_ex, tstats = render_records(records, tok, **render)
    if not train_ex:
        raise DataError(f"all {tstats.rows} training rows were dropped while rendering "
                        f"({tstats.dropped_no_target} had no answer tokens left after truncation)",
                        hint=f"raise data.cutoff_len (now {d.cutoff_len})")
    val_ex, vstats = render_records(val_records, tok, **render) if val_records else ([], RenderStats())
    train_items, pack_info = _as_items(train_ex, d.packing, d.cutoff_len)
    val_items, _ = _as_items(val_ex, False, d.cutoff_len)
    stats = {"train": tstats.as_dict(), "val": vstats.as_dict() if val_records else None,
             "skipped_rows": len(skipped), "skipped_examples": [str(e) for e in skipped[:5]], **pack_info}
    return PreparedData(train_items, val_items, len(records), stats, summaries, val_records, records)
