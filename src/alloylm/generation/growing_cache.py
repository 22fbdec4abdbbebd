"""A KV cache layer that appends into spare room instead of concatenating.

transformers' `DynamicLayer.update` appends each step's keys and values with `torch.cat`, which
copies the whole cache at every decode step. For 32 sequences of ~200 tokens on SmolLM2-135M
(30 layers) that is ~300 MB a step: `aten::cat` was 30% of a decode step's time in torch.profiler
(2026-12-07, one thread). `GrowingLayer` keeps keys and values in buffers with room for more
positions and exposes views of their filled part, so a step writes only its own token. The copies
a decode batch makes anyway (rows leaving: `selected`; a batch joining: `stacked`) land in such a
buffer too. When the room is full, the filled part moves to a new buffer with ROOM_SLACK more
positions, or a quarter more, whichever is larger: positions are copied a bounded number of
times, and memory grows by at most a quarter.

Everything that reads `layer.keys` / `layer.values` sees the same values as with DynamicLayer.
"""

from __future__ import annotations

from typing import Any

# Positions of room a buffer gets beyond what it holds: the 16 tokens of an eval answer, or the
# first 64 of a chat reply, never move the cache.
ROOM_SLACK = 64

_GROWING_CLASS: type | None = None


def growing_layer_class() -> type:
    """`GrowingLayer`, a subclass of this transformers' DynamicLayer (made on first use, so that
    importing this module does not import transformers)."""
    global _GROWING_CLASS
    if _GROWING_CLASS is None:
        from transformers.cache_utils import DynamicLayer

        class GrowingLayer(DynamicLayer):
            key_room: Any = None
            value_room: Any = None

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any):
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                self.keys, self.key_room = appended(self.keys, self.key_room, key_states)
                self.values, self.value_room = appended(self.values, self.value_room, value_states)
                return self.keys, self.values

            def batch_select_indices(self, indices: Any) -> None:
                if self.get_seq_length() > 0:
                    self.keys, self.key_room = selected(self.keys, indices)
                    self.values, self.value_room = selected(self.values, indices)

        _GROWING_CLASS = GrowingLayer
    return _GROWING_CLASS


def grow_in_place(cache: Any) -> None:
    """Turn every plain DynamicLayer of `cache` into a GrowingLayer (same keys and values)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return
    from transformers.cache_utils import DynamicLayer

    growing = growing_layer_class()
    for layer in layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = growing  # same attributes: only `update` differs


def appended(filled: Any, room: Any, new: Any) -> tuple[Any, Any]:
    """(`filled` followed by `new` along dim -2, the buffer holding it). `new` is written into
    `room` when `filled` is a view of `room` with space after it; otherwise the filled part and
    `new` move to a new buffer with room to spare."""
    length = filled.shape[-2] if filled.dim() == new.dim() else 0  # lazy init: an empty 1-D tensor
    total = length + new.shape[-2]
    start = _offset_in(filled, room) if length else None
    if start is None or start + total > room.shape[-2]:
        room, start = _room_for(new, total), 0
        if length:
            room[..., :length, :] = filled
    room[..., start + length : start + total, :] = new
    return room[..., start : start + total, :], room


def selected(filled: Any, indices: Any) -> tuple[Any, Any]:
    """(the rows `indices` of `filled`, the buffer holding them, with room to spare)."""
    import torch

    room = _room_for(filled, filled.shape[-2], rows=len(indices))
    view = room[..., : filled.shape[-2], :]
    torch.index_select(filled, 0, indices, out=view)
    return view, room


def stacked(parts: list[Any], width: int) -> tuple[Any, Any]:
    """(the rows of every part, each right-aligned to `width` positions with zeros before, the
    buffer holding them with room to spare): two caches joining one decode batch."""
    first = parts[0]
    rows = sum(part.shape[0] for part in parts)
    room = _room_for(first, width, rows=rows)
    view = room[..., :width, :]
    row = 0
    for part in parts:
        count, missing = part.shape[0], width - part.shape[-2]
        view[row : row + count, ..., :missing, :] = 0
        view[row : row + count, ..., missing:, :] = part
        row += count
    return view, room


def _room_for(like: Any, positions: int, rows: int | None = None) -> Any:
    spare = max(ROOM_SLACK, positions // 4)
    shape = (like.shape[0] if rows is None else rows, *like.shape[1:-2])
    return like.new_empty((*shape, positions + spare, like.shape[-1]))


def _offset_in(filled: Any, room: Any) -> int | None:
    """The position in `room` where `filled` starts, when `filled` is a view of it holding every
    row and head (a decode batch's cache, possibly with leading positions trimmed)."""
    if room is None or filled.shape[:-2] != room.shape[:-2] or filled.dtype != room.dtype:
        return None
    if filled.stride() != room.stride():
        return None
    offset = filled.data_ptr() - room.data_ptr()
    step = room.stride(-2) * room.element_size()
    if offset < 0 or offset % step:
        return None
    return offset // step
