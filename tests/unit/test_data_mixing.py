"""Weighted mixing: weight = times each record is used (2.0 twice, 0.5 a seeded half)."""

from collections import Counter

import pytest

from alloylm.data.mixing import mix, selection_counts, weighted_indices


def test_selection_counts_by_hand():
    assert selection_counts(10, 1.0) == (1, 0)
    assert selection_counts(10, 2.0) == (2, 0)
    assert selection_counts(10, 0.5) == (0, 5)
    assert selection_counts(10, 1.5) == (1, 5)
    assert selection_counts(7, 0.3) == (0, 2)  # round(2.1)


def test_weight_two_uses_every_record_twice():
    counts = Counter(weighted_indices(10, 2.0, seed=0))
    assert counts == {i: 2 for i in range(10)}


def test_weight_half_is_a_seeded_half_without_repeats():
    first = weighted_indices(10, 0.5, seed=3)
    assert len(first) == 5 and len(set(first)) == 5
    assert weighted_indices(10, 0.5, seed=3) == first
    others = {tuple(weighted_indices(10, 0.5, seed=s)) for s in range(20)}
    assert len(others) > 1  # the seed matters


def test_weight_one_and_a_half_is_all_plus_a_half_again():
    counts = Counter(weighted_indices(10, 1.5, seed=1))
    assert sorted(counts.values()) == [1] * 5 + [2] * 5


def test_weight_selecting_nothing_is_an_error_not_a_silent_drop():
    with pytest.raises(ValueError, match="selects 0 of 1"):
        weighted_indices(1, 0.3, seed=0)
    with pytest.raises(ValueError):
        weighted_indices(5, 0.0, seed=0)


def test_mix_counts_and_fractions():
    a = [f"a{i}" for i in range(10)]
    b = [f"b{i}" for i in range(10)]
    mixed, counts = mix([a, b], [2.0, 0.5], seed=7)
    assert counts == [20, 5]
    tally = Counter(item[0] for item in mixed)
    assert tally == {"a": 20, "b": 5}
    assert mix([a, b], [2.0, 0.5], seed=7)[0] == mixed  # deterministic
    assert mixed != sorted(mixed)  # shuffled so that packed rows mix sources


def test_adding_a_source_keeps_another_sources_draw():
    a = list(range(100))
    alone, _ = mix([a], [0.5], seed=4, shuffle=False)
    together, _ = mix([a, list(range(100, 110))], [0.5, 1.0], seed=4, shuffle=False)
    assert together[:50] == alone
