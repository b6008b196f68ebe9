"""Pre-training text streamed (data.streaming): rows read lazily, tokenized in batches and cut into fixed blocks of
cutoff_len tokens, in memory bounded by one batch of documents (and the shuffle buffer) whatever the corpus size.

The contract (tests/unit/data/test_streaming.py holds it):
- Rows. Local `.txt` (one document per non-blank line), `.jsonl` / `.json` in JSON lines, `.csv` and `.parquet`
  files and folders are read one row at a time, numbered as `data.sources` numbers them (a `.json` array is refused:
  parsing one needs the whole file); a hub dataset streams through `datasets.load_dataset(..., streaming=True)`.
  Rows go through the in-memory path's format conversion (`formats.resolve_format` on the first usable row,
  `to_record` per row), so a document is the text stage pt trains on: a row's text, or a conversation's contents
  joined by newlines. Several datasets follow data.mix (concat, or interleave: round-robin over rows); a dataset's
  `max_samples` keeps its first N usable rows.
- Checked ahead (`scan_stream`). Before any weight loads, local rows are read once and converted, keeping nothing:
  a bad row stops the run with file:line (data.on_error=raise) or is skipped and counted (skip), as in memory, and
  the scan yields the same dataset fingerprint as the in-memory path. Hub data cannot be scanned ahead.
- Never crashes mid-training on a row. A row that fails only while streaming (a file edited since the scan, a
  hub row) is skipped, counted (`TokenStream.counts`) and reported; a file that becomes unreadable ends that file
  for the pass, reported the same way.
- Tokens and blocks. Each document is tokenized as pt renders it (the tokenizer's special tokens, then eos), in
  batches; the documents are concatenated in stream order and cut into blocks of exactly cutoff_len tokens; a
  document that does not fit continues in the next block. Position ids restart at every document and at every
  block start, so no token attends across a document boundary (transformers derives the block-diagonal mask from
  them, as for packed pt); labels are the ids, except the first token of every piece, which nothing before it in
  its block predicts (packing's rule).
- Difference from in-memory pt: there every document is split at multiples of cutoff_len from its own start and
  the pieces are packed by best fit, reordered, into sequences of at most cutoff_len; the stream keeps file order
  and splits where a block ends. Same tokens in the same order; a one-token tail that render_text drops is kept
  (as an untrained piece).
- Endless. The stream repeats the data (pass 1, 2, ...); the run's length is train.max_steps. The tail of a pass
  continues into the next, so every block is full.
- Shards. Rows are dealt round-robin over `n_shards` (processes × data-loader workers) by their index in the mixed
  stream, bad rows included: shard s converts and tokenizes only rows s, s + n, ... (nobody tokenizes a row twice)
  and never parses another shard's JSON.
- Shuffle. data.shuffle_buffer > 0 shuffles blocks within a window of that many blocks, seeded by data.seed and
  the shard, held as int32 arrays (4 bytes a token); 0 keeps the order of the files. Deterministic either way, so a
  resumed run that skips the blocks it consumed (the HF Trainer iterates past them) sees the same blocks.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from tuneforge.data.catalog import _plan as plan_dataset
from tuneforge.data.catalog import fingerprint_line
from tuneforge.data.formats import FormatSpec, resolve_format, to_record
from tuneforge.data.records import Record
from tuneforge.data.render import IGNORE
from tuneforge.data.sources import (RawRow, is_hub_id, json_line_row, list_files, read_csv, read_parquet,
                                    text_lines)
from tuneforge.utils.console import console
from tuneforge.utils.errors import DataError
from tuneforge.utils.modelscope import is_modelscope

STREAMED_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".parquet")
BATCH_DOCUMENTS = 256  # documents tokenized in one call ...
BATCH_CHARACTERS = 1 << 20  # ... or fewer, once they hold this many characters
_REPORTED_LATE = 5  # late problems printed per shard (all are counted)


@dataclass
class StreamSource:
    """One dataset of data.train as the stream reads it."""

    name: str
    plan: object  # tuneforge.data.catalog's plan: location, format, columns, tags, split, subset, folder
    files: list[Path] | None  # None: a hub dataset
    max_samples: int | None = None  # the dataset entry's: its first N usable rows
    max_rows: int | None = None  # rows (bad ones included) a pass reads; set by the scan from max_samples
    spec: FormatSpec | None = None  # how its rows read, from its first usable row


@dataclass
class LazyRow:
    """A row whose JSON is parsed only by the shard that uses it (`raw`: a JSON line, a mapping or a RawRow)."""

    file: str
    line: int | None
    raw: object

    def parse(self) -> RawRow:
        if isinstance(self.raw, RawRow):
            return self.raw
        if isinstance(self.raw, dict):
            return RawRow(self.raw, self.file, self.line)
        return json_line_row(self.raw, self.file, self.line)


# ---- sources -----------------------------------------------------------------------------------------------

def stream_sources(specs, dataset_info=None) -> list[StreamSource]:
    """The config's data.train entries → sources, refusing what cannot be streamed (before anything is read)."""
    sources = []
    for spec in specs:
        plan = plan_dataset(spec, dataset_info)
        if plan.num_samples is not None:
            raise DataError(f"dataset '{plan.name}' sets num_samples in its registry entry, which resamples all of "
                            f"its rows; a stream never holds them", field="num_samples",
                            hint="remove num_samples from the entry, or set max_samples (its first N rows)")
        if is_modelscope(plan.location):
            raise DataError(f"{plan.location}: ModelScope datasets are not streamed", file=plan.location,
                            hint="download it and point path: at its files")
        files = None if is_hub_id(plan.location) else list_files(plan.location)
        for f in files or ():
            if f.suffix.lower() not in STREAMED_SUFFIXES:
                raise DataError(f"{f.suffix} files are not streamed", file=str(f),
                                hint=f"streamed: {', '.join(STREAMED_SUFFIXES)}")
        sources.append(StreamSource(plan.name, plan, files, spec.max_samples))
    return sources


