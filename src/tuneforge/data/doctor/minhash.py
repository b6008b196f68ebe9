"""Duplicate finding for the dataset doctor: exact (normalized text) and near (MinHash + LSH over character n-grams).

Why our own MinHash instead of `datasketch`: it is ~60 lines of numpy, deterministic across processes (crc32 shingle
hashes, fixed seed), and avoids a dependency for one feature. Character n-grams (3 for CJK-heavy text, 5 otherwise)
work for Chinese, which has no spaces to split words on. LSH only proposes candidate pairs; every reported pair is
verified with the exact Jaccard similarity of the shingle sets.
"""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from tuneforge.data.doctor.text import normalize
from tuneforge.utils.text import cjk_share

_PRIME = np.uint64(4294967291)  # largest prime below 2**32: (a*x + b) stays below 2**64 for 32-bit a, b, x
NUM_PERM, BANDS = 120, 20  # 20 bands x 6 rows: pairs at Jaccard 0.8 are proposed with probability > 0.99
MIN_SHINGLES = 3  # shorter texts are only compared exactly


def shingles(text: str) -> set[str]:
    """Character n-grams of the normalized text (n = 3 for mostly-CJK text, else 5)."""
    t = normalize(text)
    n = 3 if cjk_share(t) > 0.3 else 5
    if len(t) <= n:
        return {t} if t else set()
    return {t[i:i + n] for i in range(len(t) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class MinHasher:
    def __init__(self, num_perm: int = NUM_PERM, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, int(_PRIME), size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, int(_PRIME), size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signature(self, sh: set[str]) -> np.ndarray:
        if not sh:
            return np.full(self.num_perm, int(_PRIME), dtype=np.uint64)
        hv = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in sh), dtype=np.uint64, count=len(sh))
        return ((self.a[:, None] * hv[None, :] + self.b[:, None]) % _PRIME).min(axis=1)

    def signatures(self, sets: list[set[str]], chunk: int = 16384) -> np.ndarray:
        """Signatures of many sets at once (vectorized over chunks of rows); same values as `signature`."""
        out = np.full((len(sets), self.num_perm), int(_PRIME), dtype=np.uint64)
        start = 0
        while start < len(sets):
            stop, total = start, 0
            while stop < len(sets) and (total == 0 or total + len(sets[stop]) <= chunk):
                total += len(sets[stop])
                stop += 1
            rows = [i for i in range(start, stop) if sets[i]]
            if rows:
                hv = np.fromiter((zlib.crc32(x.encode("utf-8")) for i in rows for x in sets[i]), dtype=np.uint64)
                offsets = np.cumsum([0] + [len(sets[i]) for i in rows[:-1]])
                hashed = (self.a[:, None] * hv[None, :] + self.b[:, None]) % _PRIME
                out[rows] = np.minimum.reduceat(hashed, offsets, axis=1).T
            start = stop
        return out


def _buckets(sigs: np.ndarray, eligible: list[int], bands: int) -> list[dict[bytes, list[int]]]:
    rows = sigs.shape[1] // bands
    tables: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(bands)]
    for i in eligible:
        for b in range(bands):
            tables[b][sigs[i, b * rows:(b + 1) * rows].tobytes()].append(i)
    return tables


def exact_groups(keys: list[str]) -> list[list[int]]:
    """Indices sharing one key, for every key seen more than once (first occurrence first)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    return [g for g in groups.values() if len(g) > 1]


def near_pairs(texts: list[str], threshold: float = 0.8, bands: int = BANDS) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard), i < j, of texts whose shingle sets have Jaccard >= threshold but differ once normalized.

    Texts that are identical after normalization are exact duplicates and are compared once (the first of each).
    """
    sets = [shingles(t) for t in texts]
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(normalize(t), i)
    eligible = [i for i in first.values() if len(sets[i]) >= MIN_SHINGLES]
    sigs = MinHasher().signatures(sets)
    pairs: dict[tuple[int, int], float] = {}
    for table in _buckets(sigs, eligible, bands):
        for members in table.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    i, j = members[x], members[y]
                    if (i, j) not in pairs:
                        pairs[(i, j)] = jaccard(sets[i], sets[j])
    return sorted(((i, j, s) for (i, j), s in pairs.items() if s >= threshold), key=lambda p: (p[0], p[1]))


def cross_pairs(left: list[str], right: list[str], threshold: float = 0.8,
                bands: int = BANDS) -> list[tuple[int, int, float]]:
    """Pairs (i in left, j in right, jaccard) with Jaccard >= threshold (exact matches included)."""
    lsets, rsets = [shingles(t) for t in left], [shingles(t) for t in right]
    hasher = MinHasher()
    lsig, rsig = hasher.signatures(lsets), hasher.signatures(rsets)
    rows = lsig.shape[1] // bands
    index = _buckets(rsig, [j for j, s in enumerate(rsets) if len(s) >= MIN_SHINGLES], bands)
    found: dict[tuple[int, int], float] = {}
    for i, s in enumerate(lsets):
        if len(s) < MIN_SHINGLES:
            continue
        for b in range(bands):
            for j in index[b].get(lsig[i, b * rows:(b + 1) * rows].tobytes(), ()):
                if (i, j) not in found:
                    found[(i, j)] = jaccard(s, rsets[j])
    return sorted(((i, j, v) for (i, j), v in found.items() if v >= threshold), key=lambda p: (p[0], -p[2]))


def clusters(n: int, pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """Connected groups (union-find) of the pairs; each sorted, groups ordered by first member."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, j, _ in pairs:
        for k in (i, j):
            groups[find(k)].append(k)
    return sorted((sorted(set(g)) for g in groups.values()), key=lambda g: g[0])
