"""Dataset registry (LLaMA-Factory `dataset_info.json` compatible), dataset loading, mixing and content fingerprints.

A dataset is named in a registry (`DatasetEntry.name`, the config's class; `DatasetSpec` is the same class) or given
directly (`DatasetEntry.path`: a local file or folder, or a hub id). Registry file names are resolved relative to
the registry's folder. The registry is the `dataset_info` argument (a file or its folder), else $TUNEFORGE_DATASET_INFO.

Registry keys: file_name, hf_hub_url, ms_hub_url, om_hub_url, script_url, cloud_file_name, formatting
(alpaca|sharegpt, plus openai|text), ranking, subset, split, folder, num_samples, columns, tags. Only local files
and hf_hub_url are loaded; the other sources give a DataError saying so.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from tuneforge.config.schema import DatasetEntry

from tuneforge.data.formats import COLUMN_KEYS, TAG_KEYS, FormatSpec, resolve_format, to_record
from tuneforge.data.mixing import apply_ratio, mix as mix_groups, sample_to, split_train_val
from tuneforge.data.records import Record
from tuneforge.data.sources import RawRow, is_hub_id, list_files, read_rows
from tuneforge.utils.errors import DataError
from tuneforge.utils.io import atomic_write_json

__all__ = ["DatasetEntry", "DatasetSpec", "dataset_spec", "LoadResult", "load_dataset", "load_datasets",
           "split_train_val", "fingerprint", "register_dataset", "read_dataset_info"]

ENTRY_KEYS = ("file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "formatting",
              "ranking", "subset", "split", "folder", "num_samples", "columns", "tags")
SOURCE_KEYS = ("file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
FORMATTINGS = ("alpaca", "sharegpt", "openai", "text")
ENV_VAR = "TUNEFORGE_DATASET_INFO"


# One dataset-spec class for config and data: a config's data.train / data.eval entry (registered `name` or
# `path`, format, columns, tags, ratio, max_samples, split). The old name stays for existing callers.
DatasetSpec = DatasetEntry


def dataset_spec(**fields) -> DatasetEntry:
    """A DatasetEntry from keyword fields; a bad field is a DataError naming it (with a did-you-mean)."""
    known = list(DatasetEntry.model_fields)
    bad = [k for k in fields if k not in known]
    if bad:
        close = difflib.get_close_matches(bad[0], known, n=1)
        raise DataError(f"unknown dataset key '{bad[0]}'", field=bad[0],
                        hint=f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(sorted(known))}")
    try:
        return DatasetEntry(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or None
        raise DataError(first["msg"].removeprefix("Value error, "), field=where,
                        hint="a dataset needs exactly one of name (registered) or path (file, folder, hub id)"
                        if where is None else None) from None


@dataclass
class LoadResult:
    """Loaded records, the bad rows that were skipped (on_error="skip"), a display name and the content fingerprint."""

    records: list[Record]
    skipped: list[DataError]
    name: str
    fingerprint: str
    format: str = ""  # resolved format, e.g. "sharegpt+pairwise"; datasets mixed together are joined with ","


def fingerprint(records: Iterable[Record]) -> str:
    """Order-sensitive sha256 hex digest of the records' content (`Record.normalized()`, canonical JSON per line).

    File names, line numbers and extra columns do not count, so the same conversations in another file or format
    (e.g. alpaca vs OpenAI messages) hash the same; reordering rows changes it (order matters for reproducibility).
    """
    h = hashlib.sha256()
    for r in records:
        h.update(fingerprint_line(r))
    return h.hexdigest()


def fingerprint_line(record: Record) -> bytes:
    """What `fingerprint` hashes of one record (canonical JSON and a newline), for callers that hash as they read."""
    return json.dumps(record.normalized(), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def info_path(dataset_info: str | Path | None) -> Path | None:
    given = dataset_info if dataset_info is not None else os.environ.get(ENV_VAR) or None
    if given is None:
        return None
    p = Path(given).expanduser()
    return p / "dataset_info.json" if p.is_dir() else p


def read_dataset_info(dataset_info: str | Path) -> dict:
    """Read a registry file (or `dataset_info.json` in a folder) as a dict of name → entry."""
    path = info_path(dataset_info)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("dataset registry not found", file=str(path),
                        hint="pass the path of a dataset_info.json (or its folder)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg}", file=str(path), line=e.lineno) from None
    if not isinstance(info, dict):
        raise DataError("a dataset registry must be a JSON object of name → entry", file=str(path))
    return info


def _check_entry(name: str, entry, where: str) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"entry '{name}' must be an object", file=where, field=name)
    for key in entry:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(key, ENTRY_KEYS, n=1)
            raise DataError(f"unknown key '{key}' in entry '{name}'", file=where, field=f"{name}.{key}",
                            hint=f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(ENTRY_KEYS)}")
    if not any(k in entry for k in SOURCE_KEYS):
        raise DataError(f"entry '{name}' names no data", file=where, field=name,
                        hint="add file_name (local file or folder) or hf_hub_url")
    if entry.get("formatting", "alpaca") not in FORMATTINGS:
        raise DataError(f"unknown formatting '{entry['formatting']}'", file=where, field=f"{name}.formatting",
                        hint=f"choose one of {', '.join(FORMATTINGS)}")
    for key, allowed in (("columns", COLUMN_KEYS), ("tags", TAG_KEYS)):
        bad = [k for k in entry.get(key) or {} if k not in allowed]
        if bad:
            raise DataError(f"unknown {key} key '{bad[0]}' in entry '{name}'", file=where, field=f"{name}.{key}",
                            hint=f"allowed: {', '.join(allowed)}")


def register_dataset(name: str, entry: dict, dataset_info: str | Path, *, overwrite: bool = False) -> Path:
    """Add `entry` under `name` to a registry file (created if missing) and return the file's path.

    An existing name is an error unless `overwrite=True`. The file is rewritten atomically.
    """
    path = info_path(dataset_info)
    info = read_dataset_info(path) if path.exists() else {}
    _check_entry(name, entry, str(path))
    if name in info and not overwrite:
        raise DataError(f"dataset '{name}' is already registered", file=str(path), field=name,
                        hint="choose another name or pass overwrite=True")
    info[name] = entry
    return atomic_write_json(path, info)  # readers never see a half-written registry


@dataclass
class _Plan:
    """Where and how to read one dataset after registry lookup."""

    location: str
    name: str
    format: str = "auto"
    columns: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    ranking: bool | None = None
    kto: bool | None = None
    split: str = "train"
    subset: str | None = None
    folder: str | None = None
    num_samples: int | None = None


def _plan(spec: DatasetEntry, dataset_info: str | Path | None) -> _Plan:
    if bool(spec.name) == bool(spec.path):
        raise DataError("a dataset needs exactly one of name (registered) or path (file, folder, hub id)",
                        field="name" if spec.name else "path")
    if spec.path:
        return _Plan(str(spec.path), _display_name(str(spec.path)), spec.format, dict(spec.columns or {}),
                     dict(spec.tags or {}), split=spec.split)
    return _plan_from_registry(spec, dataset_info)


def _display_name(path: str) -> str:
    p = Path(path)
    return p.stem if p.suffix else (p.name or path)


def _plan_from_registry(spec: DatasetEntry, dataset_info: str | Path | None) -> _Plan:
    path = info_path(dataset_info)
    if path is None:
        raise DataError(f"dataset name '{spec.name}' needs a registry", field="name",
                        hint=f"pass dataset_info (a dataset_info.json or its folder), set ${ENV_VAR}, or use path:")
    info, where = read_dataset_info(path), str(path)
    if spec.name not in info:
        close = difflib.get_close_matches(spec.name, list(info), n=3)
        raise DataError(f"dataset '{spec.name}' is not registered", file=where, field="name",
                        hint=f"did you mean {', '.join(close)}?" if close else "register it or use path:")
    entry = info[spec.name]
    _check_entry(spec.name, entry, where)
    if "file_name" in entry:
        location = str(path.parent / entry["file_name"])
    elif "hf_hub_url" in entry:
        location = entry["hf_hub_url"]
    elif "script_url" in entry and (path.parent / entry["script_url"]).is_dir():
        location = str(path.parent / entry["script_url"])  # a local folder of data files (scripts are not run)
    else:
        kind = next(k for k in SOURCE_KEYS if k in entry)
        raise DataError(f"dataset '{spec.name}' is only available via {kind}, which tuneforge cannot load",
                        file=where, field=f"{spec.name}.{kind}",
                        hint="download it and point file_name (or path:) at the local file, or add hf_hub_url")
    columns = {**(entry.get("columns") or {}), **(spec.columns or {})}
    media = [k for k in ("images", "videos", "audios") if k in columns]
    if media:
        raise DataError(f"dataset '{spec.name}' is multimodal ({', '.join(media)}), which tuneforge does not support",
                        file=where, field=f"{spec.name}.columns", hint="tuneforge trains text-only models")
    formatting = entry.get("formatting", "alpaca")
    # alpaca is LLaMA-Factory's default and also covers its pre-training entries, so detection tells alpaca from text
    fmt = spec.format if spec.format != "auto" else ("auto" if formatting == "alpaca" else formatting)
    return _Plan(location, spec.name, fmt, columns, {**(entry.get("tags") or {}), **(spec.tags or {})},
                 ranking=entry["ranking"] if "ranking" in entry else None,
                 kto=True if "kto_tag" in columns else None,
                 split=spec.split if spec.split != "train" else entry.get("split", "train"),
                 subset=entry.get("subset"), folder=entry.get("folder"), num_samples=entry.get("num_samples"))


def _reason(e: DataError) -> str:
    """The error message without its "file:line field" prefix (for summaries)."""
    msg = e.message
    return msg.split(": ", 1)[1] if (e.file or e.field) and ": " in msg else msg


def _rows_to_records(rows: Iterator[RawRow], plan: _Plan, on_error: str, limit: int | None,
                     skipped: list[DataError], prompts: bool = False,
                     progress=None) -> tuple[list[Record], FormatSpec | None]:
    records: list[Record] = []
    spec: FormatSpec | None = None
    for n, row in enumerate(rows, 1):
        if progress and n % 1000 == 0:
            progress(1000)
        if limit is not None and len(records) >= limit:
            break  # stop reading early: rows past max_samples are never used
        try:
            if row.error is not None:
                raise row.error
            if spec is None:
                try:
                    spec = resolve_format(plan.format, row.data, columns=plan.columns, tags=plan.tags,
                                          ranking=plan.ranking, kto=plan.kto, prompts=prompts)
                except DataError as e:  # dataset-level: never skippable, but say which file it came from
                    raise DataError(_reason(e), file=row.file, line=row.line, field=e.field, hint=e.hint) from None
            records.append(to_record(row.data, spec, file=row.file, line=row.line))
        except DataError as e:
            if on_error == "raise" or spec is None and row.error is None:
                raise
            skipped.append(e)
    return records, spec


def load_dataset(spec: DatasetEntry | dict, *, dataset_info: str | Path | None = None, on_error: str = "raise",
                 seed: int = 42, prompts: bool = False, progress=None) -> LoadResult:
    """Load one dataset into Records (`progress(n)` is called as rows are read).

    on_error="raise": the first bad row raises DataError (file, line, field); "skip": bad rows are collected in
    `.skipped`. A registry `num_samples` resamples with `seed`; `max_samples` keeps the first N usable rows. A dataset
    with no usable rows raises DataError.
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got '{on_error}'", field="on_error")
    spec = _as_spec(spec)
    if spec.max_samples is not None and spec.max_samples < 1:
        raise DataError(f"max_samples must be >= 1, got {spec.max_samples}", field="max_samples")
    plan = _plan(spec, dataset_info)
    skipped: list[DataError] = []
    rows = read_rows(plan.location, split=plan.split, subset=plan.subset, folder=plan.folder)
    limit = spec.max_samples if plan.num_samples is None else None
    records, fmt = _rows_to_records(rows, plan, on_error, limit, skipped, prompts, progress)
    if plan.num_samples is not None:
        records = sample_to(records, plan.num_samples, seed)
    if spec.max_samples is not None:
        records = records[: spec.max_samples]
    if not records:
        raise _empty_error(plan.location, skipped)
    return LoadResult(records, skipped, plan.name, fingerprint(records), fmt.name if fmt else "")


