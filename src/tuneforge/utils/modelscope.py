"""ModelScope as a source of models and datasets: `modelscope:ORG/NAME` wherever a model or data path is taken.

The files come through the `modelscope` package's `snapshot_download` into its cache ($MODELSCOPE_CACHE when set,
else its default, ~/.cache/modelscope), the way its own tools fetch them; tuneforge then reads the downloaded
folder like any local model or data folder. Without the package, or without a network, the error says what to do.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

PREFIX = "modelscope:"
INSTALL_HINT = "pip install modelscope (then retry; files are cached under $MODELSCOPE_CACHE or ~/.cache/modelscope)"


class ModelScopeError(Exception):
    """Raised with a message and a hint; callers turn it into their own ModelError / DataError."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


def is_modelscope(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def repo_id(name: str) -> str:
    rid = name[len(PREFIX):].strip().strip("/")
    if rid.count("/") != 1 or not all(rid.split("/")):
        raise ModelScopeError(f"{name!r} is not a ModelScope id", hint="write modelscope:ORG/NAME, e.g. "
                                                                       "modelscope:Qwen/Qwen2.5-0.5B-Instruct")
    return rid


def download(name: str, kind: str, revision: str | None = None) -> Path:
    """The local folder of ModelScope model or dataset `name` (`modelscope:ORG/NAME`), downloaded if needed.
    `kind`: "model" or "dataset"."""
    rid = repo_id(name)
    try:
        modelscope = importlib.import_module("modelscope")
    except ImportError:
        raise ModelScopeError(f"{name}: the modelscope package is not installed", hint=INSTALL_HINT) from None
    kwargs = {"repo_type": kind}
    if os.environ.get("MODELSCOPE_CACHE"):
        kwargs["cache_dir"] = os.environ["MODELSCOPE_CACHE"]
    if revision:
        kwargs["revision"] = revision
    try:
        folder = modelscope.snapshot_download(rid, **kwargs)
    except Exception as err:  # noqa: BLE001 - modelscope raises many types (requests, its own, ValueError)
        raise ModelScopeError(f"{name}: ModelScope download failed ({type(err).__name__}: {err})",
                              hint="check the id and the network (modelscope.cn must be reachable); offline, "
                                   "copy the folder here and pass its path instead") from None
    path = Path(folder)
    if not path.is_dir():
        raise ModelScopeError(f"{name}: ModelScope returned {folder}, which is not a folder",
                              hint="clear the entry from the ModelScope cache and retry")
    return path