def _refuse_json_array(path: Path) -> None:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        raise DataError("a JSON array cannot be streamed: parsing it needs the whole file", file=str(path), line=1,
                        hint="write one object per line (.jsonl), e.g. jq -c '.[]' in.json > out.jsonl")


def _file_rows(path: Path, progress: Callable | None = None) -> Iterator[LazyRow]:
    file, suffix = str(path), path.suffix.lower()
    if suffix == ".txt":
        yield from (LazyRow(file, n, {"text": line}) for n, line in text_lines(path, progress) if line.strip())
        return
    if suffix in (".jsonl", ".json"):
        if suffix == ".json":
            _refuse_json_array(path)
        yield from (LazyRow(file, n, line) for n, line in text_lines(path, progress) if line.strip())
        return
    reader = read_csv if suffix == ".csv" else read_parquet  # both already read lazily
    yield from (LazyRow(row.file, row.line, row) for row in reader(path))
    if progress:
        progress(path.stat().st_size)


def _hub_rows(plan) -> Iterator[LazyRow]:
    """Rows of a hub dataset, streamed by `datasets` (never downloaded whole); `line` is the 1-based row number."""
    import datasets

    where = f"hub:{plan.location}" + (f"/{plan.subset}" if plan.subset else "") + f"[{plan.split}]"
    try:
        rows = datasets.load_dataset(plan.location, name=plan.subset, split=plan.split, data_dir=plan.folder,
                                     streaming=True)
    except Exception as e:  # offline, unknown id / subset / split: datasets raises many types
        raise DataError(f"cannot stream hub dataset '{plan.location}': {type(e).__name__}: {e}", file=where,
                        hint="check the id, subset and split and that the hub is reachable (HF_HUB_OFFLINE), "
                             "or download it and point path: at local files") from None
    for i, row in enumerate(rows, start=1):
        yield LazyRow(where, i, dict(row))


def source_rows(src: StreamSource, progress: Callable | None = None, guard: Callable | None = None
                ) -> Iterator[LazyRow]:
    """One pass over a source's rows (at most `max_rows`). `guard(rows)` wraps each file's rows (a hub dataset's
    as a whole): the stream's way to end an unreadable file without ending the pass."""
    guard = guard or (lambda rows: rows)
    if src.files is None:
        rows = guard(_hub_rows(src.plan))
    else:
        rows = (r for f in src.files for r in guard(_file_rows(f, progress)))
    return rows if src.max_rows is None else islice(rows, src.max_rows)


def mixed_rows(iterators: list[Iterator], mix: str, done: set | None = None) -> Iterator[tuple[int, object]]:
    """(source index, row) in data.mix order: concat, or interleave (round-robin; an exhausted source drops out,
    as `mixing.mix` does). A source whose index the consumer adds to `done` is read no further."""
    done = done if done is not None else set()
    if mix == "concat":
        for k, it in enumerate(iterators):
            for row in it:
                if k in done:
                    break
                yield k, row
        return
    active = list(enumerate(iterators))
    while active:
        still = []
        for k, it in active:
            row = next(it, None) if k not in done else None
            if row is not None:
                yield k, row
                still.append((k, it))
        active = still


def document_text(rec: Record) -> str:
    """What pt trains on: the row's text, or a conversation's contents joined by newlines (as render_text_records)."""
    return rec.text if rec.text is not None else "\n".join(m["content"] for m in rec.messages)


def _record(src: StreamSource, row: RawRow) -> Record:
    if row.error is not None:
        raise row.error
    return to_record(row.data, src.spec, file=row.file, line=row.line)


