"""Packing several rendered samples into one sequence without cross-sample attention.

Samples are placed into bins of at most `cutoff` tokens by first-fit-decreasing (deterministic). Inside a bin the
position ids restart at 0 for every sample; the collator then passes no attention mask, and transformers derives a
block-diagonal causal mask from the position ids (`find_packed_sequence_indices`), so no token attends across a
sample boundary. The first token of each sample gets no label, because in the unpacked form nothing predicts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.data.render import IGNORE, Rendered


@dataclass
class Packed:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    n_samples: int


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group sample indices into bins whose summed length ≤ capacity (longest first; ties by index)."""
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


def pack_examples(examples: list[Rendered], cutoff: int) -> list[Packed]:
    """Pack rendered samples (each already ≤ cutoff tokens) into sequences of ≤ cutoff tokens."""
    bins = first_fit_decreasing([len(e.input_ids) for e in examples], cutoff)
    packed = []
    for members in bins:
        ids, labels, pos = [], [], []
        for i in sorted(members):
            e = examples[i]
            ids.extend(e.input_ids)
            labels.append(IGNORE)
            labels.extend(e.labels[1:])
            pos.extend(range(len(e.input_ids)))
        packed.append(Packed(ids, labels, pos, len(members)))
    return packed
