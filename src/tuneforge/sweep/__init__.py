"""Sweeps: train one run per cell — a data size (nested subsets) × a combination of `--grid KEY=V1,V2` values (any
config keys, e.g. a method shoot-out) —, evaluate each, record them as one registry group, and tabulate and chart
them. See docs/sweep.md.

`run_sweep` (runner.py) is the entry point; `plan.py` builds the nested subsets and the eval set, `grid.py` the
cells and their validated configs, `child.py` trains a cell in its own process (for its own peak RSS),
`evaluate.py` scores a finished run, `plot.py` draws the chart and the table.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("run_sweep", "SweepResult"):
        from tuneforge.sweep import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'tuneforge.sweep' has no attribute {name!r}")