def _resolve_spec(src: StreamSource, row: RawRow) -> None:
    """The dataset's format from its first parseable row; a dataset-level problem, never skipped (as in memory)."""
    p = src.plan
    try:
        src.spec = resolve_format(p.format, row.data, columns=p.columns, tags=p.tags, ranking=p.ranking, kto=p.kto)
    except DataError as e:
        reason = e.message.split(": ", 1)[1] if (e.file or e.field) and ": " in e.message else e.message
        raise DataError(reason, file=row.file, line=row.line, field=e.field, hint=e.hint) from None


# ---- the check ahead --------------------------------------------------------------------------------------

@dataclass
class StreamScan:
    """What reading the sources ahead found (counts a user should see), and the sources ready to stream."""

    sources: list[StreamSource]
    scanned: bool  # False: a hub dataset is among them, so nothing was read ahead
    rows: int = 0  # rows read, bad ones included
    documents: int = 0  # usable rows: one document each
    characters: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    fingerprint: str = ""
    bytes: int = 0
    seconds: float = 0.0

    def stats(self) -> dict:
        keys = ("scanned", "rows", "documents", "characters", "skipped", "bytes", "seconds")
        return {k: getattr(self, k) for k in keys}


def scan_stream(sources: list[StreamSource], *, mix: str = "concat", on_error: str = "raise",
                check: Callable[[Record], None] | None = None, progress: Callable | None = None) -> StreamScan:
    """Read every local row once and convert it, keeping nothing: bad rows raise (file:line) or are counted, each
    dataset's format is resolved, a dataset's max_samples becomes the rows a pass reads, and the fingerprint is the
    in-memory path's (`catalog.fingerprint` of the mixed records). `check(record)` refuses rows of a kind the stage
    cannot train on (never skipped). With a hub source only the formats are resolved (from each first row)."""
    started = time.monotonic()
    if any(s.files is None for s in sources):
        for src in sources:
            _peek_spec(src)
        names = json.dumps([(s.plan.location, s.plan.split, s.plan.subset) for s in sources])
        return StreamScan(sources, False, fingerprint="stream:" + hashlib.sha256(names.encode()).hexdigest())
    scan = StreamScan(sources, True, bytes=sum(f.stat().st_size for s in sources for f in s.files))
    digest = hashlib.sha256()
    used, read, done = [0] * len(sources), [0] * len(sources), set()
    for k, lazy in mixed_rows([source_rows(s, progress) for s in sources], mix, done):
        src, row = sources[k], lazy.parse()
        read[k] += 1
        scan.rows += 1
        if src.spec is None and row.error is None:
            _resolve_spec(src, row)
        try:
            rec = _record(src, row)
        except DataError as e:
            if on_error == "raise":
                raise
            scan.skipped += 1
            if len(scan.skipped_examples) < 5:
                scan.skipped_examples.append(str(e))
            continue
        if check:
            check(rec)
        used[k] += 1
        scan.documents += 1
        scan.characters += len(document_text(rec))
        digest.update(fingerprint_line(rec))
        if src.max_samples is not None and used[k] >= src.max_samples:
            src.max_rows = read[k]
            done.add(k)
    for src, n in zip(sources, used):
        if not n:
            why = f": {scan.skipped} rows skipped, first: {scan.skipped_examples[0]}" if scan.skipped else ""
            raise DataError(f"no usable rows in {src.plan.location}{why}", hint="check the file or the format")
    scan.fingerprint = digest.hexdigest()
    scan.seconds = round(time.monotonic() - started, 2)
    return scan


def _peek_spec(src: StreamSource) -> None:
    for lazy in source_rows(src):
        row = lazy.parse()
        if row.error is None:
            _resolve_spec(src, row)
            return
    raise DataError(f"no usable rows in {src.plan.location}", hint="check the dataset id, subset and split")


# ---- the stream -------------------------------------------------------------------------------------------

class _BlockBuilder:
    """Documents' token ids in, full blocks out: (ids as int32, the offsets where a piece starts)."""

    def __init__(self, cutoff: int):
        self.cutoff = cutoff
        self.ids, self.starts = array("i"), []

    def add(self, doc: list[int]) -> Iterator[tuple[array, list[int]]]:
        i = 0
        while i < len(doc):
            room = self.cutoff - len(self.ids)
            self.starts.append(len(self.ids))
            self.ids.extend(doc[i:i + room])
            i += room
            if len(self.ids) == self.cutoff:
                yield self.ids, self.starts
                self.ids, self.starts = array("i"), []

    def tail(self) -> tuple[array, list[int]] | None:
        return (self.ids, self.starts) if len(self.ids) else None


