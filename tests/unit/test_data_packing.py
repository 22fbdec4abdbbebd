"""Packing: CPT rows are exactly full; SFT best-fit bins hold whole examples."""

import random

import pytest

from alloylm.data.packing import (
    IGNORE_INDEX,
    best_fit_bins,
    masked_labels,
    pack_best_fit,
    pack_wrapped,
)


def test_wrapped_rows_by_hand():
    rows = pack_wrapped([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4)
    assert rows.input_ids == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert rows.labels == rows.input_ids
    assert rows.dropped_tokens == 1
    assert rows.real_token_fraction() == 1.0


def test_wrapped_corpus_shorter_than_a_row_still_trains():
    rows = pack_wrapped([[1, 2, 3]], block_size=8)
    assert rows.input_ids == [[1, 2, 3]] and rows.dropped_tokens == 0


def test_wrapped_real_token_fraction_on_many_documents():
    rng = random.Random(0)
    docs = [
        [1] + [rng.randrange(5, 100) for _ in range(rng.randrange(20, 900))] for _ in range(300)
    ]
    rows = pack_wrapped(docs, block_size=512)
    assert all(len(r) == 512 for r in rows.input_ids)
    total = sum(len(d) for d in docs)
    assert rows.real_tokens + rows.dropped_tokens == total
    assert rows.real_tokens / total >= 0.99  # only the last partial row is lost


def test_best_fit_decreasing_by_hand():
    # 5 -> new bin (room 1); 4 -> new (2); 3 -> new (3); 2 -> tightest fit is room 2; 1 -> room 1
    assert best_fit_bins([5, 4, 3, 2, 1], capacity=6) == [[0, 4], [1, 3], [2]]


def test_best_fit_rejects_an_item_longer_than_a_row():
    with pytest.raises(ValueError, match="truncate"):
        best_fit_bins([7], capacity=6)


def test_best_fit_rows_keep_examples_whole_and_fill_well():
    rng = random.Random(1)
    examples = []
    for _ in range(400):
        n = rng.randrange(10, 200)
        ids = list(range(n))
        examples.append((ids, masked_labels(ids, [0] * (n // 2) + [1] * (n - n // 2))))
    rows = pack_best_fit(examples, block_size=512)
    assert all(len(r) <= 512 for r in rows.input_ids)
    assert sorted(n for lens in rows.seq_lengths for n in lens) == sorted(
        len(e[0]) for e in examples
    )
    assert rows.real_tokens == sum(len(e[0]) for e in examples)
    assert rows.real_token_fraction() > 0.95


def test_masked_labels():
    assert masked_labels([5, 6, 7], [0, 1, 1]) == [IGNORE_INDEX, 6, 7]
