"""Weighted mixing of data sources: weight = how many times each record is used.

weight 2.0 uses every record twice; 0.5 a seeded half; 1.5 every record once plus a seeded half
once more. The whole part repeats all records, the fractional part draws round(frac * n) distinct
records without replacement. A weight that would select nothing is an error, never a silent drop.
With `first`, the fractional part takes the first round(frac * n) records in file order instead (the
alignment-handbook's `dataset_mixer`, which the study ran: `select(range(int(frac * n)))`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def selection_counts(n: int, weight: float) -> tuple[int, int]:
    """(full repeats, extra records drawn) for `n` records at `weight`."""
    if weight <= 0 or not math.isfinite(weight):
        raise ValueError(f"weight must be a positive number, got {weight}")
    repeats = math.floor(weight)
    extra = round((weight - repeats) * n)
    return repeats, extra


def weighted_indices(n: int, weight: float, seed: int, *, first: bool = False) -> list[int]:
    """Indices of the records a source contributes (with repeats), sorted; the fractional part is a
    seeded sample, or the first records with `first`.

    Raises ValueError when the weight selects no record at all (e.g. 0.3 of 1 record).
    """
    repeats, extra = selection_counts(n, weight)
    indices = [i for i in range(n) for _ in range(repeats)]
    if extra:
        indices += list(range(extra)) if first else random.Random(seed).sample(range(n), extra)
    if n and not indices:
        raise ValueError(
            f"weight {weight} selects 0 of {n} records; raise the weight or add records"
        )
    return sorted(indices)


def mix(
    sources: Sequence[Sequence[T]],
    weights: Sequence[float],
    seed: int,
    *,
    shuffle: bool = True,
    first: Sequence[bool] | None = None,
) -> tuple[list[T], list[int]]:
    """Mixed records of all sources and how many each source contributed.

    Each source gets its own seed (seed + position), so adding a source does not change which
    records another one draws. The mix is shuffled with `seed` so that packed rows mix sources.
    `first[i]`: source i's fractional part takes its first records (see `weighted_indices`).
    """
    if len(sources) != len(weights):
        raise ValueError("one weight per source")
    mixed: list[T] = []
    counts: list[int] = []
    firsts = list(first) if first is not None else [False] * len(sources)
    for position, (records, weight) in enumerate(zip(sources, weights, strict=True)):
        indices = weighted_indices(len(records), weight, seed + position, first=firsts[position])
        chosen = [records[i] for i in indices]
        mixed.extend(chosen)
        counts.append(len(chosen))
    if shuffle:
        random.Random(seed).shuffle(mixed)
    return mixed, counts
