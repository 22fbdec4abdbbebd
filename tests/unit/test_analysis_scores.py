"""Per-model scores and the interpolation curve on hand-computed cases."""

from __future__ import annotations

import pytest

from alloylm.analysis.scores import (
    accuracy_with_interval,
    correct_by_id,
    improvement_over_baseline,
    interpolation_curve,
    pooled_correct,
)


def test_accuracy_with_interval():
    assert accuracy_with_interval([True] * 5) == {"score": 1.0, "ci95": [1.0, 1.0], "n": 5}
    result = accuracy_with_interval([True, False, False, False], resamples=200)
    assert result["score"] == 0.25 and 0.0 <= result["ci95"][0] <= 0.25 <= result["ci95"][1]
    assert accuracy_with_interval([])["score"] is None


def test_pooled_correct_keeps_same_ids_of_two_tasks_apart():
    first = {"task": "a", "predictions": [{"id": "1", "correct": True}]}
    second = {"task": "b", "predictions": [{"id": "1", "correct": False}]}
    assert correct_by_id(first) == {"1": True}
    assert pooled_correct([first, second]) == {"a::1": True, "b::1": False}


def test_improvement_over_baseline_by_hand():
    mine = {"q1": True, "q2": True, "q3": False, "q4": False}
    base = {"q1": True, "q2": False, "q3": False, "q4": False, "q5": True}  # q5: not shared
    result = improvement_over_baseline(mine, base, resamples=100)
    assert result["relative_improvement"] == pytest.approx(1.0)  # (0.5 - 0.25) / 0.25
    assert result["paired"]["difference"] == pytest.approx(0.25) and result["paired"]["n"] == 4
    assert improvement_over_baseline({"x": True}, base) is None


def test_curve_inner_point_beating_both_ends():
    ids = [f"q{i}" for i in range(40)]
    low_end = {k: i % 2 == 0 for i, k in enumerate(ids)}
    high_end = {k: i % 2 == 1 for i, k in enumerate(ids)}
    middle = dict.fromkeys(ids, True)
    curve = interpolation_curve([(1.0, high_end), (0.0, low_end), (0.5, middle)], resamples=300)
    assert [p["t"] for p in curve["points"]] == [0.0, 0.5, 1.0]  # sorted by t
    assert [p["score"] for p in curve["points"]] == [0.5, 1.0, 0.5]
    middle_row = curve["points"][1]
    # right everywhere, each end right on half: +50 pp against either end, and a resample has a
    # gap <= 0 only if it draws no question the end gets wrong: 2^-40, never in 300 resamples
    assert middle_row["vs_low_end"]["difference"] == pytest.approx(0.5)
    assert middle_row["vs_high_end"]["difference"] == pytest.approx(0.5)
    assert middle_row["p_beats_both"] == 0.0
    assert curve["verdict"].startswith("t = 0.5 beats both ends (by +50.0 pp over the better end")


def test_curve_without_an_inner_point_or_evidence():
    ends = [(0.0, {"q": True}), (1.0, {"q": False})]
    assert "fewer than three points" in interpolation_curve(ends)["verdict"]
    flat = {f"q{i}": i % 2 == 0 for i in range(20)}
    curve = interpolation_curve([(0.0, flat), (0.5, flat), (1.0, flat)], resamples=100)
    assert curve["verdict"].startswith("no evidence that any inner point beats both ends")
