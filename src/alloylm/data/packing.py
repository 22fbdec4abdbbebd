"""Packing token sequences into fixed-size rows, so that training positions are real tokens.

- `pack_wrapped` (CPT): concatenate documents (each already starting with its separator token)
  and cut into rows of exactly `block_size`; as in pretraining, a row can span documents. The
  tail shorter than a row is dropped (counted), unless it is the only row.
- `pack_best_fit` (SFT): best-fit decreasing bins of whole examples (Johnson 1974 bin packing);
  rows keep `seq_lengths` so the trainer restarts position ids per example and examples do not
  attend to each other (padding-free batches).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

IGNORE_INDEX = -100


@dataclass
class PackedRows:
    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    seq_lengths: list[list[int]] = field(default_factory=list)
    block_size: int = 0
    dropped_tokens: int = 0  # tail tokens that did not fill a row

    @property
    def real_tokens(self) -> int:
        return sum(len(row) for row in self.input_ids)

    @property
    def trained_tokens(self) -> int:
        """Positions whose label is not ignored."""
        return sum(sum(1 for label in row if label != IGNORE_INDEX) for row in self.labels)

    def real_token_fraction(self) -> float:
        """Real tokens / positions, had every row been padded to `block_size`."""
        positions = len(self.input_ids) * self.block_size
        return self.real_tokens / positions if positions else 0.0

    def columns(self) -> dict[str, list[list[int]]]:
        """Columns for a datasets.Dataset."""
        return {"input_ids": self.input_ids, "labels": self.labels, "seq_lengths": self.seq_lengths}


def pack_wrapped(documents: Iterable[Sequence[int]], block_size: int) -> PackedRows:
    """Rows of exactly `block_size` tokens from concatenated documents; labels = inputs."""
    if block_size < 2:
        raise ValueError("block_size must be at least 2")
    stream: list[int] = []
    for document in documents:
        stream.extend(document)
    rows = PackedRows(block_size=block_size)
    full = len(stream) // block_size
    for start in range(0, full * block_size, block_size):
        row = stream[start : start + block_size]
        rows.input_ids.append(row)
        rows.labels.append(list(row))
        rows.seq_lengths.append([block_size])
    tail = stream[full * block_size :]
    if full == 0 and len(tail) >= 2:  # a corpus shorter than one row still trains
        rows.input_ids.append(tail)
        rows.labels.append(list(tail))
        rows.seq_lengths.append([len(tail)])
    else:
        rows.dropped_tokens = len(tail)
    return rows


def best_fit_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of items per bin, every bin's total <= capacity.

    Items are placed longest first into the open bin with the least room that still fits them.
    Ties are broken by item index and bin creation order, so the result is deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # sorted (remaining capacity, bin id)
    for item in order:
        size = lengths[item]
        if size > capacity:
            raise ValueError(
                f"item {item} has length {size} > capacity {capacity}; truncate it first"
            )
        slot = bisect.bisect_left(room, (size, -1))
        if slot < len(room):
            remaining, bin_id = room.pop(slot)
            bins[bin_id].append(item)
            bisect.insort(room, (remaining - size, bin_id))
        else:
            bins.append([item])
            bisect.insort(room, (capacity - size, len(bins) - 1))
    return bins


def pack_best_fit(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]], block_size: int
) -> PackedRows:
    """Rows of whole (input_ids, labels) examples, each row <= block_size tokens."""
    bins = best_fit_bins([len(ids) for ids, _ in examples], block_size)
    rows = PackedRows(block_size=block_size)
    for members in bins:
        ids: list[int] = []
        labels: list[int] = []
        for index in members:
            ids.extend(examples[index][0])
            labels.extend(examples[index][1])
        rows.input_ids.append(ids)
        rows.labels.append(labels)
        rows.seq_lengths.append([len(examples[index][0]) for index in members])
    return rows


def unpacked_rows(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]], block_size: int
) -> PackedRows:
    """One example per row (packing off)."""
    rows = PackedRows(block_size=block_size)
    for ids, labels in examples:
        rows.input_ids.append(list(ids))
        rows.labels.append(list(labels))
        rows.seq_lengths.append([len(ids)])
    return rows


def masked_labels(input_ids: Sequence[int], loss_mask: Sequence[int]) -> list[int]:
    """Labels that train only where `loss_mask` is 1 (others ignored)."""
    return [
        token if keep else IGNORE_INDEX for token, keep in zip(input_ids, loss_mask, strict=True)
    ]
