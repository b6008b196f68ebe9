"""Where tuneforge finds shared assets and keeps its cache."""

from __future__ import annotations

import os
from pathlib import Path

# Local dataset files tuneforge reads; a relative config path with one of these suffixes is a file, not a hub id.
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")


def tuneforge_home() -> Path:
    """Cache and registry root: $TUNEFORGE_HOME, else ~/.cache/tuneforge."""
    home = os.environ.get("TUNEFORGE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "tuneforge"


def shared_dir() -> Path | None:
    """The `shared/` folder with real demo models and data, if present.

    Looked up in $TUNEFORGE_SHARED, then beside the repository checkout (../shared). Returns None when absent.
    """
    env = os.environ.get("TUNEFORGE_SHARED")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p.parent / "shared" for p in here.parents[2:5]]
    candidates += [Path.cwd().parent / "shared", Path.cwd() / "shared"]
    for c in candidates:
        if (c / "models").is_dir() or (c / "data").is_dir():
            return c.resolve()
    return None
