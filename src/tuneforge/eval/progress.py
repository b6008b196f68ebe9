"""A progress bar with elapsed time and ETA on the shared stderr console (a no-op when disabled)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from tuneforge.utils.console import console


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; shows `description  ━━━━  done/total  elapsed  eta`."""
    if not enabled or total <= 0:
        yield lambda n=1: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task_id = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task_id, n)
