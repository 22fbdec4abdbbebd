"""Bootstrap intervals, paired bootstrap and relative improvement on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from alloylm.evals.results import add_baseline_comparisons, perplexity_record
from alloylm.evals.stats import (
    bootstrap_ci,
    bootstrap_indices,
    paired_bootstrap,
    paired_ratio_bootstrap,
    percentile_interval,
    ratio_bootstrap_ci,
    ratio_interval,
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


def test_paired_bootstrap_tails_by_hand():
    # differences per question a - b = 1, 0: a resampled mean difference is 0, 1/2, 1 with
    # probability 1/4, 1/2, 1/4; so P*(d <= 0) = 1/4 (p_greater), P*(d >= 0) = 1 (p_less),
    # two-sided p = 2 x 1/4, and the 95% interval is [0, 1]
    result = paired_bootstrap([1, 0], [0, 0], resamples=4000, seed=1)
    assert result["difference"] == 0.5 and result["ci95"] == [0.0, 1.0]
    assert result["p_greater"] == pytest.approx(0.25, abs=0.02)
    assert result["p_less"] == 1.0 and result["p"] == pytest.approx(0.5, abs=0.04)
    # the pairing matters: b is a shifted by one question on 20 questions (diff +1 on one item
    # only), so the difference is 1/20 and a resample misses that item with (19/20)^20 = 36%
    a = [1] * 10 + [0] * 10
    b = [1] * 9 + [0] * 11
    paired = paired_bootstrap(a, b, resamples=4000, seed=2)
    assert paired["difference"] == pytest.approx(0.05)
    assert paired["p_greater"] == pytest.approx((19 / 20) ** 20, abs=0.03)
    with pytest.raises(ValueError):
        paired_bootstrap([1, 0], [1])


def test_paired_ratio_of_perplexities_by_hand():
    # model a: NLL/token 1.0 and 3.0 on two documents of 10 tokens; b: 10% lower on each.
    # ppl_a / ppl_b: a resample's log ratio is 0.1 x (a's NLL/token of that resample): 0.1, 0.2,
    # 0.3 with probability 1/4, 1/2, 1/4 (sd sqrt(0.005)); overall 0.2. The t-based interval:
    # se = sqrt(0.005) x sqrt(2 / 1) = 0.1, t(1 df, 97.5%) = 12.706, p = 2 P(T1 > 2) = 0.2952
    result = paired_ratio_bootstrap([10, 30], [10, 10], [9, 27], [10, 10], resamples=4000)
    assert result["ratio"] == pytest.approx(np.exp(0.2))
    assert result["se"] == pytest.approx(0.1, rel=0.03)
    low, high = result["ci95"]
    assert np.log(low) == pytest.approx(0.2 - 1.2706, abs=0.04)
    assert np.log(high) == pytest.approx(0.2 + 1.2706, abs=0.04)
    assert result["p"] == pytest.approx(0.2952, abs=0.01)  # two documents: no evidence
    # every resample the same: a point interval, p = 0
    same = paired_ratio_bootstrap([10, 30], [10, 10], [5, 25], [10, 10], resamples=100)
    assert same["ci95"] == [same["ratio"], same["ratio"]] == [pytest.approx(np.exp(0.5))] * 2
    assert same["p"] == 0.0 and same["p_greater"] == 0.0
    assert result["approximate"] is True and "only 2 documents" in result["ci_note"]
    one = paired_ratio_bootstrap([10], [10], [9], [10])
    assert one["ci95"] == [None, None] and one["p"] == 1.0


def test_no_perplexity_interval_from_one_document_and_approximate_below_30():
    # issue 23 defect 5: one document gave a zero-width interval
    record = perplexity_record([(20.0, 10)], resamples=100, seed=0)
    assert record["ci95"] == [None, None] and "no interval" in record["ci_note"]
    eight = perplexity_record([(float(i + 10), 10) for i in range(8)], resamples=100, seed=0)
    assert eight["ci95"][0] < eight["score"] < eight["ci95"][1]
    assert eight["approximate"] is True
    thirty = perplexity_record([(float(i + 10), 10) for i in range(30)], resamples=100, seed=0)
    assert thirty["approximate"] is False and thirty["ci_note"] is None


def test_a_resample_with_no_denominator_gives_no_interval():
    # extract F1 over passages where one has no field at all: a resample of only that passage
    # divides 0 by 0 (two passages: 1/4 of resamples); the interval was NaN
    assert ratio_bootstrap_ci([0.0, 2.0], [0.0, 2.0], resamples=200) == (None, None)
    interval = ratio_interval([0.0, 2.0], [0.0, 2.0], resamples=200, what="passages")
    assert interval["ci95"] == [None, None] and "denominator of 0" in interval["ci_note"]


def test_perplexity_improvement_is_positive_when_perplexity_falls():
    # issue 23 defect 8: models.csv labels it an improvement
    assert relative_improvement(8.0, 10.0, higher_is_better=False) == pytest.approx(0.2)
    records = [
        {**perplexity_record([(20.0 + i, 10) for i in range(3)], resamples=50, seed=0),
         "model": "base", "task": "h", "protocol": "perplexity"},
        {**perplexity_record([(10.0 + i, 10) for i in range(3)], resamples=50, seed=0),
         "model": "tuned", "task": "h", "protocol": "perplexity"},
    ]  # fmt: skip
    add_baseline_comparisons(records, "base", resamples=50, seed=0)
    comparison = records[1]["vs_baseline"]
    assert comparison["relative_improvement"] > 0
    assert comparison["paired"]["ratio"] < 1 and comparison["verdict"] == "better"


def test_ratio_bootstrap_is_exact_when_every_document_has_the_same_ratio():
    assert ratio_bootstrap_ci([2.0, 4.0, 6.0], [1, 2, 3]) == pytest.approx((2.0, 2.0))


def test_relative_improvement_as_the_study_reports_it():
    assert relative_improvement(0.30, 0.25) == pytest.approx(0.2)
    assert relative_improvement(0.20, 0.25) == pytest.approx(-0.2)
    assert relative_improvement(0.5, 0.0) is None


def test_the_eval_table_prints_the_paired_difference_and_its_verdict():
    # the quickstart printed "+19.4 %" on 100 questions; it now prints the paired difference with
    # its interval and the verdict words, Holm over the models compared with the baseline
    from alloylm.evals.results import accuracy_record, format_table

    def scored(model: str, right: int, n: int = 40) -> dict:
        predictions = [{"id": f"q{i}", "correct": i < right, "parsed": True} for i in range(n)]
        record = accuracy_record(predictions, resamples=200, seed=0)
        return {**record, "model": model, "task": "t", "protocol": "cloze"}

    records = [scored("base", 20), scored("tuned", 40), scored("same", 20)]
    add_baseline_comparisons(records, "base", resamples=200, seed=0)
    table = format_table(records)
    tuned = next(line for line in table.splitlines() if line.startswith("tuned"))
    # tuned is right wherever base is, and on 20 more: +50 pp, every resample above 0
    assert "+50.0 pp [" in tuned and tuned.endswith("better (holm)")
    same = next(line for line in table.splitlines() if line.startswith("same"))
    assert "+0.0 pp [0.0, 0.0] no evidence of a difference (holm)" in same
    assert "paired verdicts vs base on t/cloze (2 models): Holm step-down, family-wise 5%" in table
