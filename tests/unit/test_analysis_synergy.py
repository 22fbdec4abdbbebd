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
    gap_to_expected,
    score_diversity,
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


def test_analyse_merge_reports_both_paired_differences():
    # the merge copies parent a; b is right on the other half: vs a exactly 0 in every resample,
    # vs b 0 on average with spread; neither "beats both" (p = 1) nor "falls short" of a
    a = [1, 0] * 20
    b = [0, 1] * 20
    result = analyse_merge(
        {f"q{i}": bool(v) for i, v in enumerate(a)},
        {f"q{i}": bool(v) for i, v in enumerate(a)},
        {f"q{i}": bool(v) for i, v in enumerate(b)},
        resamples=500,
        seed=1,
    )
    both = result["vs_parents"]
    assert both["vs_a"]["ci95"] == [0.0, 0.0] and both["vs_a"]["p_greater"] == 1.0
    assert both["vs_b"]["difference"] == 0.0 and both["vs_b"]["ci95"][0] < -0.1
    assert both["p_beats_both"] == 1.0
    # falls short of b needs P*(m - b >= 0) < 1.25%: about half the resamples are >= 0
    assert 0.3 < both["vs_b"]["p_less"] < 0.7 and both["p"] == 1.0


def test_diversity_and_disagreement():
    assert score_diversity(0.31, 0.36) == pytest.approx(0.05)
    assert disagreement_rate([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)


def test_verdicts_say_the_interval_in_words():
    from alloylm.analysis.verdicts import words_vs_expected, words_vs_parents

    assert format_pp(0.021, [0.004, 0.039]) == "+2.1 pp [0.4, 3.9]"
    up = {"difference": 0.021, "ci95": [0.004, 0.039], "significant": True, "correction": "none"}
    flat = {"difference": 0.003, "ci95": [-0.015, 0.02], "significant": False}
    assert words_vs_expected(up) == "beats its parents' mean by +2.1 pp [0.4, 3.9]"
    assert words_vs_expected(flat).startswith("no evidence it differs from its parents' mean")
    down = {"difference": -0.03, "ci95": [-0.05, -0.01], "significant": True,
            "correction": "Holm over 4"}  # fmt: skip
    assert (
        words_vs_expected(down)
        == "falls below its parents' mean: -3.0 pp [-5.0, -1.0] (Holm over 4)"
    )
    parents = {"vs_a": {**down, "p_less": 0.001}, "vs_b": {**up, "p_less": 0.9},
               "direction": "down", "significant": True, "correction": "Holm over 4"}  # fmt: skip
    assert words_vs_parents(parents, ("sft", "instruct")) == (
        "falls short of sft: vs sft -3.0 pp [-5.0, -1.0], vs instruct +2.1 pp [0.4, 3.9] (Holm over 4)"
    )
