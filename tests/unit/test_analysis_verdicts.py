"""Every verdict's test, family and correction (alloylm.analysis.verdicts), on hand-computed cases,
and the cases of issue 23 that the earlier tests got wrong (each fails on the code before it)."""

from __future__ import annotations

import numpy as np
import pytest

from alloylm.analysis.scores import interpolation_curve
from alloylm.analysis.study import StudyInputs, analyse_study
from alloylm.analysis.verdicts import (
    correct_family,
    family_sentence,
    inner_point_test,
    strategy_matrix,
    versus_both_parents,
    words_vs_baseline,
)
from alloylm.evals.results import accuracy_record, perplexity_record
from alloylm.evals.stats import holm_adjust, tail_p_values


def test_holm_by_hand():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max so far 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5]) == [0.5]
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0]  # capped at 1


def test_bootstrap_tail_p_values_by_hand():
    tails = tail_p_values(np.array([-1.0, 0.0, 1.0, 2.0]))
    # P*(d <= 0) = 2/4, P*(d >= 0) = 3/4, two-sided = min(1, 2 x 0.5)
    assert tails == {"p_greater": 0.5, "p_less": 0.75, "p": 1.0}


def test_correct_family_marks_the_survivors_and_names_the_correction():
    verdicts = [{"p": 0.01}, {"p": 0.04}, {"p": 0.03}, {"p": 0.005}]
    correct_family(verdicts, family="f", correction="holm")
    assert [v["significant"] for v in verdicts] == [True, False, False, True]
    assert {v["correction"] for v in verdicts} == {"Holm over 4"}
    off = [{"p": 0.01}, {"p": 0.04}]
    correct_family(off, family="f", correction="none")
    assert [v["significant"] for v in off] == [True, True] and off[0]["correction"] == "none"
    with pytest.raises(ValueError, match="unknown correction"):
        correct_family(off, family="f", correction="bonferroni")
    assert "Holm's step-down correction over its 4 verdicts" in family_sentence(
        "f", "merge", 4, "holm", 2
    )


def test_intersection_union_by_hand():
    # the merge equals parent a and beats b everywhere: "beats both" needs both, so p = 1
    same = versus_both_parents([1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], resamples=50)
    assert same["p_beats_both"] == 1.0 and same["p_falls_short"] == 1.0 and same["p"] == 1.0
    # right everywhere both parents are wrong everywhere: every resample's differences are +1
    up = versus_both_parents([1, 1, 1], [0, 0, 0], [0, 0, 0], resamples=50)
    assert up["p_beats_both"] == 0.0 and up["p"] == 0.0 and up["direction"] == "up"
    # wrong everywhere one parent is right: falls short, Bonferroni doubles its p (0 stays 0)
    down = versus_both_parents([0, 0, 0], [1, 1, 1], [0, 0, 0], resamples=50)
    assert down["p_falls_short"] == 0.0 and down["direction"] == "down"


def _issue_case() -> tuple[list[float], list[float], list[float]]:
    """Issue 23's failing case: parents tie on complementary questions, the merge a bit below."""
    a = [1.0, 0.0] * 168
    b = [1.0 - x for x in a]
    m = [1.0, 1.0, 0.0, 0.0] * 84
    flipped = 0
    for i, value in enumerate(m):
        if value == 1.0 and flipped < 14:
            m[i], flipped = 0.0, flipped + 1
    return m, a, b


def _accuracy(model: str, answers: list[float], task: str = "t") -> dict:
    predictions = [
        {"id": f"q{i}", "gold": "A", "pred": "A", "parsed": True, "correct": bool(v)}
        for i, v in enumerate(answers)
    ]
    return {
        **accuracy_record(predictions, resamples=100, seed=0),
        "model": f"src:{model}",
        "task": task,
        "protocol": "cloze",
    }


def _plan(models: list[dict], curves: list[dict] | None = None) -> dict:
    return {"version": 1, "study": "t", "eval_stage": "eval", "baseline": "base",
            "models": models, "curves": curves or []}  # fmt: skip


def _model(name: str, **extra) -> dict:
    return {"id": name, "eval_model": f"src:{name}", "merged": False, **extra}