def block_item(ids: array, starts: list[int]) -> dict:
    """A block as the training collator takes it: input_ids, labels (the first token of every piece masked) and
    position ids restarting at every piece."""
    input_ids = ids.tolist()
    labels, positions = list(input_ids), []
    bounds = [*starts, len(input_ids)]
    for a, b in zip(bounds, bounds[1:]):
        labels[a] = IGNORE
        positions.extend(range(b - a))
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def _batches(docs: Iterable[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if len(batch) >= max_docs or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _shuffled(blocks: Iterable, size: int, rng: random.Random) -> Iterator:
    """Blocks in a seeded order within a window of `size`: each new block takes the place of a random one, which
    is yielded."""
    window: list = []
    for block in blocks:
        if len(window) < size:
            window.append(block)
            continue
        j = rng.randrange(size)
        yield window[j]
        window[j] = block
    rng.shuffle(window)
    yield from window


class TokenStream:
    """Endless fixed-length token blocks of the sources for one shard (see the module docstring).

    `blocks(shard, n_shards)` starts a fresh, deterministic iteration; `counts` adds up what this process read
    (documents and passes run up to one tokenizing batch ahead of the blocks handed out; rows skipped while
    streaming: `late_skipped`, the first few in `late_examples`), in the process that iterates (data-loader
    workers keep their own). `report_late`: print rows skipped while streaming (off when the scan already counted
    and reported them)."""

    def __init__(self, sources: list[StreamSource], tok, cutoff: int, *, mix: str = "concat",
                 shuffle_buffer: int = 0, seed: int = 42, report_late: bool = True):
        self.sources, self.tok, self.cutoff, self.mix = sources, tok, cutoff, mix
        self.shuffle_buffer, self.seed, self.report_late = shuffle_buffer, seed, report_late
        self.counts = {"documents": 0, "blocks": 0, "passes": 0, "late_skipped": 0, "late_examples": []}

    def blocks(self, shard: int = 0, n_shards: int = 1, passes: int | None = None) -> Iterator[dict]:
        """Block items of shard `shard` of `n_shards`; `passes`: stop after that many passes over the data and
        yield the last, shorter block too (None: endless, every block full)."""
        if not 0 <= shard < n_shards:
            raise ValueError(f"shard {shard} is not in [0, {n_shards})")
        built = self._built(shard, n_shards, passes)
        if self.shuffle_buffer > 1:
            built = _shuffled(built, self.shuffle_buffer, random.Random(f"{self.seed}:{shard}:{n_shards}"))
        for ids, starts in built:
            self.counts["blocks"] += 1
            yield block_item(ids, starts)

    def _built(self, shard: int, n_shards: int, passes: int | None) -> Iterator[tuple[array, list[int]]]:
        builder, eos = _BlockBuilder(self.cutoff), self.tok.eos_token_id
        for batch in _batches(self._documents(shard, n_shards, passes), BATCH_DOCUMENTS, BATCH_CHARACTERS):
            for ids in self.tok(batch, add_special_tokens=True)["input_ids"]:
                yield from builder.add(list(ids) + [eos] if eos is not None else list(ids))
        tail = builder.tail()
        if tail is not None:
            yield tail

    def _documents(self, shard: int, n_shards: int, passes: int | None) -> Iterator[str]:
        done = 0
        while passes is None or done < passes:
            got = 0
            rows = mixed_rows([source_rows(s, guard=self._guarded) for s in self.sources], self.mix)
            for i, (k, lazy) in enumerate(rows):
                if i % n_shards != shard:
                    continue
                doc = self._document(self.sources[k], lazy)
                if doc is not None:
                    got += 1
                    self.counts["documents"] += 1
                    yield doc
            done += 1
            self.counts["passes"] += 1
            if not got:
                raise DataError(f"shard {shard} of {n_shards} (processes × data-loader workers) got no usable row "
                                f"in a whole pass over the data", hint="give more rows than processes × "
                                                                      "train.num_workers, or fewer processes")

    def _document(self, src: StreamSource, lazy: LazyRow) -> str | None:
        try:
            row = lazy.parse()
            if src.spec is None and row.error is None:
                _resolve_spec(src, row)
            return document_text(_record(src, row))
        except DataError as e:
            self._late(e)
            return None

    def _guarded(self, rows: Iterator[LazyRow]) -> Iterator[LazyRow]:
        """A file's rows; one that cannot be read any more (edited, removed) ends there for this pass, reported."""
        try:
            yield from rows
        except (DataError, OSError) as e:
            self._late(e if isinstance(e, DataError) else DataError(str(e)))

    def _late(self, err: DataError) -> None:
        self.counts["late_skipped"] += 1
        if len(self.counts["late_examples"]) < _REPORTED_LATE:
            self.counts["late_examples"].append(str(err))
            if self.report_late:
                console.print(f"[yellow]streaming[/yellow]: skipped while training: {err}")
