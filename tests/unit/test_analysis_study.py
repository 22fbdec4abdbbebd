"""The study analysis on a small fixed table (records built with the eval's own record functions)."""

from __future__ import annotations

import json

import pytest

from alloylm.analysis.study import StudyInputs, analyse_study, load_study
from alloylm.errors import AlloyError
from alloylm.evals.results import accuracy_record, perplexity_record

# per model, per task: correct answers of questions q1, q2 (t1) and q1, q2 (t2)
TABLE = {
    "base": {"t1": [1, 0], "t2": [0, 0]},  # overall 0.25
    "sft": {"t1": [1, 1], "t2": [0, 0]},  # 0.50
    "partner": {"t1": [0, 0], "t2": [1, 0]},  # 0.25
    "merge": {"t1": [1, 1], "t2": [1, 1]},  # 1.00
}


def record(model: str, task: str, answers: list[int]) -> dict:
    predictions = [
        {
            "id": f"q{i + 1}",
            "gold": "A",
            "pred": "A" if a else "B",
            "parsed": True,
            "correct": bool(a),
        }
        for i, a in enumerate(answers)
    ]
    return {
        **accuracy_record(predictions, resamples=100, seed=0),
        "model": f"src:{model}",
        "task": task,
        "protocol": "cloze",
    }


def ppl(model: str, nll_per_token: float) -> dict:
    per_document = [(nll_per_token * 10, 10), (nll_per_token * 20, 20)]
    return {
        **perplexity_record(per_document, resamples=100, seed=0),
        "model": f"src:{model}",
        "task": "heldout",
        "protocol": "perplexity",
    }


def plan(models: list[dict]) -> dict:
    return {"version": 1, "study": "t", "eval_stage": "eval", "baseline": "base", "models": models}


MODELS = [
    {
        "id": "base",
        "role": "start",
        "eval_model": "src:base",
        "lineage": "instruct",
        "strategy": "none",
        "merged": False,
    },
    {
        "id": "partner",
        "role": "partner",
        "eval_model": "src:partner",
        "strategy": "none",
        "merged": False,
    },
    {
        "id": "sft",
        "role": "stage",
        "stage": "sft",
        "kind": "sft",
        "eval_model": "src:sft",
        "lineage": "instruct",
        "strategy": "CPT-SFT",
        "merged": False,
    },
    {
        "id": "merge",
        "role": "merge",
        "stage": "merge",
        "kind": "merge",
        "eval_model": "src:merge",
        "lineage": "instruct",
        "strategy": "CPT-SFT",
        "merged": True,
        "parents": ["sft", "partner"],
    },
]


@pytest.fixture
def study(tmp_path) -> dict:
    records = [record(m, t, a) for m, tasks in TABLE.items() for t, a in tasks.items()]
    records += [ppl("base", 2.0), ppl("sft", 1.0)]
    inputs = StudyInputs(tmp_path, plan(MODELS), records, {"resamples": 100, "seed": 0})
    return analyse_study(inputs)


def test_benchmarks_and_the_pooled_headline(study):
    keys = [b["key"] for b in study["benchmarks"]]
    assert keys == ["t1/cloze", "t2/cloze", "heldout/perplexity", "overall/cloze"]
    assert study["headline"] == "overall/cloze"
    overall = next(b for b in study["benchmarks"] if b["pooled"])
    assert overall["n"] == 4 and overall["tasks"] == ["t1", "t2"]


