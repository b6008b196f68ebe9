"""Uploaded files: stored under the server's storage folder by id (the client's file name is only a label), and
validated when uploaded with tuneforge's own readers, so a bad file is refused naming its first bad lines.

Accepted: OpenAI chat JSONL (`messages`), OpenAI preference JSONL (`input` / `preferred_output` /
`non_preferred_output`), and tuneforge's own formats (alpaca, sharegpt, pairwise, KTO; JSON, JSONL, CSV, Parquet).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePath

from tuneforge.utils.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
MAX_SHOWN_ERRORS = 5


def new_id(prefix: str) -> str:
    """An OpenAI-style id: `file-…`, `ftjob-…` (24 hex characters after the prefix)."""
    return f"{prefix}-{secrets.token_hex(12)}"


def display_name(filename: str | None) -> str:
    """The client's file name as a label: its last path component, printable characters only, at most 255."""
    name = PurePath((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable() and ch not in "/\\\0").strip() or "upload.jsonl"
    return name[-255:]


def storage_suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{filename}: unsupported file type {suffix or '(none)'}", field="file",
                        hint=f"upload one of {', '.join(SUFFIXES)} (OpenAI fine-tuning files are .jsonl)")
    return suffix


class UploadTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the file is larger than the server's limit of {limit // 2**20} MB")
        self.limit = limit


@dataclass
class Saved:
    path: Path  # where it was stored
    bytes: int
    sha256: str


def save_stream(chunks, folder: Path, file_id: str, suffix: str, limit: int) -> Saved:
    """Write `chunks` (bytes) to folder/file_id+suffix through a temporary name; over `limit` bytes the partial
    file is removed and UploadTooLarge raised."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{file_id}{suffix}"
    tmp = folder / f".{file_id}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as f:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return Saved(final, size, digest.hexdigest())


@dataclass
class Checked:
    """What validation found: the format as tuneforge reads it, the usable rows and the first bad lines."""

    data_format: str
    n_rows: int
    problems: list[str]  # "line 3: field 'messages[1]': ..." — at most MAX_SHOWN_ERRORS
    n_bad: int

    @property
    def kind(self) -> str:
        """chat, pairwise, kto, prompts (conversations that end with the user: RL prompts) or text."""
        for name in ("pairwise", "kto", "prompts"):
            if name in self.data_format:
                return name
        return "text" if self.data_format.startswith("text") else "chat"


def _problem(err: DataError, shown_name: str) -> str:
    where = f"line {err.line}" if err.line is not None else shown_name
    msg = err.message
    if err.file and msg.startswith(str(err.file)):
        msg = msg[len(str(err.file)):].lstrip(":").strip()
        if err.line is not None and msg.startswith(str(err.line)):
            msg = msg[len(str(err.line)):].lstrip(":").strip()
    return f"{where}: {msg}"


def _load(path: Path, prompts: bool):
    from tuneforge.data.catalog import load_dataset

    try:
        return load_dataset({"path": str(path)}, on_error="skip", prompts=prompts), None
    except DataError as err:
        return None, err


def check_file(path: Path, shown_name: str) -> Checked:
    """Read every row with tuneforge's readers (format detected from the first row). Raises DataError when the
    file cannot be read at all or has no usable row; bad rows are listed in `problems`."""
    result, first_error = _load(path, prompts=False)
    fmt = result.format if result else ""
    if result is None or result.skipped:  # prompts for reinforcement fine-tuning end with a user turn
        prompts, _ = _load(path, prompts=True)
        if prompts is not None and not prompts.skipped:
            result, fmt = prompts, f"{prompts.format}+prompts"
    if result is None:
        raise DataError(f"{shown_name}: {_problem(first_error, shown_name)}", field="file", hint=first_error.hint)
    problems = [_problem(e, shown_name) for e in result.skipped[:MAX_SHOWN_ERRORS]]
    return Checked(fmt, len(result.records), problems, len(result.skipped))