def test_a_merge_tied_with_both_parents_does_not_fall_short(tmp_path):
    # issue 23 defect 1: a percentile bootstrap of m - max(a, b), the best parent re-chosen per
    # resample, read "falls short" here although both paired intervals contain 0
    m, a, b = _issue_case()
    models = [_model("base"), _model("a"), _model("b"),
              _model("m", merged=True, parents=["a", "b"])]  # fmt: skip
    records = [_accuracy("base", a), _accuracy("a", a), _accuracy("b", b), _accuracy("m", m)]
    study = analyse_study(StudyInputs(tmp_path, _plan(models), records, {"resamples": 1000}))
    result = study["merges"][0]["benchmarks"]["t/cloze"]
    assert not result["verdict_vs_best_parent"].startswith("falls short")
    low, high = result["vs_best_parent"]["ci95"]
    assert low < 0 < high


def test_the_curve_corrects_for_picking_its_best_inner_point():
    # issue 23 defect 2: three inner points; the best one's unadjusted interval against the
    # better end is above 0 (it read "beats both ends"), but not after Bonferroni over 3
    n = 120
    low_end = {f"q{i}": i % 2 == 0 for i in range(n)}
    high_end = {f"q{i}": i % 2 == 1 for i in range(n)}
    best = {f"q{i}": i % 4 < 2 or i < 40 for i in range(n)}
    flat1 = {f"q{i}": i % 4 in (0, 3) for i in range(n)}
    flat2 = {f"q{i}": i % 4 in (1, 2) for i in range(n)}
    points = [(0.0, low_end), (0.25, best), (0.5, flat1), (0.75, flat2), (1.0, high_end)]
    curve = interpolation_curve(points, resamples=1000, seed=0)
    assert curve["verdict"].startswith("no evidence that any inner point beats both ends")
    assert "t = 0.25" in curve["verdict"]


def test_inner_point_test_is_bonferroni_over_the_inner_points():
    ends = ([0.0] * 6, [0.0] * 6)
    test = inner_point_test([[1.0] * 6, [0.0] * 6], *ends, resamples=50)
    assert test["best"] == 0 and test["k"] == 2 and test["p"] == 0.0
    flat = inner_point_test([[0.0] * 6] * 3, *ends, resamples=50)
    assert flat["p"] == 1.0  # min(1, 2 x 3 x 1)


def test_perplexity_is_compared_by_a_paired_ratio_not_overlapping_intervals(tmp_path):
    # issue 23 defect 4: 8 documents of very different difficulty, model sft 5% lower NLL on
    # every one; the per-model intervals overlap, the paired ratio is exp(-0.05 x NLL/token) < 1
    # in every resample
    difficulty = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    docs = [(d * 100, 100) for d in difficulty]

    def ppl(model: str, factor: float) -> dict:
        return {**perplexity_record([(nll * factor, t) for nll, t in docs], resamples=1000,
                                    seed=0),
                "model": f"src:{model}", "task": "heldout", "protocol": "perplexity"}  # fmt: skip

    models = [_model("base"), _model("sft")]
    study = analyse_study(
        StudyInputs(tmp_path, _plan(models), [ppl("base", 1.0), ppl("sft", 0.95)], {})
    )
    sft = next(m for m in study["models"] if m["id"] == "sft")
    comparison = sft["vs_baseline"]["heldout/perplexity"]
    assert comparison["verdict"].startswith("lower than base's")
    # 0.05 x mean NLL/token (2.75) = 0.1375 -> ratio exp(-0.1375)
    assert comparison["paired_ratio"]["ratio"] == pytest.approx(np.exp(-0.1375))
    assert comparison["relative_improvement"] > 0  # lower perplexity is an improvement


def test_strategy_matrix_and_best_strategy_verdict():
    n = 40
    strong = {f"q{i}": True for i in range(n)}
    weak = {f"q{i}": i % 2 == 0 for i in range(n)}
    weaker = {f"q{i}": i % 4 == 0 for i in range(n)}
    matrix = strategy_matrix({"cpt": strong, "sft": weak, "dpo": weaker}, resamples=200)
    assert len(matrix["pairs"]) == 3 and matrix["best"] == "cpt"
    assert matrix["verdict"].startswith("cpt is best")
    tied = strategy_matrix({"cpt": weak, "sft": dict(weak)}, resamples=200)
    assert tied["best"] is None and tied["verdict"].startswith("not separated")
    assert tied["pairs"][0]["verdict"].startswith("not separated: cpt - sft = +0.0 pp")


