"""Exact and near-duplicate removal (no dedup library: shingles, MinHash in numpy, LSH bands).

Near duplicates: Jaccard similarity of word shingles, estimated with MinHash (Broder 1997,
"On the resemblance and containment of documents") and found with locality-sensitive hashing
bands (Leskovec, Rajaraman & Ullman, Mining of Massive Datasets, ch. 3). Candidates from the
bands are confirmed with the exact Jaccard of their shingle sets, so the result never depends
on an unlucky hash.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
_MERSENNE = (1 << 61) - 1


def normalize(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def shingles(text: str, size: int = 5) -> set[str]:
    """Word `size`-grams of the normalised text; short texts give one shingle of all their words."""
    words = normalize(text).split()
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash32(text: str) -> int:
    return zlib.crc32(text.encode())  # deterministic across processes, unlike hash()


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _MERSENNE, size=num_perm, dtype=np.uint64) >> np.uint64(
        30
    )  # < 2^31: a*h < 2^63
    b = rng.integers(0, _MERSENNE, size=num_perm, dtype=np.uint64)
    return np.maximum(a, np.uint64(1)), b


def minhash_signature(items: set[str], num_perm: int = 64, seed: int = 1) -> list[int]:
    """MinHash with `num_perm` universal hash functions h(x) = (a*x + b) mod p, p = 2^61 - 1.

    x is a 32-bit hash of the item and a < 2^31, so a*x + b stays below 2^64 (exact in uint64).
    """
    a, b = _permutations(num_perm, seed)
    hashes = np.fromiter((_hash32(item) for item in items), dtype=np.uint64, count=len(items))
    if hashes.size == 0:
        hashes = np.zeros(1, dtype=np.uint64)
    values = (a[:, None] * hashes[None, :] + b[:, None]) % np.uint64(_MERSENNE)
    return values.min(axis=1).tolist()


def dedup(
    items: Sequence[T],
    text_of: Callable[[T], str],
    *,
    threshold: float = 0.8,
    shingle_size: int = 5,
    num_perm: int = 64,
    bands: int = 16,
) -> tuple[list[T], dict[str, int]]:
    """Keep the first of every group of exact or near (Jaccard >= threshold) duplicates.

    Returns (kept items in input order, {"exact": n, "near": m} removed).
    """
    rows = num_perm // bands
    seen_exact: set[str] = set()
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    kept_shingles: list[set[str]] = []
    kept: list[T] = []
    removed = {"exact": 0, "near": 0}
    for item in items:
        text = normalize(text_of(item))
        if text in seen_exact:
            removed["exact"] += 1
            continue
        grams = shingles(text, shingle_size)
        signature = minhash_signature(grams, num_perm)
        keys = [(band, tuple(signature[band * rows : (band + 1) * rows])) for band in range(bands)]
        candidates = {index for key in keys for index in buckets.get(key, ())}
        if any(jaccard(grams, kept_shingles[index]) >= threshold for index in candidates):
            removed["near"] += 1
            continue
        seen_exact.add(text)
        for key in keys:
            buckets.setdefault(key, []).append(len(kept))
        kept_shingles.append(grams)
        kept.append(item)
    return kept, removed
