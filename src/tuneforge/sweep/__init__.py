"""Data-size sweeps: train one run per data size on nested subsets, evaluate each, record them as one registry
group and chart metric vs. data size and training time. See docs/sweep.md.

`run_sweep` (runner.py) is the entry point; `plan.py` builds the nested subsets and the eval set, `evaluate.py`
scores a finished run, `plot.py` draws the chart and the table.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("run_sweep", "SweepResult"):
        from tuneforge.sweep import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'tuneforge.sweep' has no attribute {name!r}")