def test_holm_can_turn_a_verdict_into_no_evidence(tmp_path):
    verdict = {"difference": 0.05, "ci95": [0.01, 0.09], "p": 0.02}
    correct_family([verdict, {"p": 0.5}, {"p": 0.6}], family="f", correction="holm")
    assert verdict["p_adjusted"] == pytest.approx(0.06)
    assert words_vs_baseline(verdict, "base") == (
        "no evidence of a difference from base: +5.0 pp [1.0, 9.0] (Holm over 3)"
    )
    correct_family([verdict, {"p": 0.5}, {"p": 0.6}], family="f", correction="none")
    assert words_vs_baseline(verdict, "base") == "better than base by +5.0 pp [1.0, 9.0]"


def test_the_correction_is_a_setting_of_the_analysis(tmp_path):
    m, a, b = _issue_case()
    models = [_model("base"), _model("a"), _model("b")]
    records = [_accuracy("base", b), _accuracy("a", a), _accuracy("b", m)]
    inputs = StudyInputs(tmp_path, _plan(models), records, {"resamples": 200})
    holm = analyse_study(inputs)
    none = analyse_study(inputs, correction="none")
    assert holm["verdicts"]["correction"] == "holm" and none["verdicts"]["correction"] == "none"
    (family,) = holm["verdicts"]["families"]
    assert family["family"] == "vs base on t/cloze" and family["size"] == 2
    assert "Holm's step-down" in family["sentence"]
    assert "turned off" in none["verdicts"]["families"][0]["sentence"]


def test_the_confirmation_split_chooses_on_dev_and_tests_once_on_confirm(tmp_path):
    # s1 is the best strategy on the dev questions (selection), then tested once against the
    # base on the confirmation questions, where it is no better: the headline says so
    n = 60
    dev = {"base": [0.0] * n, "s1": [1.0] * 40 + [0.0] * 20, "s2": [1.0] * 30 + [0.0] * 30}
    conf = {"base": [1.0, 0.0] * 30, "s1": [1.0, 0.0] * 30, "s2": [1.0] * n}
    models = [_model("base"), _model("s1", strategy="CPT"), _model("s2", strategy="CPT-SFT")]
    records = [_accuracy(m, dev[m], task="dev") for m in dev]
    records += [_accuracy(m, conf[m], task="conf") for m in conf]
    plan = {**_plan(models), "confirm_tasks": ["conf"]}
    study = analyse_study(StudyInputs(tmp_path, plan, records, {"resamples": 200}))
    assert study["headline"] == "dev/cloze" and study["confirm_headline"] == "conf/cloze"
    confirmed = study["confirmed"]
    (claim,) = confirmed["claims"]
    assert claim["model"] == "s1" and claim["selection_score"] == pytest.approx(40 / 60)
    assert claim["verdict"].startswith("no evidence of a difference from base: +0.0 pp")
    # no verdict of the ordinary families is drawn on the confirmation questions
    s2 = next(m for m in study["models"] if m["id"] == "s2")
    assert "conf/cloze" in s2["scores"] and "conf/cloze" not in s2["vs_baseline"]
    assert study["verdicts"]["families"][0]["family"] == "confirmed on conf/cloze"
    # the report's first section gives the confirmed verdict, the dev figure marked as selection
    from alloylm.analysis.plots import all_figures
    from alloylm.analysis.report import render_html, summary_rows

    html = render_html(study, all_figures(study))
    assert html.index('id="confirmed"') < html.index('id="verdicts"') < html.index('id="models"')
    assert "best strategy vs the baseline" in html and "66.7% (selection)" in html
    assert "Family &#39;confirmed on conf/cloze&#39;" in html
    assert summary_rows(study)[0][4] == "dev/cloze [95% CI] (selection)"
