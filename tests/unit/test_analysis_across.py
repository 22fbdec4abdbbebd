"""Across-merge statistics on small hand-computed tables: z-scores, Pearson r, K-means, Ward."""

from __future__ import annotations

import math

import pytest

from alloylm.analysis.across import (
    correlation_interval,
    correlation_matrix,
    hierarchical_linkage,
    kmeans_two,
    verdict_correlation,
    zscore,
)


def test_zscore_by_hand_and_constant_column():
    # mean 2, population std sqrt(2/3)
    assert zscore([1, 2, 3]).tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    assert zscore([4, 4, 4]).tolist() == [0.0, 0.0, 0.0]


def test_pearson_matrix_by_hand_drops_constant_columns():
    # dx = -1.5 -.5 .5 1.5, dy = -3 -1 0 4: r = 11 / sqrt(5 * 26)
    result = correlation_matrix({"x": [1, 2, 3, 4], "y": [2, 4, 5, 9], "SFT": [1, 1, 1, 1]})
    assert result["names"] == ["x", "y"] and result["constant"] == ["SFT"]
    r = 11 / math.sqrt(130)
    assert result["r"][0] == pytest.approx([1.0, r]) and result["r"][1] == pytest.approx([r, 1.0])
    assert result["n"] == 4 and result["note"] is None


def test_pearson_needs_three_merges():
    result = correlation_matrix({"x": [1, 2], "y": [3, 1]})
    assert result["names"] == [] and result["note"] == (
        "not enough merges for a correlation matrix: needs 3, the study has 2"
    )
    with pytest.raises(ValueError, match="differ in length"):
        correlation_matrix({"x": [1, 2, 3], "y": [1, 2]})


def test_correlation_interval_is_fishers_z():
    result = correlation_interval([1, 2, 3, 4], [2, 4, 5, 9])
    r = 11 / math.sqrt(130)
    # atanh(r) +- 1.96 / sqrt(n - 3), back through tanh
    low, high = math.tanh(math.atanh(r) - 1.959964), math.tanh(math.atanh(r) + 1.959964)
    assert result["r"] == pytest.approx(r)
    assert result["ci95"] == pytest.approx([low, high], abs=1e-4)
    assert verdict_correlation("diversity", "improvement", result).endswith(
        "over 4 merges: the interval excludes 0"
    )
    three = correlation_interval([1, 2, 3], [1, 3, 2])
    assert "ci95" not in three  # Fisher's interval needs n >= 4
    assert verdict_correlation("a", "b", three).endswith("no evidence of a correlation")


def test_kmeans_two_separates_two_groups_of_merges():
    expected = [0.10, 0.11, 0.50, 0.52]
    actual = [0.10, 0.12, 0.60, 0.58]
    result = kmeans_two(expected, actual)
    assert result["labels"] == [0, 0, 1, 1]  # cluster 0 holds the first merge
    assert result["points"][0] == pytest.approx([zscore(expected)[0], zscore(actual)[0]])
    assert kmeans_two([0.1, 0.2], [0.1, 0.2])["note"].startswith("not enough merges for K-means")
    same = kmeans_two([0.3] * 3, [0.4] * 3)
    assert same["labels"] == [] and "nothing to cluster" in same["note"]


def test_ward_linkage_by_hand():
    # (0,0) and (0,1) join at their distance 1; then the centroid (0, 0.5) of 2 points joins (5, 0)
    # at sqrt(2 * 2 * 1 / 3) * |(5, -0.5)| (Ward's distance)
    result = hierarchical_linkage([[0, 0], [0, 1], [5, 0]])
    rows = result["linkage"]
    assert rows[0][:3] == pytest.approx([0, 1, 1.0]) and rows[0][3] == 2
    assert rows[1][2] == pytest.approx(math.sqrt(4 / 3) * math.sqrt(25.25))
    assert hierarchical_linkage([[0, 0], [1, 1]])["note"].startswith("not enough merges")
