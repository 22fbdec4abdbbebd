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


# --- the study's per-merge analysis ----------------------------------------------------------------

from alloylm.analysis.synergy import (  # noqa: E402
    analyse_merge,
    disagreement_rate,
    emergent_and_lost,
    format_pp,
    gap_to_best_of_two,
    gap_to_expected,
    score_diversity,
    verdict_vs_baseline,
    verdict_vs_best_parent,
    verdict_vs_expected,
)


def test_analyse_merge_by_hand():
    # q1..q4: parent a right on q1; parent b on q2, q4; the merge on q1, q2, q3
    merged = {"q1": True, "q2": True, "q3": True, "q4": False}
    a = {"q1": True, "q2": False, "q3": False, "q4": False}
    b = {"q1": False, "q2": True, "q3": False, "q4": True}
    result = analyse_merge(merged, a, b, resamples=200, seed=0)
    assert result["n"] == 4
    assert (result["P1"], result["P2"], result["P_merged"]) == (0.25, 0.5, 0.75)
    assert result["E"] == pytest.approx(0.375)
    assert result["vs_expected"]["difference"] == pytest.approx(0.375)  # 0.75 - 0.375
    assert result["vs_best_parent"]["difference"] == pytest.approx(0.25)  # 0.75 - 0.5
    assert result["diversity"] == pytest.approx(0.25)  # |0.25 - 0.5|
    assert result["disagreement_rate"] == pytest.approx(0.75)  # q1, q2, q4: exactly one right
    assert result["emergent"] == ["q3"] and result["lost"] == []


def test_only_questions_all_three_answered_are_compared():
    merged = {"q1": True, "q2": False, "extra": True}
    a = {"q1": True, "q2": True}
    b = {"q1": False, "q2": True, "other": True}
    result = analyse_merge(merged, a, b, resamples=50)
    assert result["n"] == 2
    assert result["lost"] == ["q2"]  # both parents right, the merge wrong
    assert emergent_and_lost(merged, a, b) == {"emergent": [], "lost": ["q2"]}
    with pytest.raises(ValueError, match="share no question"):
        analyse_merge({"x": True}, a, b)


def test_gap_to_expected_is_the_paired_difference_to_the_parents_mean():
    merged, a, b = [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]
    gap = gap_to_expected(merged, a, b, resamples=100, seed=0)
    # E = (0.25 + 0.75) / 2 = 0.5; per question m - (a+b)/2 = 0, 0.5, -0.5, 0 -> mean 0
    assert gap["difference"] == pytest.approx(0.0)
    assert gap["ci95"][0] < 0 < gap["ci95"][1]


def test_gap_to_best_of_two_rechooses_the_best_parent_in_every_resample():
    # parents equally good on complementary questions; the merge copies parent a. With the best
    # parent fixed (a), every resampled gap would be 0; re-chosen per resample it is <= 0, mostly < 0.
    a = [1, 0] * 20
    b = [0, 1] * 20
    gap = gap_to_best_of_two(a, a, b, resamples=500, seed=1)
    assert gap["difference"] == pytest.approx(0.0)
    assert gap["ci95"][1] == pytest.approx(0.0) and gap["ci95"][0] < -0.05
    assert gap["p_not_better"] == pytest.approx(1.0)


def test_gap_to_best_of_two_without_variation_has_a_point_interval():
    gap = gap_to_best_of_two([1, 1, 1], [0, 0, 0], [1, 0, 1], resamples=100)
    # every question the merge right; best parent b at 2/3 -> +1/3; one question resampled alone
    # can give b 0 or 1, so the interval is [0, 1]
    assert gap["difference"] == pytest.approx(1 / 3)
    assert gap["ci95"][0] >= 0.0 and gap["ci95"][1] <= 1.0
    single = gap_to_best_of_two([1], [0], [0], resamples=20)
    assert single["ci95"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="same questions"):
        gap_to_best_of_two([1, 0], [1], [0, 1])


def test_diversity_and_disagreement():
    assert score_diversity(0.31, 0.36) == pytest.approx(0.05)
    assert disagreement_rate([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)


def test_verdicts_say_the_interval_in_words():
    assert format_pp(0.021, [0.004, 0.039]) == "+2.1 pp [0.4, 3.9]"
    up = {"difference": 0.021, "ci95": [0.004, 0.039]}
    flat = {"difference": 0.003, "ci95": [-0.015, 0.02]}
    down = {"difference": -0.03, "ci95": [-0.05, -0.01]}
    assert verdict_vs_best_parent(up, "sft") == "beats its best parent (sft) by +2.1 pp [0.4, 3.9]"
    assert verdict_vs_best_parent(flat) == (
        "no evidence of synergy: +0.3 pp [-1.5, 2.0] against its best parent"
    )
    assert verdict_vs_best_parent(down).startswith("falls short of its best parent: -3.0 pp")
    assert verdict_vs_expected(up) == "beats its parents' mean by +2.1 pp [0.4, 3.9]"
    assert verdict_vs_expected(flat).startswith("no evidence it differs from its parents' mean")
    assert verdict_vs_expected(down).startswith("falls below its parents' mean")
    assert verdict_vs_baseline(down, "instruct") == "worse than instruct: -3.0 pp [-5.0, -1.0]"
    assert verdict_vs_baseline(up, "instruct").startswith("better than instruct by +2.1 pp")
