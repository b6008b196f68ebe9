"""Summary statistics shown to users; one definition so every report agrees on the same data."""

from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def length_summary(values: Sequence[int], percentiles=(50, 90, 95, 99)) -> dict:
    """n, min, mean, p50/p90/p95/p99 (rounded to 0.1) and max of lengths; {"n": 0} when empty."""
    if not values:
        return {"n": 0}
    out = {"n": len(values), "min": int(min(values)), "mean": round(sum(values) / len(values), 1)}
    out.update({f"p{q}": round(percentile(values, q), 1) for q in percentiles})
    out["max"] = int(max(values))
    return out
