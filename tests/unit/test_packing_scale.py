"""Packing at scale: a million samples pack in seconds into (nearly) as few bins as possible.

The old first-fit-decreasing scanned every open bin for every sample, O(samples × bins): hours for a million rows.
It is kept here as the reference the new rule must not lose to.
"""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

from tuneforge.data.packing import best_fit_decreasing

CAPACITY = 1024


def _skewed_lengths(n: int, seed: int) -> list[int]:
    """Token counts as chat data has them: most rows short (median ~150), a long tail cut at the capacity."""
    rng = random.Random(seed)
    return [min(CAPACITY, max(1, round(rng.lognormvariate(5.0, 1.0)))) for _ in range(n)]


def _lower_bound(lengths: list[int]) -> int:
    """No packing has fewer bins: all tokens must fit, and two samples longer than half a bin never share one."""
    return max(math.ceil(sum(lengths) / CAPACITY), sum(1 for n in lengths if n > CAPACITY // 2))


def _assert_valid(bins: list[list[int]], lengths: list[int]) -> None:
    seen = bytearray(len(lengths))
    for b in bins:
        assert sum(lengths[i] for i in b) <= CAPACITY
        for i in b:
            seen[i] += 1
    assert seen.count(1) == len(lengths)  # every index in exactly one bin


def _first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """The previous rule, verbatim: longest first, into the first bin with room (a scan of all bins)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    space: list[int] = []
    for i in order:
        n = lengths[i]
        for b, free in enumerate(space):
            if n <= free:
                bins[b].append(i)
                space[b] -= n
                break
        else:
            bins.append([i])
            space.append(capacity - n)
    return bins


@pytest.mark.timeout(120)  # a quadratic rule would run for hours: fail instead of hanging
def test_a_million_samples_pack_fast_and_tight():
    lengths = _skewed_lengths(1_000_000, seed=12)
    start = time.perf_counter()
    bins = best_fit_decreasing(lengths, CAPACITY)
    seconds = time.perf_counter() - start
    assert seconds < 60, f"packing 1M samples took {seconds:.1f}s (about 1s single-threaded): is it quadratic again?"
    _assert_valid(bins, lengths)
    assert len(bins) <= 1.01 * _lower_bound(lengths)


def test_never_more_bins_than_first_fit_decreasing():
    for seed in range(2):
        lengths = _skewed_lengths(20_000, seed)
        bins = best_fit_decreasing(lengths, CAPACITY)
        _assert_valid(bins, lengths)
        assert len(bins) <= len(_first_fit_decreasing(lengths, CAPACITY))
        assert len(bins) <= 1.01 * _lower_bound(lengths)


def test_deterministic():
    lengths = _skewed_lengths(5_000, seed=3)
    assert best_fit_decreasing(lengths, CAPACITY) == best_fit_decreasing(list(lengths), CAPACITY)
    assert best_fit_decreasing(np.array(lengths, dtype=np.int32), CAPACITY) == best_fit_decreasing(lengths, CAPACITY)
