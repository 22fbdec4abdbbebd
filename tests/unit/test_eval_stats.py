"""Bootstrap intervals, paired bootstrap and relative improvement on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from alloylm.evals.stats import (
    bootstrap_ci,
    bootstrap_indices,
    paired_bootstrap,
    percentile_interval,
    ratio_bootstrap_ci,
    relative_improvement,
)


def test_percentile_interval_of_0_to_100():
    # numpy's linear percentile of 0..100: the 2.5th value is 2.5, the 97.5th is 97.5.
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))


def test_two_questions_one_right():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4:
    # both tails hold 25% > 2.5%, so the interval is [0, 1] and the bootstrap mean is 0.5.
    low, high = bootstrap_ci([0, 1], resamples=4000, seed=1)
    assert (low, high) == (0.0, 1.0)
    means = np.asarray([0.0, 1.0])[bootstrap_indices(2, 4000, 1)].mean(axis=1)
    assert means.mean() == pytest.approx(0.5, abs=0.02)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}


def test_constant_scores_have_a_point_interval():
    assert bootstrap_ci([1, 1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_ci([0] * 10) == (0.0, 0.0)


def test_interval_contains_the_mean_and_is_seeded():
    scores = [1] * 30 + [0] * 70
    low, high = bootstrap_ci(scores, seed=3)
    assert low < 0.3 < high
    # binomial standard error sqrt(.3*.7/100) = 0.0458; 95% half-width about 0.09
    assert high - low == pytest.approx(2 * 1.96 * 0.0458, abs=0.03)
    assert bootstrap_ci(scores, seed=3) == (low, high)


def test_paired_bootstrap():
    same = paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0] and same["p_not_better"] == 1.0
    better = paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0])
    assert (
        better["difference"] == 1 and better["ci95"] == [1.0, 1.0] and better["p_not_better"] == 0.0
    )
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])


def test_ratio_bootstrap_is_exact_when_every_document_has_the_same_ratio():
    assert ratio_bootstrap_ci([2.0, 4.0, 6.0], [1, 2, 3]) == pytest.approx((2.0, 2.0))


def test_relative_improvement_as_the_study_reports_it():
    assert relative_improvement(0.30, 0.25) == pytest.approx(0.2)
    assert relative_improvement(0.20, 0.25) == pytest.approx(-0.2)
    assert relative_improvement(0.5, 0.0) is None
