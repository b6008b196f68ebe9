"""How answers name paths inside the server's storage folder: as `<storage>/...`, and an uploaded file by the name
it was uploaded as, so a client never learns where the server keeps its files. One place for the runs modules
(runs_view: run rows, configs, errors) and the evals modules (evals_options, evals_plan, evals_runner: messages and
results, whose example ids are `STORAGE/files/file-….jsonl:3`).
"""

from __future__ import annotations

import json
from pathlib import Path

STORAGE = "<storage>"


def hide_storage(text: str, storage: str | Path, path: str | None = None, filename: str | None = None) -> str:
    """`text` with `path` written as `filename` (when both are given) and the storage folder as <storage>."""
    if path and filename:
        text = text.replace(path, filename)
    return text.replace(str(storage), STORAGE)


def hide_storage_json(value, storage: str | Path, path: str | None = None, filename: str | None = None):
    """`value` with the same replacements made in its JSON text (so in every string, keys included)."""
    text = json.dumps(value)
    if path and filename:
        text = text.replace(json.dumps(path)[1:-1], json.dumps(filename)[1:-1])
    return json.loads(text.replace(json.dumps(str(storage))[1:-1], STORAGE))