def local_source_files(specs, dataset_info: str | Path | None = None) -> list[Path] | None:
    """Every local file the datasets `specs` read (and the dataset_info.json naming them), in order; None when one
    of them comes from a hub (its content is known only by loading it)."""
    from tuneforge.utils.modelscope import is_modelscope

    files: list[Path] = []
    for spec in map(_as_spec, specs):
        plan = _plan(spec, dataset_info)
        if is_modelscope(plan.location) or is_hub_id(plan.location):
            return None
        if spec.name:
            files.append(info_path(dataset_info))
        files.extend(list_files(plan.location))
    return files


def _empty_error(where: str, skipped: list[DataError]) -> DataError:
    if not skipped:
        return DataError(f"no usable rows in {where}: the data is empty", hint="check the file or the split")
    top = Counter(_reason(e) for e in skipped).most_common(3)
    why = "; ".join(f"{n}× {r}" for r, n in top)
    return DataError(f"no usable rows in {where}: {len(skipped)} skipped because {why}",
                     hint=f"first bad row: {skipped[0]}")


def _as_spec(s) -> DatasetEntry:
    if isinstance(s, DatasetEntry):
        return s
    if isinstance(s, dict):
        return dataset_spec(**s)
    raise DataError(f"a dataset must be a DatasetEntry or a mapping, got {type(s).__name__}")


