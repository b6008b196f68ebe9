"""The one place tuneforge draws PNG charts: a headless matplotlib figure, saved and closed.

    with figure(out_png, figsize=(7, 4)) as (fig, ax):
        ax.plot(...)

`figure` selects the Agg backend (no display needed), applies the house style (grid, tight layout, dpi), writes the
PNG atomically when the block ends without error, and always closes the figure so long runs do not leak memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def figure(out_png: str | Path, *, figsize=(7, 4), ncols: int = 1, nrows: int = 1, dpi: int = 110,
           grid: bool = True, **subplot_kw) -> Iterator[tuple]:
    """Yields (fig, ax) — ax is an array when nrows*ncols > 1 — and saves to `out_png` on success."""
    plt = pyplot()
    fig, ax = plt.subplots(nrows, ncols, figsize=figsize, dpi=dpi, **subplot_kw)
    try:
        if grid:
            for a in (ax.flat if hasattr(ax, "flat") else [ax]):
                a.grid(alpha=0.3)
        yield fig, ax
        fig.tight_layout()
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_png.with_name(f".{out_png.name}.tmp.png")
        fig.savefig(tmp)
        tmp.replace(out_png)
    finally:
        plt.close(fig)
