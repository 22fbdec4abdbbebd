"""Per-model scores of a study: accuracy per benchmark and overall with 95% bootstrap intervals,
relative improvement over the baseline, and the weight-interpolation curve of a merge.

Intervals are the percentile bootstrap of `alloylm.evals.stats` (the eval's own method, seed and
resample count), so a per-benchmark interval here equals the one in the eval record. "Overall"
pools the questions of every accuracy benchmark scored with one protocol (each question weighs the
same); the same question under two protocols is never pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alloylm.analysis.verdicts import correct_family, inner_point_test, words_curve
from alloylm.evals.stats import bootstrap_ci, paired_bootstrap, relative_improvement


def correct_by_id(record: dict[str, Any], prefix: str = "") -> dict[str, bool]:
    """{question id: answered right} of an accuracy record (ids prefixed to pool several tasks)."""
    return {f"{prefix}{p['id']}": bool(p["correct"]) for p in record.get("predictions") or []}


def accuracy_with_interval(
    correct: Sequence[bool], *, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    values = [1.0 if v else 0.0 for v in correct]
    if not values:
        return {"score": None, "ci95": [None, None], "n": 0}
    low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {"score": sum(values) / len(values), "ci95": [low, high], "n": len(values)}


def pooled_correct(records: Sequence[dict[str, Any]]) -> dict[str, bool]:
    """Per-question correctness of several accuracy records of one model, ids made unique by task."""
    pooled: dict[str, bool] = {}
    for record in records:
        pooled.update(correct_by_id(record, prefix=f"{record['task']}::"))
    return pooled


def improvement_over_baseline(
    mine: dict[str, bool],
    baseline: dict[str, bool],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """(P - P_base)/P_base and the paired difference P - P_base over the questions both answered."""
    shared = [key for key in mine if key in baseline]
    if not shared:
        return None
    a = [float(mine[k]) for k in shared]
    b = [float(baseline[k]) for k in shared]
    paired = paired_bootstrap(a, b, resamples=resamples, seed=seed)
    return {
        "relative_improvement": relative_improvement(sum(a) / len(a), sum(b) / len(b)),
        "paired": paired,
    }


def interpolation_curve(
    points: Sequence[tuple[float, dict[str, bool]]],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy with its interval at each t, and whether an inner point beats both ends.

    `points` are (t, {question id: correct}); the ends are the smallest and largest t. The verdict
    is `verdicts.inner_point_test`: every inner point against both ends (intersection-union),
    Bonferroni over the inner points; its `p` is corrected again across curves by the study
    (`correct_family`). Alone, this function treats the curve as a family of one.
    """
    ordered = sorted(points, key=lambda point: point[0])
    if not ordered:
        return {"points": [], "verdict": "no point of the curve was evaluated"}
    shared = [k for k in ordered[0][1] if all(k in answers for _, answers in ordered)]
    rows = []
    for t, answers in ordered:
        rows.append(
            {
                "t": t,
                **accuracy_with_interval(
                    [answers[k] for k in shared], resamples=resamples, seed=seed
                ),
            }
        )
    if len(ordered) < 3 or not shared:
        return {
            "points": rows,
            "n": len(shared),
            "verdict": "fewer than three points: no inner point to compare with the ends",
        }
    low_end = [float(ordered[0][1][k]) for k in shared]
    high_end = [float(ordered[-1][1][k]) for k in shared]
    inner = [[float(answers[k]) for k in shared] for _, answers in ordered[1:-1]]
    test = inner_point_test(inner, low_end, high_end, resamples=resamples, seed=seed)
    for row, result in zip(rows[1:-1], test["inner"], strict=True):
        row["vs_low_end"], row["vs_high_end"] = result["vs_low_end"], result["vs_high_end"]
        row["p_beats_both"] = result["p_beats_both"]
    correct_family([test], family="this curve", correction="none")
    ts = [t for t, _ in ordered[1:-1]]
    return {
        "points": rows,
        "n": len(shared),
        "test": test,
        "inner_ts": ts,
        "verdict": words_curve(test, ts),
    }
