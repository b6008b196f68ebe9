"""The rendered-data cache: a run's prepared data is stored once, keyed by everything it depends on, and found again.

An entry is a folder `KEY/` under the cache root (`data.cache_dir`, default `$TUNEFORGE_HOME/cache/data`) holding
the train and validation items as Arrow shards and `meta.json` (counts, dataset fingerprints, what the key was made
of). The key hashes the data (the bytes of local source files, or the records' fingerprint), the tokenizer (its
vocabulary, merges, special tokens and chat template), the stage and its parameters, every data setting that
changes rendering (cutoff, mask, packing, split, mixing, seed ...) and the source code of the modules that render,
so editing a renderer or a template invalidates old entries instead of reusing them. A rerun, a resume, a sweep cell
or another method on the same data finds the entry and renders nothing.

Entries are written in a staging folder and renamed into place, so a reader never sees half an entry and two
processes that render the same key at once both end with one complete entry.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tuneforge.utils.io import atomic_write_json
from tuneforge.utils.paths import tuneforge_home

FORMAT = 1  # bump when the layout of an entry changes
META = "meta.json"
DIGESTS = ".file_digests.json"  # files_digest's memo, in the cache root
STAGING = ".staging"
# The modules whose code decides what a rendered item holds; their source is part of every key.
RENDER_MODULES = ("tuneforge.data.records", "tuneforge.data.sources", "tuneforge.data.formats",
                  "tuneforge.data.catalog", "tuneforge.data.mixing", "tuneforge.data.run_records",
                  "tuneforge.data.templates", "tuneforge.data.render", "tuneforge.data.token_spans",
                  "tuneforge.data.packing", "tuneforge.data.packing_arrow", "tuneforge.data.arrow_items")


def cache_root(cache_dir: str | None = None) -> Path:
    """`cache_dir` when given, else $TUNEFORGE_HOME/cache/data."""
    return Path(cache_dir).expanduser() if cache_dir else tuneforge_home() / "cache" / "data"


def code_digest(modules: Iterable[str]) -> str:
    """sha256 of the source files of `modules` (module names or .py paths)."""
    h = hashlib.sha256()
    for name in modules:
        path = name if name.endswith(".py") else importlib.util.find_spec(name).origin
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def tokenizer_digest(tok) -> str:
    """sha256 of what a tokenizer turns text into ids with: its serialized model (vocabulary, merges, normalizer,
    pre-tokenizer), added and special tokens, and the chat template."""
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
             .encode())
    special = {k: str(v) for k, v in sorted((tok.special_tokens_map or {}).items())}
    h.update(json.dumps([type(tok).__name__, special, tok.eos_token_id, tok.pad_token_id, tok.bos_token_id,
                         getattr(tok, "chat_template", None)], default=str).encode())
    return h.hexdigest()


def files_digest(paths: Iterable[Path], memo: Path | None = None) -> str:
    """blake2b of the files' bytes (and their count and sizes), read in 4 MiB blocks.

    `memo`: a JSON file remembering the digest of each list of files with their size, modification and change
    times (ns) and inode; while none of those moved the bytes are not read again (a cache hit on 900 MB of data
    skips 2 s of hashing). Any write to a file changes its change time, so an edit is never mistaken for a hit."""
    paths = list(paths)
    stamp = _stamp(paths) if memo is not None else None
    known = _read_memo(memo) if memo is not None else {}
    if stamp is not None and stamp in known:
        return known[stamp]
    h = hashlib.blake2b(digest_size=32)
    for p in paths:
        h.update(f"{p.stat().st_size}\n".encode())
        with open(p, "rb") as f:
            while block := f.read(4 << 20):
                h.update(block)
    digest = h.hexdigest()
    if memo is not None and _stamp(paths) == stamp:  # unchanged while it was read
        known[stamp] = digest
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(memo, dict(list(known.items())[-MEMO_SIZE:]))
        except OSError:  # a read-only cache folder: hash again next time
            pass
    return digest


MEMO_SIZE = 256  # file lists remembered by files_digest's memo


def _stamp(paths: list[Path]) -> str:
    parts = []
    for p in paths:
        st = p.stat()
        parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _read_memo(memo: Path) -> dict:
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def key_of(parts: dict) -> str:
    """The entry name for a dict of key parts (canonical JSON, sha256, 24 hex digits)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class CacheEntry:
    key: str
    path: Path
    meta: dict

    def shards(self, split: str) -> list[Path]:
        return [self.path / name for name in self.meta.get(f"{split}_shards", [])]

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    @property
    def last_used(self) -> float:
        return (self.path / META).stat().st_mtime


class DataCache:
    """The entries under one cache root."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def find(self, key: str, *, touch: bool = True) -> CacheEntry | None:
        """The complete entry of `key` (its use time refreshed unless `touch` is off), or None."""
        meta_file = self.root / key / META
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        entry = CacheEntry(key, self.root / key, meta)
        if meta.get("format") != FORMAT or not all(p.is_file() for s in ("train", "val") for p in entry.shards(s)):
            return None
        if touch:
            os.utime(meta_file)
        return entry

    def staging(self, key: str) -> Path:
        """A fresh folder to write an entry of `key` in, before `commit` moves it into place."""
        folder = self.root / STAGING / f"{key}-{os.getpid()}-{time.time_ns()}"
        folder.mkdir(parents=True)
        return folder

    def commit(self, key: str, staging: Path, meta: dict) -> CacheEntry:
        """Move a written staging folder into place as the entry of `key` (another process's entry, if one landed
        first, is kept and this one dropped)."""
        atomic_write_json(staging / META, {**meta, "format": FORMAT, "created": time.time()})
        target = self.root / key
        if target.exists() and self.find(key, touch=False) is None:  # a broken or older-format entry: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:  # the key exists: someone else rendered it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
        entry = self.find(key)
        if entry is None:
            raise OSError(f"the data cache entry {target} is incomplete; remove it with `tuneforge data cache rm "
                          f"{key}`")
        return entry

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, most recently used first."""
        found = [self.find(p.name, touch=False) for p in self.root.iterdir() if p.is_dir() and p.name != STAGING] \
            if self.root.is_dir() else []
        return sorted((e for e in found if e), key=lambda e: -e.last_used)

    def remove(self, key: str) -> int:
        """Delete the entry of `key` (a unique prefix is enough); returns the bytes freed."""
        entry = self.match(key)
        size = entry.bytes
        shutil.rmtree(entry.path)
        return size

    def match(self, prefix: str) -> CacheEntry:
        hits = [e for e in self.entries() if e.key.startswith(prefix)]
        if len(hits) != 1:
            known = ", ".join(e.key[:12] for e in self.entries()) or "none"
            raise KeyError(f"{'no' if not hits else 'more than one'} cache entry starts with '{prefix}' "
                           f"(entries: {known})")
        return hits[0]

    def clean_staging(self, older_than_s: float = 3600) -> None:
        """Drop staging folders left by processes that died while writing (older than an hour)."""
        staging = self.root / STAGING
        if not staging.is_dir():
            return
        for folder in staging.iterdir():
            if time.time() - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
