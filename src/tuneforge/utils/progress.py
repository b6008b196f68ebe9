"""The one progress bar of tuneforge: description, bar, done/total, elapsed and ETA on the stderr console.

Use `progress_bar(total, "rendering")` as a context manager; it yields `advance(n=1, **fields)`. Extra text columns
(e.g. tokens/s) are passed as `fields={"tps": ""}` and updated through `advance(0, tps="12 tok/s")`.
Disabled (or total <= 0) it is a no-op, so callers never branch on it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from tuneforge.utils.console import console


@contextmanager
def progress_bar(total: int | None, description: str, enabled: bool = True, *, fields: dict | None = None,
                 completed: int = 0) -> Iterator[Callable[..., None]]:
    """Yields `advance(n=1, **fields)`; `fields` names extra text columns shown after the counts."""
    if not enabled or (total is not None and total <= 0):
        yield lambda n=1, **kw: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    fields = dict(fields or {})
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False, refresh_per_second=2) as bar:
        task_id = bar.add_task(description, total=total, completed=completed, **fields)

        def advance(n: int = 1, **kw) -> None:
            bar.update(task_id, advance=n, **kw)

        yield advance
