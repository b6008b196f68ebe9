"""Read raw rows from local files, folders and hub datasets, each tagged with the "path:line" it came from.

Supported local files: `.json` (a JSON array, or one object per line), `.jsonl`, `.csv`, `.parquet`, `.txt`.
Line numbers are physical lines for text formats (the line where a JSON array element starts, the first line of a
CSV record) and 1-based row numbers for parquet and hub datasets. `.txt` files follow LLaMA-Factory: every non-blank
line is one row `{"text": line}`; blank lines are skipped.

Row-level problems (a malformed JSONL line, a JSON array element that is not an object) come back as a `RawRow` with
`error` set so callers can skip them; problems that make the rest of a file unreadable raise `DataError`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneforge.utils.errors import DataError
from tuneforge.utils.modelscope import ModelScopeError, download, is_modelscope

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_LOCAL_HINT = "point `path:` to a local .json/.jsonl/.csv/.parquet/.txt file or a folder of them"


@dataclass
class RawRow:
    """One raw row: the parsed mapping (None when `error` is set) and where it came from."""

    data: dict | None
    file: str
    line: int | None
    error: DataError | None = None

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


def is_hub_id(path: str) -> bool:
    """True when `path` is not an existing local path and looks like a hub dataset id ("owner/name" or "name")."""
    if Path(path).expanduser().exists() or Path(path).suffix.lower() in SUFFIXES:
        return False
    return bool(_HUB_ID.match(path))


def list_files(path: str | Path) -> list[Path]:
    """The supported data files behind a local path: the file itself, or a folder's files sorted by name.

    Folders are read one level deep (like LLaMA-Factory); hidden and unsupported files are ignored.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() not in SUFFIXES:
            raise DataError(f"unsupported file type '{p.suffix}'", file=str(p),
                            hint=f"supported: {', '.join(SUFFIXES)}")
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in SUFFIXES)
        if not files:
            raise DataError("folder holds no supported data files", file=str(p),
                            hint=f"supported: {', '.join(SUFFIXES)}")
        return files
    raise DataError("no such file or folder", file=str(p), hint=_LOCAL_HINT)


def read_rows(path: str | Path, *, split: str = "train", subset: str | None = None,
              folder: str | None = None) -> Iterator[RawRow]:
    """Yield the raw rows of a local file, a folder (files in name order) or a hub dataset id.

    `split`, `subset` and `folder` only apply to hub datasets; a local file is a single split.
    """
    if is_modelscope(path):
        yield from read_modelscope(path, split=split, folder=folder)
        return
    if isinstance(path, str) and is_hub_id(path):
        yield from read_hub(path, split=split, subset=subset, folder=folder)
        return
    for f in list_files(path):
        yield from read_file(f)


def read_modelscope(name: str, *, split: str = "train", folder: str | None = None) -> Iterator[RawRow]:
    """Rows of a ModelScope dataset (`modelscope:ORG/NAME`), downloaded into ModelScope's cache: its data files
    (in `folder`, else at the top, else under data/), the `split` ones when the files are named by split."""
    try:
        root = download(name, "dataset")
    except ModelScopeError as err:
        raise DataError(err.message, file=name, hint=err.hint) from None
    for where in ([root / folder] if folder else [root, root / "data"]):
        files = [f for f in sorted(where.glob("*")) if f.is_file() and f.suffix.lower() in SUFFIXES] \
            if where.is_dir() else []
        named = [f for f in files if f.stem.split("-")[0].split(".")[0] == split]
        for f in named or files:
            yield from read_file(f)
        if files:
            return
    raise DataError(f"{name}: the downloaded dataset holds no data files ({', '.join(SUFFIXES)})", file=str(root),
                    hint="name the subfolder with `folder:` in the dataset entry")


def read_file(path: Path) -> Iterator[RawRow]:
    """Yield the rows of one supported local file, dispatching on its suffix."""
    readers = {".json": read_json, ".jsonl": read_jsonl, ".csv": read_csv, ".parquet": read_parquet,
               ".txt": read_txt}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"unsupported file type '{path.suffix}'", file=str(path),
                        hint=f"supported: {', '.join(SUFFIXES)}")
    return reader(path)


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: files saved by Windows tools often start with a BOM that json/csv would reject.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=str(path),
                        hint="re-save the file as UTF-8") from None


def text_lines(path: Path, progress: Callable | None = None) -> Iterator[tuple[int, str]]:
    """(line number, line) as `str.splitlines` of the whole file numbers them, one line in memory at a time
    (a million-row file is never held whole, nor as a list of its lines).

    Bytes are split at newlines and decoded line by line, so a non-UTF-8 byte is reported with its line; a
    leading BOM is dropped (utf-8-sig). A file with bare-CR line ends reads as one long line before splitting."""
    n = 0
    with open(path, "rb") as f:
        for raw in f:
            if progress:
                progress(len(raw))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start} of the line)", file=str(path),
                                line=n + 1, hint="re-save the file as UTF-8") from None
            if n == 0:
                text = text.removeprefix("\ufeff")
            for line in text.splitlines():
                n += 1
                yield n, line


def _row(obj, file: str, line: int) -> RawRow:
    if isinstance(obj, dict):
        return RawRow(obj, file, line)
    err = DataError(f"row is a JSON {type(obj).__name__}, expected an object {{...}}", file=file, line=line)
    return RawRow(None, file, line, err)


