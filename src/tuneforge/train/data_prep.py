"""Everything about the data of a run that happens before any model weight loads.

Load and validate every dataset (bad rows fail here with file:line:field, or are skipped and counted), split off
validation rows with a fixed seed, render them as the stage needs (chat template and loss mask, pairs, text
chunks), truncate, pack. Counts a user should see (skipped, truncated, dropped, padding) are returned, never
swallowed.

Stages whose items are token-id lists (`Stage.cacheable`: pt, sft) go through the data cache (`data.cache`): the
rendered items are written as Arrow shards, rendered by `data.num_proc` processes, packed by best fit, and training
reads them memory-mapped. The entry's key covers the data, tokenizer, template, stage and settings, so a rerun,
resume, sweep cell or another method on the same data finds it and renders nothing; when the data are local files
their bytes are hashed instead of loading the rows, so a cache hit does not even parse them. Under torchrun /
accelerate rank 0 prepares (or finds) the entry and the other ranks wait and map it.

With data.streaming (stage pt) nothing is rendered ahead and nothing is cached: rank 0 reads the local rows once,
keeping none (bad rows fail or are counted here, before weights load), and the training items are a
`tuneforge.data.streaming.TokenStream` that tokenizes while training. Validation rows (data.eval) are rendered in
memory as usual.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.packing import pack_examples
from tuneforge.data.records import Record
from tuneforge.data.render import Rendered
from tuneforge.stages.base import item_tokens
from tuneforge.train import distributed as dist
from tuneforge.utils.console import console
from tuneforge.utils.errors import DataError
from tuneforge.data.run_records import load_train_records


@dataclass
class PreparedData:
    train: list  # list[dict], ArrowItems (memory-mapped) for cached stages, or a TokenStream (data.streaming: unsized)
    val: list
    n_train_rows: int | None  # None: streamed from a hub, the row count is unknown
    stats: dict
    datasets: list[tuple[str, str, int]] = field(default_factory=list)  # (name, fingerprint, n_records)
    val_records: list = field(default_factory=list)


def prepare_data(cfg, tok, stage, params, *, show_progress: bool = True) -> PreparedData:
    """Records → model-ready items for `stage` (a tuneforge.stages.Stage with its validated `params`)."""
    if cfg.data.streaming:
        return _prepare_stream(cfg, tok, stage, params, show_progress)
    if not stage.cacheable:
        return _prepare_in_memory(cfg, tok, stage, params)
    from tuneforge.data.cache import DataCache, cache_root

    cache = DataCache(cache_root(cfg.data.cache_dir))
    key, hit = dist.decide(lambda: _ensure_entry(cfg, tok, stage, params, cache, show_progress))
    entry = cache.find(key)
    if entry is None:  # another node's rank 0 wrote it where this node cannot see: render here
        key, hit = _ensure_entry(cfg, tok, stage, params, cache, show_progress)
        entry = cache.find(key)
    data = _from_entry(entry, hit)
    if not cfg.data.cache and dist.world_size() <= 1:
        shutil.rmtree(entry.path, ignore_errors=True)  # mapped shards stay readable until the run ends
    return data


def _prepare_in_memory(cfg, tok, stage, params) -> PreparedData:
    records, val_records, summaries, skipped = load_train_records(cfg, prompts=stage.trains_on_prompts)
    stage.check_records(records + val_records)
    d = cfg.data
    train = stage.prepare(records, tok, d, params)
    _check_kept(train.stats, d.cutoff_len)
    val = stage.prepare(val_records, tok, d, params) if val_records else None
    train_items, pack_info = _packed(train.items, d.cutoff_len) if d.packing else (train.items, {})
    stats = {"train": train.stats, "val": val.stats if val else None, **_skipped_stats(skipped), **pack_info}
    val_items = sorted(val.items, key=item_tokens) if val else []  # similar lengths batch together: less padding
    return PreparedData(train_items, val_items, len(records), stats, summaries, val_records)


def _check_kept(stats: dict, cutoff: int) -> None:
    if not stats.get("kept", 1):
        raise DataError(f"all {stats['rows']} training rows were dropped while rendering "
                        f"({stats.get('dropped_no_target', 0)} had no answer tokens left after truncation)",
                        hint=f"raise data.cutoff_len (now {cutoff})")


def _skipped_stats(skipped: list) -> dict:
    return {"skipped_rows": len(skipped), "skipped_examples": [str(e) for e in skipped[:5]]}


def _packed(items: list[dict], cutoff: int) -> tuple[list[dict], dict]:
    bins = pack_examples([Rendered(it["input_ids"], it["labels"]) for it in items], cutoff)
    packed = [{"input_ids": b.input_ids, "labels": b.labels, "position_ids": b.position_ids} for b in bins]
    return packed, _pack_info(len(items), len(packed))


def _pack_info(n_items: int, n_packed: int) -> dict:
    return {"packed_sequences": n_packed, "samples_per_sequence": round(n_items / max(n_packed, 1), 2)}


# ---- the cached path -------------------------------------------------------------------------------------------

def _key_parts(cfg, tok, stage, params) -> dict:
    from tuneforge.data.cache import FORMAT, RENDER_MODULES, code_digest, tokenizer_digest

    stage_modules = sorted({c.__module__ for c in type(stage).__mro__ if c.__module__.startswith("tuneforge.")})
    # settings that do not change the rendered items (streaming runs never use the cache) stay out of the key, so
    # entries written before those settings existed are still found
    data = cfg.data.model_dump(mode="json", exclude={"cache", "cache_dir", "num_proc", "streaming", "shuffle_buffer"})
    return {"format": FORMAT, "code": code_digest([*RENDER_MODULES, *stage_modules]),
            "tokenizer": tokenizer_digest(tok), "stage": stage.name, "params": params.model_dump(mode="json"),
            "data": data}


def _ensure_entry(cfg, tok, stage, params, cache, show_progress: bool) -> tuple[str, bool]:
    """Find the run's cache entry, or render the data into it → (its key, whether it was found).

    With data.cache off the key is made unique, so nothing earlier is reused (and the entry is removed once
    mapped)."""
    from tuneforge.data.cache import DIGESTS, files_digest, key_of
    from tuneforge.data.catalog import local_source_files

    started = time.monotonic()
    parts = _key_parts(cfg, tok, stage, params)
    d = cfg.data
    files = local_source_files(list(d.train) + list(d.eval), d.dataset_info)
    loaded = None
    # reading rows gets a bar when it takes seconds (about 30 MB of JSON), and always for hub data
    show_progress = show_progress and (files is None or sum(f.stat().st_size for f in files) > 32 << 20)
    if files is not None:
        parts["sources"] = files_digest(files, memo=cache.root / DIGESTS if d.cache else None)
    else:  # hub data: its content is known only once loaded
        loaded = _load(cfg, stage, show_progress)
        parts["sources"] = [fp for _, fp, _ in loaded[2]]
    key = key_of(parts) if cfg.data.cache else f"{key_of(parts)}-once-{time.time_ns()}"
    entry = cache.find(key)
    if entry is not None:
        _say_hit(entry, time.monotonic() - started)
        return key, True
    cache.clean_staging()
    staging = cache.staging(key)
    try:
        meta = _render_entry(cfg, tok, stage, params, loaded or _load(cfg, stage, show_progress), staging,
                             show_progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    meta["seconds"] = round(time.monotonic() - started, 2)
    meta["describe"] = _describe(cfg, stage)
    cache.commit(key, staging, meta)
    return key, False


def _load(cfg, stage, show_progress: bool):
    from tuneforge.utils.progress import progress_bar

    with progress_bar(None, "reading rows", show_progress) as advance:
        return load_train_records(cfg, prompts=stage.trains_on_prompts, progress=advance)


def _render_entry(cfg, tok, stage, params, loaded, folder: Path, show_progress: bool) -> dict:
    from tuneforge.data.arrow_items import ArrowItems, write_shard
    from tuneforge.train.render_shards import render_to_shards, resolve_num_proc

    records, val_records, summaries, skipped = loaded
    stage.check_records(records + val_records)
    d = cfg.data
    num_proc = resolve_num_proc(d.num_proc, len(records))
    n_train_rows = len(records)  # render_to_shards empties the list when it spills the rows for its workers
    shards, train_stats = render_to_shards(stage, records, tok, d, params, folder, "train", num_proc, show_progress)
    _check_kept(train_stats, d.cutoff_len)
    stats = {"train": train_stats, "val": None, **_skipped_stats(skipped), "num_proc": num_proc}
    if d.packing:
        shards, pack_info = _pack_shards(ArrowItems(shards), d.cutoff_len, folder, show_progress)
        stats.update(pack_info)
    val_shards = []
    if val_records:
        val = stage.prepare(val_records, tok, d, params)
        stats["val"] = val.stats
        if val.items:
            write_shard(folder / "val-00000.arrow", sorted(val.items, key=item_tokens))
            val_shards = ["val-00000.arrow"]
    _write_records(folder / "val_records.jsonl", val_records)
    return {"train_shards": [p.name for p in shards], "val_shards": val_shards, "stats": stats,
            "datasets": summaries, "n_train_rows": n_train_rows}


def _pack_shards(items, cutoff: int, folder: Path, show_progress: bool) -> tuple[list[Path], dict]:
    from tuneforge.data.packing import best_fit_decreasing
    from tuneforge.data.packing_arrow import pack_to_shards
    from tuneforge.utils.progress import progress_bar

    bins = best_fit_decreasing(items.lengths(), cutoff)
    with progress_bar(len(bins), "packing", show_progress and len(bins) > 10_000) as advance:
        packed = pack_to_shards(items, bins, folder, "packed", advance)
    for f in folder.glob("train-*.arrow"):
        f.unlink()
    return packed, _pack_info(len(items), len(bins))


def _write_records(path: Path, records: list[Record]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(dataclasses.asdict(rec), ensure_ascii=False, default=str) + "\n")


def _read_records(path: Path) -> list[Record]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [Record(**json.loads(line)) for line in f if line.strip()]


def _describe(cfg, stage) -> dict:
    """What a person reading `tuneforge data cache ls` needs to recognise an entry."""
    d = cfg.data
    names = [e.name or e.path for e in list(d.train) + list(d.eval)]
    return {"model": cfg.model.name, "template": cfg.model.template, "stage": stage.name, "datasets": names,
            "cutoff_len": d.cutoff_len, "packing": d.packing, "mask": d.mask}


def _say_hit(entry, seconds: float) -> None:
    if dist.is_main():
        console.print(f"[green]data[/green]: found in the data cache ({entry.key[:12]}, "
                      f"{entry.meta['stats']['train'].get('kept', '?')} training rows rendered earlier; "
                      f"{seconds:.1f} s) — nothing to render")


def _from_entry(entry, hit: bool) -> PreparedData:
    from tuneforge.data.arrow_items import ArrowItems

    meta = entry.meta
    val = entry.shards("val")
    stats = {**meta["stats"], "cache": {"key": entry.key, "path": str(entry.path), "hit": hit,
                                        "render_seconds": meta.get("seconds")}}
    return PreparedData(ArrowItems(entry.shards("train")), ArrowItems(val) if val else [], meta["n_train_rows"],
                        stats, [tuple(s) for s in meta["datasets"]], _read_records(entry.path / "val_records.jsonl"))


# ---- the streamed path (data.streaming) -------------------------------------------------------------------------

def _prepare_stream(cfg, tok, stage, params, show_progress: bool) -> PreparedData:
    from tuneforge.data.streaming import TokenStream

    d = cfg.data
    scan = dist.decide(lambda: _scan(cfg, stage, show_progress))
    shards = dist.world_size() * max(cfg.train.num_workers, 1)
    if scan.scanned and scan.documents < shards:
        raise DataError(f"{scan.documents} usable rows cannot feed {shards} stream shards (processes × "
                        f"data-loader workers)", hint="add rows, or lower train.num_workers or the processes")
    val_items, val_records, val_stats, summaries = _stream_validation(cfg, tok, stage, params)
    name = "+".join(s.name for s in scan.sources)
    datasets = [(name, scan.fingerprint, scan.documents), *summaries]
    # rows the scan skipped (data.on_error=skip) are skipped again in silence; any other skip is news
    stream = TokenStream(scan.sources, tok, d.cutoff_len, mix=d.mix, shuffle_buffer=d.shuffle_buffer, seed=d.seed,
                         report_late=not (scan.scanned and d.on_error == "skip"))
    block = {"block_tokens": d.cutoff_len, "shuffle_buffer": d.shuffle_buffer, "mix": d.mix}
    stats = {"train": {"rows": scan.documents if scan.scanned else None, "streaming": True},
             "val": val_stats, "skipped_rows": scan.skipped, "skipped_examples": scan.skipped_examples,
             "streaming": {**scan.stats(), **block, "streamed": stream.counts}}
    return PreparedData(stream, val_items, scan.documents if scan.scanned else None, stats, datasets, val_records)


def _scan(cfg, stage, show_progress: bool):
    """The check ahead (rank 0): every local row read once, converted and checked, none kept."""
    from tuneforge.data.streaming import scan_stream, stream_sources
    from tuneforge.utils.progress import progress_bar

    d = cfg.data
    sources = stream_sources(d.train, d.dataset_info)
    total = sum(f.stat().st_size for s in sources for f in s.files or ())
    # a bar when reading takes seconds (about 30 MB); hub data is not read ahead
    show = show_progress and all(s.files is not None for s in sources) and total > 32 << 20
    with progress_bar(total, "checking rows (bytes)", show) as advance:
        scan = scan_stream(sources, mix=d.mix, on_error=d.on_error, check=lambda rec: stage.check_records([rec]),
                           progress=advance)
    if dist.is_main():
        what = (f"{scan.documents:,} rows ({scan.bytes / 1e6:,.1f} MB) checked in {scan.seconds:.1f} s, none kept"
                if scan.scanned else "hub data: rows are checked as they stream (a bad one is skipped and counted)")
        console.print(f"[green]data[/green]: streaming; {what}")
    return scan


def _stream_validation(cfg, tok, stage, params) -> tuple[list, list, dict | None, list]:
    """data.eval of a streamed run, rendered in memory (validation sets are small) → (items sorted by length,
    records, render counts, dataset summaries)."""
    d = cfg.data
    if not d.eval:
        return [], [], None, []
    from tuneforge.data.catalog import load_datasets
    from tuneforge.data.run_records import dataset_specs

    ev = load_datasets(dataset_specs(d.eval), dataset_info=d.dataset_info, on_error=d.on_error, seed=d.seed)
    stage.check_records(ev.records)
    val = stage.prepare(ev.records, tok, d, params)
    return (sorted(val.items, key=item_tokens), ev.records, val.stats,
            [(f"eval:{ev.name}", ev.fingerprint, len(ev.records))])


def load_run_data(cfg, stage, params):
    """The model source, its tokenizer (with the chat template the stage needs) and the prepared data of a run."""
    from tuneforge.models.load import load_tokenizer
    from tuneforge.models.source import resolve_model

    src = resolve_model(cfg.model.name)
    tok = load_tokenizer(src, revision=cfg.model.revision)
    if stage.needs_chat_template:
        from tuneforge.data.templates import ensure_chat_template

        ensure_chat_template(tok, cfg.model.template)
    return src, tok, prepare_data(cfg, tok, stage, params)
