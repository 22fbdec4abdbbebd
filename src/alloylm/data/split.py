"""Deterministic held-out split by hashing a grouping key with a seed.

A record is held out when sha256(f"{seed}:{key}") read as a number in [0, 1) is below `fraction`.
Hashing a key (e.g. a textbook section's "module" or "title") rather than drawing at random keeps
every record of a group on one side, gives the same split on every machine and run, and does
not depend on file order, so adding records never moves an existing one across the split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_SCALE = float(1 << 64)


def unit_hash(value: str, seed: int) -> float:
    """A number in [0, 1) from the first 8 bytes of sha256(f"{seed}:{value}")."""
    digest = hashlib.sha256(f"{seed}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_heldout(key: str, fraction: float, seed: int) -> bool:
    """True when the record with this grouping key belongs to the held-out side."""
    return unit_hash(key, seed) < fraction


def key_text(value: Any) -> str:
    """The text a key value is hashed as (strings as they are, anything else as sorted JSON)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def split_by_key(
    items: Sequence[T], key_of: Callable[[T], str], fraction: float, seed: int
) -> tuple[list[T], list[T]]:
    """(kept, heldout), each in the original order."""
    kept: list[T] = []
    heldout: list[T] = []
    for item in items:
        (heldout if is_heldout(key_of(item), fraction, seed) else kept).append(item)
    return kept, heldout
