"""Exact and near-duplicate removal, pure Python.

Near duplicates: Jaccard similarity of word shingles, estimated with MinHash (Broder 1997,
"On the resemblance and containment of documents") and found with locality-sensitive hashing
bands (Leskovec, Rajaraman & Ullman, Mining of Massive Datasets, ch. 3). Candidates from the
bands are confirmed with the exact Jaccard of their shingle sets, so the result never depends
on an unlucky hash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

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


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def minhash_signature(items: set[str], num_perm: int = 64, seed: int = 1) -> list[int]:
    """MinHash with `num_perm` universal hash functions h(x) = (a*x + b) mod p."""
    params = [
        (_hash64(f"a{seed}:{i}") % (_MERSENNE - 1) + 1, _hash64(f"b{seed}:{i}") % _MERSENNE)
        for i in range(num_perm)
    ]
    hashes = [_hash64(item) for item in items] or [0]
    return [min((a * h + b) % _MERSENNE for h in hashes) for a, b in params]


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
