"""growing_cache: appending into spare room gives what torch.cat gives, writes in place while
there is room, and the copies a decode batch makes (rows leaving, a batch joining) keep room."""

from __future__ import annotations

import torch

from alloylm.generation import growing_cache
from alloylm.generation.growing_cache import ROOM_SLACK, appended, selected, stacked


def _steps(first: torch.Tensor, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(*first.shape[:-2], 1, first.shape[-1], generator=generator)
        for _ in range(count)
    ]


def test_appending_equals_concatenating_and_moves_only_when_the_room_is_full():
    prompt = torch.randn(3, 2, 10, 4)
    room_moves = []
    filled, room = appended(torch.tensor([]), None, prompt)  # a layer's lazy start
    assert torch.equal(filled, prompt) and room.shape[-2] == 10 + ROOM_SLACK
    expected = prompt
    for new in _steps(prompt, ROOM_SLACK + 5):
        before = room.data_ptr()
        filled, room = appended(filled, room, new)
        room_moves.append(room.data_ptr() != before)
        expected = torch.cat([expected, new], -2)
        assert torch.equal(filled, expected)
    # ROOM_SLACK steps fit; the next one moves to a buffer with a quarter more (here: the slack)
    assert room_moves == [False] * ROOM_SLACK + [True] + [False] * 4
    assert room.shape[-2] == 10 + ROOM_SLACK + 1 + max(ROOM_SLACK, (10 + ROOM_SLACK + 1) // 4)


def test_a_trimmed_view_keeps_appending_in_place():
    filled, room = appended(torch.tensor([]), None, torch.randn(2, 1, 6, 3))
    trimmed = filled[:, :, 2:]  # a batch drops leading padding columns
    new = torch.randn(2, 1, 1, 3)
    grown, same_room = appended(trimmed, room, new)
    assert same_room is room
    assert torch.equal(grown, torch.cat([trimmed, new], -2))


def test_a_replaced_tensor_is_copied_into_new_room():
    filled, room = appended(torch.tensor([]), None, torch.randn(2, 1, 6, 3))
    replaced = filled.clone()
    new = torch.randn(2, 1, 1, 3)
    grown, new_room = appended(replaced, room, new)
    assert new_room.data_ptr() != room.data_ptr()
    assert torch.equal(grown, torch.cat([replaced, new], -2))


def test_selected_rows_and_stacked_batches_are_those_of_indexing_and_padding():
    keys = torch.randn(4, 2, 5, 3)
    indices = torch.tensor([3, 0])
    rows, room = selected(keys, indices)
    assert torch.equal(rows, keys[indices]) and room.shape[-2] == 5 + ROOM_SLACK
    other = torch.randn(2, 2, 3, 3)
    both, room = stacked([keys, other], 5)
    padded = torch.cat([torch.zeros(2, 2, 2, 3), other], -2)
    assert torch.equal(both, torch.cat([keys, padded], 0))
    new = torch.randn(6, 2, 1, 3)
    grown, same_room = appended(both, room, new)
    assert same_room is room and torch.equal(grown, torch.cat([both, new], -2))


def test_the_layer_class_is_transformers_dynamic_layer_with_our_update():
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = DynamicCache()
    keys, values = torch.randn(2, 1, 4, 3), torch.randn(2, 1, 4, 3)
    cache.update(keys, values, 0)
    growing_cache.grow_in_place(cache)
    layer = cache.layers[0]
    assert isinstance(layer, DynamicLayer) and type(layer) is growing_cache.growing_layer_class()
    new_keys, new_values = torch.randn(2, 1, 1, 3), torch.randn(2, 1, 1, 3)
    out_keys, out_values = cache.update(new_keys, new_values, 0)
    assert torch.equal(out_keys, torch.cat([keys, new_keys], -2))
    assert torch.equal(out_values, torch.cat([values, new_values], -2))
    room = layer.key_room
    cache.update(new_keys, new_values, 0)
    assert layer.key_room is room  # the second step wrote in place
    cache.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, torch.cat([keys, new_keys, new_keys], -2)[1:])
    assert cache.get_seq_length() == 6
