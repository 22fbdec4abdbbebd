"""The judge's statistics (chat/ratings.py) on hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from alloylm.chat.ratings import (
    bradley_terry,
    bradley_terry_ratings,
    elo_ratings,
    grade,
    intelligence_scores,
    percentile,
    table3,
    win_matrix,
)

CRITERIA = ("depth_of_reasoning", "creativity", "clarity", "quantitative_predictions")


def test_intelligence_score_is_average_over_best_average_times_ten():
    # The study's Table 3: the best average 9.5 -> 10.0; 8.25 -> 8.25 / 9.5 * 10 = 8.684 -> 8.7
    scores = intelligence_scores({"best": 9.5, "other": 8.25})
    assert scores["best"] == 10.0
    assert scores["other"] == pytest.approx(8.6842105, abs=1e-6)
    assert round(scores["other"], 1) == 8.7


def test_table3_rows_from_grades():
    # best: 10, 9, 10, 9 = 38 /40, average 9.5; other: 9, 8, 9, 7 = 33 /40, average 8.25
    best = grade("best", [dict(zip(CRITERIA, (10, 9, 10, 9), strict=True))], CRITERIA)
    # other has two samples: totals 33 and 33 -> sd 0; criteria means of (9,8,9,7) and (9,8,9,7)
    other = grade(
        "other",
        [
            dict(zip(CRITERIA, (9, 8, 9, 7), strict=True)),
            dict(zip(CRITERIA, (9, 8, 9, 7), strict=True)),
        ],
        CRITERIA,
    )
    rows = table3([other, best])
    assert [r["model"] for r in rows] == ["best", "other"]
    assert rows[0]["total"] == 38 and rows[0]["out_of"] == 40 and rows[0]["average"] == 9.5
    assert rows[0]["intelligence_score"] == 10.0
    assert rows[1]["total"] == 33 and rows[1]["average"] == 8.25
    assert rows[1]["intelligence_score"] == 8.7
    assert rows[1]["samples"] == 2 and rows[1]["total_sd"] == 0.0


def test_spread_of_totals_over_samples():
    # totals 30 and 34: mean criteria sum 32, sample sd = sqrt(((30-32)^2 + (34-32)^2) / 1) = 2.828
    g = grade(
        "m",
        [
            dict(zip(CRITERIA, (8, 7, 8, 7), strict=True)),
            dict(zip(CRITERIA, (9, 8, 9, 8), strict=True)),
        ],
        CRITERIA,
    )
    assert g.totals == [30, 34] and g.total == 32 and g.average == 8
    assert g.total_sd == pytest.approx(math.sqrt(8))


def test_bradley_terry_two_players_ratio_is_the_win_ratio():
    # i beat j 3 times, j beat i once: the MLE has p_i / p_j = 3 (p_i/(p_i+p_j) = 3/4)
    p = bradley_terry([[0, 3], [1, 0]])
    assert p[0] / p[1] == pytest.approx(3.0, rel=1e-8)
    assert p[0] * p[1] == pytest.approx(1.0)  # geometric mean 1
    # on the Elo scale: 400 log10(3) = 190.85 points apart, centred on 1000
    low, high = sorted(elo_ratings(p))
    assert high - low == pytest.approx(400 * math.log10(3), rel=1e-6)
    assert (low + high) / 2 == pytest.approx(1000)


def test_bradley_terry_three_players_satisfy_the_likelihood_equations():
    wins = [[0, 2, 3], [1, 0, 2], [1, 1, 0]]
    p = bradley_terry(wins)
    for i in range(3):  # at the MLE, W_i = sum_j n_ij p_i / (p_i + p_j)
        expected = sum((wins[i][j] + wins[j][i]) * p[i] / (p[i] + p[j]) for j in range(3) if j != i)
        assert sum(wins[i]) == pytest.approx(expected, rel=1e-7)
    assert p[0] > p[1] > p[2]


def test_a_cycle_gives_equal_strengths_and_ties_count_half():
    assert bradley_terry([[0, 1, 0], [0, 0, 1], [1, 0, 0]]) == pytest.approx([1, 1, 1])
    wins = win_matrix([("x", "y", "a"), ("x", "y", "tie"), ("y", "x", "both_bad")], ["x", "y"])
    assert wins == [[0, 2.0], [1.0, 0]]
    with pytest.raises(ValueError):
        win_matrix([("x", "y", "draw")], ["x", "y"])


def test_prior_keeps_a_winless_model_finite():
    # without a prior the loser's strength runs to 0; with 0.5 virtual wins each way the
    # estimate is (2 + 0.5) / (0 + 0.5) = 5 to 1
    p = bradley_terry([[0, 2], [0, 0]], prior=0.5)
    assert p[0] / p[1] == pytest.approx(5.0, rel=1e-8)


def test_ratings_with_bootstrap_intervals():
    comparisons = (
        [("a", "b", "a")] * 6 + [("a", "b", "b")] * 2 + [("b", "c", "a")] * 3 + [("b", "c", "tie")]
    )
    rows = bradley_terry_ratings(comparisons, resamples=200, seed=1)
    assert [r["model"] for r in rows] == ["a", "b", "c"]
    for row in rows:
        assert row["ci_low"] <= row["rating"] <= row["ci_high"]
    assert rows[0]["wins"] == 6 and rows[0]["losses"] == 2
    assert rows[1]["wins"] == 2 + 3 and rows[1]["losses"] == 6 and rows[1]["ties"] == 1
    again = bradley_terry_ratings(comparisons, resamples=200, seed=1)
    assert again == rows  # seeded bootstrap


def test_percentile_matches_linear_interpolation():
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([10, 0, 5], 0.25) == 2.5