def test_per_model_scores_and_relative_improvement(study):
    models = {m["id"]: m for m in study["models"]}
    assert models["sft"]["scores"]["overall/cloze"]["score"] == pytest.approx(0.5)
    assert models["sft"]["scores"]["t1/cloze"]["score"] == pytest.approx(1.0)
    comparison = models["sft"]["vs_baseline"]["overall/cloze"]
    assert comparison["relative_improvement"] == pytest.approx(1.0)  # (0.5 - 0.25) / 0.25
    assert comparison["paired"]["difference"] == pytest.approx(0.25)
    # per question sft - base = 0, 1, 0, 0: (3/4)^4 = 32% of resamples miss the one gain, so
    # the interval starts at 0 and the verdict is "no evidence"
    assert comparison["verdict"].startswith("no evidence of a difference from base: +25.0 pp [0.0,")
    # three models against the base on overall/cloze: one family, Holm over 3
    assert comparison["family"] == "vs base on overall/cloze"
    assert comparison["correction"] == "Holm over 3" and comparison["verdict"].endswith(
        "(Holm over 3)"
    )
    assert models["base"]["vs_baseline"] == {}
    # perplexity exp(1) vs exp(2): lower is better, so the improvement is positive,
    # (e^2 - e) / e^2 = 1 - 1/e
    heldout = models["sft"]["vs_baseline"]["heldout/perplexity"]
    assert models["sft"]["scores"]["heldout/perplexity"]["score"] == pytest.approx(2.718281828)
    assert heldout["relative_improvement"] == pytest.approx(1 - 1 / 2.718281828)
    # every document is e times less perplexing for sft: the paired ratio is 1/e in every
    # resample; two documents give an interval, marked approximate
    assert heldout["paired_ratio"]["ratio"] == pytest.approx(1 / 2.718281828)
    assert heldout["paired_ratio"]["approximate"] is True
    assert heldout["verdict"].startswith("lower than base's: ratio x0.368 [0.368, 0.368]")
    assert "approximate" in heldout["verdict"]


def test_merge_numbers_by_hand(study):
    (merge,) = study["merges"]
    result = merge["benchmarks"]["overall/cloze"]
    assert (result["P1"], result["P2"], result["P_merged"]) == (0.5, 0.25, 1.0)
    assert result["E"] == pytest.approx(0.375)
    assert result["vs_expected"]["difference"] == pytest.approx(0.625)
    assert result["vs_best_parent"]["difference"] == pytest.approx(0.5)
    assert result["best_parent"] == "sft"
    assert result["diversity"] == pytest.approx(0.25)
    assert result["disagreement_rate"] == pytest.approx(0.75)
    assert result["emergent"] == ["t2::q2"] and result["lost"] == []
    # the merge is right everywhere, so its gap to sft is 0 only when a resample draws just the
    # two questions sft gets right: (2/4)^4 = 6.25% of resamples, above the 2.5% tail -> "beats
    # both" fails its intersection-union test; both paired differences are reported
    both = result["vs_parents"]
    assert both["vs_a"]["difference"] == pytest.approx(0.5)
    assert both["vs_b"]["difference"] == pytest.approx(0.75)
    assert both["p_beats_both"] == both["vs_a"]["p_greater"] > 0.025
    assert result["verdict_vs_best_parent"].startswith(
        "no evidence of synergy: vs sft +50.0 pp [0.0,"
    )
    assert "vs partner +75.0 pp" in result["verdict_vs_best_parent"]
    assert result["verdict_vs_best_parent"].endswith("(Holm over 2)")
    assert merge["benchmarks"]["t1/cloze"]["P2"] == 0.0


def test_one_merge_is_not_enough_for_the_analysis_across_merges(study):
    across = study["across"]
    assert across["merge_ids"] == ["merge"]
    assert (
        across["correlation"]["note"]
        == "not enough merges for a correlation matrix: needs 3, the study has 1"
    )
    assert across["kmeans"]["note"].startswith("not enough merges for K-means")
    assert across["dendrogram"]["linkage"] == []


def test_attributes_of_three_merges(tmp_path):
    models = list(MODELS[:3])
    records = [
        record(m, t, a) for m, tasks in TABLE.items() if m != "merge" for t, a in tasks.items()
    ]
    for i, (strategy, answers) in enumerate(
        [("CPT-SFT-DPO", [1, 1, 1, 1]), ("CPT-SFT-ORPO", [0, 1, 0, 0]), ("CPT", [1, 0, 1, 0])]
    ):
        name = f"m{i}"
        models.append(
            {
                "id": name,
                "role": "merge",
                "eval_model": f"src:{name}",
                "lineage": "base" if i == 2 else "instruct",
                "strategy": strategy,
                "merged": True,
                "parents": ["sft", "partner"],
            }
        )
        records += [record(name, "t1", answers[:2]), record(name, "t2", answers[2:])]
    study = analyse_study(
        StudyInputs(tmp_path, plan(models), records, {"resamples": 50, "seed": 0})
    )
    across = study["across"]
    assert across["merge_ids"] == ["m0", "m1", "m2"]
    assert across["attributes"]["SFT"] == [1.0, 1.0, 0.0]
    assert across["attributes"]["DPO"] == [1.0, 0.0, 0.0] and across["attributes"]["ORPO"] == [
        0.0,
        1.0,
        0.0,
    ]
    assert across["attributes"]["Instruct"] == [1.0, 1.0, 0.0]
    assert across["attributes"]["performance"] == [1.0, 0.25, 0.5]
    assert across["attributes"]["improvement"] == pytest.approx([0.625, -0.125, 0.125])
    assert "diversity" in across["correlation"]["constant"]  # the same parents for all three
    assert len(across["kmeans"]["labels"]) == 3 and len(across["dendrogram"]["linkage"]) == 2


