"""Merge synergy maths on hand-computed cases."""

from __future__ import annotations

import pytest

from alloylm.analysis.synergy import merge_gain, parent_diversity, synergy_report


def test_merge_gain_by_hand():
    gain = merge_gain([0.40, 0.60], 0.65)
    assert gain["expected"] == pytest.approx(0.50)
    assert gain["best_parent"] == pytest.approx(0.60)
    assert gain["gain_over_expected"] == pytest.approx(0.15)
    assert gain["gain_over_best"] == pytest.approx(0.05)
    assert gain["relative_gain_over_expected"] == pytest.approx(0.30)
    assert gain["synergy"] and gain["beats_expected"]


def test_merge_between_parents_is_not_synergy():
    gain = merge_gain([0.40, 0.60], 0.55)
    assert gain["beats_expected"] and not gain["synergy"]


def test_lower_is_better_metric_signs_gains():
    gain = merge_gain([20.0, 30.0], 18.0, higher_is_better=False)
    assert gain["best_parent"] == 20.0
    assert gain["gain_over_best"] == pytest.approx(2.0)
    assert gain["synergy"]


def test_parent_diversity_by_hand():
    assert parent_diversity([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        parent_diversity([1], [1, 0])


def test_synergy_report_pairs_with_best_parent():
    a = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # 0.2
    b = [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]  # 0.3
    m = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]  # 0.5: right where either parent is right
    report = synergy_report(m, {"a": a, "b": b}, resamples=200, seed=1)
    assert report["best_parent_name"] == "b"
    assert report["synergy"]
    assert report["vs_best_parent"]["difference"] == pytest.approx(0.2)
    assert report["parent_diversity"] == pytest.approx(0.5)
