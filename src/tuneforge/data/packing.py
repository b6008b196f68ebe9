"""Packing several rendered samples into one sequence without cross-sample attention.

Samples are placed into bins of at most `cutoff` tokens by best-fit-decreasing (deterministic): longest first, each
into the open bin it fills most tightly. Open bins are kept by their free space, so one placement is a binary search
over the distinct free amounts (at most cutoff + 1 of them) and a heap pop, never a scan of all bins: a million
samples pack in seconds. Inside a bin the position ids restart at 0 for every sample; the collator then passes no
attention mask, and transformers derives a block-diagonal causal mask from the position ids
(`find_packed_sequence_indices`), so no token attends across a sample boundary. The first token of each sample gets
no label, because in the unpacked form nothing predicts it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Sequence

from tuneforge.data.render import IGNORE, Rendered


@dataclass
class Packed:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    n_samples: int


class _OpenBins:
    """Bins that still have room, grouped by free space: the tightest fit ≥ n is one bisect away.

    `frees` is the sorted list of free amounts that some bin has; `by_free[f]` a min-heap of the bins with f free, so
    among equally tight bins the oldest (lowest index) is chosen and the result does not depend on dict order.
    """

    def __init__(self):
        self.frees: list[int] = []
        self.by_free: dict[int, list[int]] = {}

    def take_tightest(self, n: int) -> tuple[int, int] | None:
        """Remove and return (bin, free) of the bin with the least free space ≥ n, or None when none fits."""
        k = bisect_left(self.frees, n)
        if k == len(self.frees):
            return None
        free = self.frees[k]
        heap = self.by_free[free]
        b = heappop(heap)
        if not heap:
            del self.frees[k]
            del self.by_free[free]
        return b, free

    def add(self, b: int, free: int) -> None:
        heap = self.by_free.get(free)
        if heap is None:
            self.by_free[free] = [b]
            insort(self.frees, free)
        else:
            heappush(heap, b)


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group sample indices into bins whose summed length ≤ capacity: longest first (ties by index), each into the
    open bin with the least room that still fits it (ties: the lowest bin). A sample longer than capacity gets a bin
    of its own. Bins are listed in the order they were opened, members in the order they were placed."""
    lengths = [int(n) for n in lengths]
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)  # stable: equal lengths by index
    bins: list[list[int]] = []
    open_bins = _OpenBins()
    for i in order:
        n = lengths[i]
        fit = open_bins.take_tightest(n)
        if fit is None:
            b, left = len(bins), capacity - n
            bins.append([i])
        else:
            b, left = fit[0], fit[1] - n
            bins[b].append(i)
        if left > 0:  # a full bin (or an over-long sample's) never takes anything again
            open_bins.add(b, left)
    return bins


def pack_examples(examples: list[Rendered], cutoff: int) -> list[Packed]:
    """Pack rendered samples (each already ≤ cutoff tokens) into sequences of ≤ cutoff tokens."""
    bins = best_fit_decreasing([len(e.input_ids) for e in examples], cutoff)
    return [_packed([examples[i] for i in sorted(members)]) for members in bins]


def _packed(members: list[Rendered]) -> Packed:
    ids, labels, pos = [], [], []
    for e in members:
        ids.extend(e.input_ids)
        labels.append(IGNORE)
        labels.extend(e.labels[1:])
        pos.extend(range(len(e.input_ids)))
    return Packed(ids, labels, pos, len(members))