def load_datasets(specs, *, dataset_info: str | Path | None = None, on_error: str = "raise", mix: str = "concat",
                  seed: int = 42, max_samples: int | None = None, prompts: bool = False, progress=None) -> LoadResult:
    """Load several datasets (DatasetEntry or dicts) and mix them into one LoadResult.

    Each dataset is first scaled by its `ratio` (seeded), then combined by `mix`: "concat" (in order) or
    "interleave" (round-robin). A global `max_samples` keeps a seeded subset of the mixture in mixture order.
    """
    specs = [specs] if isinstance(specs, (DatasetEntry, dict)) else list(specs)
    if not specs:
        raise DataError("no datasets given", field="data")
    results = [load_dataset(_as_spec(s), dataset_info=dataset_info, on_error=on_error, seed=seed, prompts=prompts,
                            progress=progress) for s in specs]
    groups = []
    for i, (s, res) in enumerate(zip(map(_as_spec, specs), results)):
        groups.append(res.records if s.ratio is None else apply_ratio(res.records, s.ratio, seed + i))
    records = mix_groups(groups, mix)
    if max_samples is not None and len(records) > max_samples:
        records = sample_to(records, max_samples, seed)
    skipped = [e for r in results for e in r.skipped]
    if not records:
        raise _empty_error(", ".join(r.name for r in results), skipped)
    formats = ",".join(dict.fromkeys(r.format for r in results))
    return LoadResult(records, skipped, "+".join(r.name for r in results), _mix_fingerprint(records, results),
                      formats)


def _mix_fingerprint(records: list[Record], results: list[LoadResult]) -> str:
    """The mix's fingerprint; one dataset taken whole, row for row, already has it (hashing a million rows twice
    costs seconds)."""
    if len(results) == 1 and len(records) == len(results[0].records) and \
            all(a is b for a, b in zip(records, results[0].records)):
        return results[0].fingerprint
    return fingerprint(records)
