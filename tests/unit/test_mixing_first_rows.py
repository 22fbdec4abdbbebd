"""`fraction: first`: a fractional weight takes the first records (the alignment-handbook's mixer)."""

from __future__ import annotations

import pytest

from alloylm.data.mixing import mix, weighted_indices
from alloylm.data.preference import PreferenceSource
from alloylm.data.sources import DataSource


def test_first_takes_the_leading_records_and_sample_does_not():
    assert weighted_indices(10, 0.3, seed=0, first=True) == [0, 1, 2]
    assert weighted_indices(10, 1.5, seed=0, first=True) == sorted([*range(10), 0, 1, 2, 3, 4])
    sampled = [weighted_indices(10, 0.3, seed=s) for s in range(5)]
    assert any(indices != [0, 1, 2] for indices in sampled)  # the default stays a seeded sample


def test_mix_applies_first_per_source():
    records = [list(range(10)), list(range(100, 110))]
    mixed, counts = mix(records, [0.2, 0.2], seed=3, shuffle=False, first=[True, False])
    assert counts == [2, 2] and mixed[:2] == [0, 1]


@pytest.mark.parametrize("model", [DataSource, PreferenceSource])
def test_sources_default_to_a_seeded_sample(model):
    assert model(path="x.jsonl").fraction == "sample"
    assert model(path="x.jsonl", fraction="first").fraction == "first"