def test_a_model_without_records_is_named(tmp_path):
    models = [*MODELS, {"id": "ghost", "role": "stage", "eval_model": "src:ghost", "merged": False}]
    records = [record(m, t, a) for m, tasks in TABLE.items() for t, a in tasks.items()]
    study = analyse_study(StudyInputs(tmp_path, plan(models), records, {}))
    assert any("ghost" in note for note in study["notes"])


def test_load_study_says_what_to_run(tmp_path):
    with pytest.raises(AlloyError, match="holds no study_plan.json") as error:
        load_study(tmp_path)
    assert "alloy study run" in error.value.hint
    (tmp_path / "study_plan.json").write_text(json.dumps(plan(MODELS)))
    with pytest.raises(AlloyError, match="has not finished"):
        load_study(tmp_path)
    (tmp_path / "study_plan.json").write_text("{")
    with pytest.raises(AlloyError, match="not valid JSON"):
        load_study(tmp_path)


def test_no_merges_and_no_accuracy_task_draw_notes_not_errors(tmp_path):
    from alloylm.analysis.plots import all_figures
    from alloylm.analysis.report import render_html

    no_merges = analyse_study(
        StudyInputs(
            tmp_path,
            plan(MODELS[:3]),
            [
                record(m, t, a)
                for m, tasks in TABLE.items()
                if m != "merge"
                for t, a in tasks.items()
            ],
            {},
        )
    )
    assert no_merges["merges"] == [] and no_merges["across"]["merge_ids"] == []
    assert no_merges["across"]["correlation"]["note"].endswith("needs 3, the study has 0")
    only_perplexity = analyse_study(
        StudyInputs(tmp_path, plan(MODELS), [ppl("base", 2.0), ppl("merge", 1.5)], {})
    )
    assert only_perplexity["headline"] is None
    assert only_perplexity["across"]["notes"] == [
        "no accuracy benchmark: nothing to analyse across merges"
    ]
    for study in (no_merges, only_perplexity):
        figures = {f.id: f for f in all_figures(study)}
        assert figures["fig-expected"].svg is None and figures["fig-expected"].note
        assert figures["fig-correlation"].svg is None and figures["fig-correlation"].note
        assert figures["fig-lineage"].svg is not None
        html = render_html(study, list(figures.values()))
        assert "Not drawn: " in html and "<svg" in html
    assert all_figures(only_perplexity)[0].note == "no accuracy benchmark was evaluated"


def test_the_report_says_how_many_tensors_slerp_took_spherically(study):
    from markupsafe import escape

    from alloylm.analysis.plots import all_figures
    from alloylm.analysis.report import merge_rows, render_html, slerp_paths

    assert slerp_paths(study) is None  # no merge manifest: nothing said
    (merge,) = study["merges"]
    twin = {**merge, "id": "merge2"}
    merge["linear_fallback"] = {"tensors": 272, "fallback": 61, "share": 0.2243}
    twin["linear_fallback"] = {"tensors": 272, "fallback": 272, "share": 1.0}
    study["merges"].append(twin)
    header, rows = merge_rows(study)
    column = header.index("SLERP spherical")
    assert [row[column] for row in rows] == ["211 of 272", "0 of 272"]
    sentence = slerp_paths(study)
    assert sentence.startswith(
        "SLERP took the spherical path on 211 of 544 tensors over 2 merges (per merge 0 to 211); "
        "the other 333 took its linear fallback"
    )
    assert "linear interpolation only" not in sentence
    assert str(escape(sentence)) in render_html(study, all_figures(study))
    merge["linear_fallback"] = {"tensors": 272, "fallback": 272, "share": 1.0}
    assert slerp_paths(study).endswith("These merges test linear interpolation only.")