def read_json(path: Path) -> Iterator[RawRow]:
    """Yield the elements of a JSON array with the line each element starts on.

    A file that does not start with '[' is read as JSON lines (the HF `json` loader accepts both).
    """
    text, file = _read_text(path), str(path)
    start = len(text) - len(text.lstrip())
    if not text[start:start + 1] == "[":
        _refuse_single_object(text, file)
        yield from _json_lines(enumerate(text.splitlines(), start=1), file)
        return
    decoder = json.JSONDecoder()
    pos, line, n = start + 1, 1 + text.count("\n", 0, start), len(text)
    while True:
        idx = _skip_ws(text, pos)
        line += text.count("\n", pos, idx)
        if idx < n and text[idx] == "]" and pos == start + 1:
            return  # empty array
        try:
            obj, end = decoder.raw_decode(text, idx)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg}", file=file, line=e.lineno,
                            hint=f"column {e.colno}; the rest of the file cannot be read") from None
        yield _row(obj, file, line)
        line += text.count("\n", idx, end)
        pos = _skip_ws(text, end)
        line += text.count("\n", end, pos)
        if pos < n and text[pos] == ",":
            pos += 1
            continue
        if pos < n and text[pos] == "]":
            return
        raise DataError("malformed JSON array: expected ',' or ']' after an element", file=file, line=line)


def _refuse_single_object(text: str, file: str) -> None:
    """A pretty-printed single object would otherwise fail line by line with a misleading message."""
    try:
        whole = json.loads(text)  # fails fast at line 2 ("Extra data") for real JSON lines
    except json.JSONDecodeError:
        return
    if isinstance(whole, dict) and "\n" in text.strip():
        raise DataError("the file holds one multi-line JSON object, expected a JSON array of rows", file=file, line=1,
                        hint="wrap the rows in [ ... ], or write one object per line (.jsonl)")


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    return pos


def read_jsonl(path: Path) -> Iterator[RawRow]:
    """Yield one row per non-blank physical line; a malformed line yields a row with `error` set."""
    return _json_lines(text_lines(path), str(path))


def _json_lines(lines: Iterable[tuple[int, str]], file: str) -> Iterator[RawRow]:
    for i, raw in lines:
        if raw.strip():
            yield json_line_row(raw, file, i)


def json_line_row(raw: str, file: str, line: int | None) -> RawRow:
    """One line of JSON lines as a row; a malformed line, or one that is not an object, is a row with `error` set."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        return RawRow(None, file, line, DataError(f"malformed JSON line: {e.msg} (column {e.colno})", file=file,
                                                  line=line,
                                                  hint="each line of a .jsonl file must be one complete JSON object"))
    return _row(obj, file, line)


def read_csv(path: Path) -> Iterator[RawRow]:
    """Yield CSV records as string-valued rows; the header is line 1, a record's line is the line it starts on."""
    file = str(path)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"unreadable CSV header: {e}", file=file, line=1) from None
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as e:
                raise DataError(f"malformed CSV: {e}", file=file, line=start) from None
            if values and any(v.strip() for v in values):
                if len(values) != len(header):
                    err = DataError(f"row has {len(values)} cells but the header has {len(header)}",
                                    file=file, line=start)
                    yield RawRow(None, file, start, err)
                else:
                    yield RawRow(dict(zip(header, values)), file, start)
            start = reader.line_num + 1


def read_parquet(path: Path) -> Iterator[RawRow]:
    """Yield parquet rows; `line` is the 1-based row number."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"unreadable parquet file: {e}", file=str(path)) from None
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield RawRow(row, str(path), n)


def read_txt(path: Path) -> Iterator[RawRow]:
    """Yield every non-blank line as `{"text": line}` (line breaks removed, other whitespace kept)."""
    file = str(path)
    for i, raw in text_lines(path):
        if raw.strip():
            yield RawRow({"text": raw}, file, i)


def read_hub(repo_id: str, *, split: str = "train", subset: str | None = None,
             folder: str | None = None) -> Iterator[RawRow]:
    """Yield rows of a hub dataset through `datasets.load_dataset`; `line` is the 1-based row number.

    Raises DataError when the hub is unreachable (including HF_HUB_OFFLINE=1) or the id / subset / split is unknown.
    """
    import datasets

    where = f"hub:{repo_id}" + (f"/{subset}" if subset else "") + f"[{split}]"
    try:
        ds = datasets.load_dataset(repo_id, name=subset, split=split, data_dir=folder)
    except (ConnectionError, OSError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0")
        why = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the hub is unreachable or the id is unknown"
        raise DataError(f"cannot load hub dataset '{repo_id}': {why} ({e}); no local file or folder of that name "
                        "exists either", file=where,
                        hint=f"download it where the hub is reachable and {_LOCAL_HINT}") from None
    except Exception as e:  # datasets raises many types (DatasetNotFoundError, ValueError for a bad split, ...)
        raise DataError(f"cannot load hub dataset '{repo_id}': {type(e).__name__}: {e}", file=where,
                        hint=f"check the id, subset and split, or {_LOCAL_HINT}") from None
    for i, row in enumerate(ds, start=1):
        yield RawRow(dict(row), where, i)
