"""When does a merge beat its parents? Pure functions over scores and per-question correctness.

The study (Lu, Luu & Buehler, arXiv 2409.03444, Fig. 4-6) compares a merged model's score P_M with
the expected score of its parents, the mean (P_A + P_B) / 2, and with the best parent: a merge
"shows synergy" when P_M exceeds the best parent, i.e. it has capabilities that neither parent has
alone. Whether the gain is real on a finite benchmark is a paired question: the same questions are
answered by both models, so the interval comes from a paired bootstrap over questions.
Parent diversity (how often exactly one parent is right) is one of the study's explanations of
when synergy appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alloylm.evals.stats import paired_bootstrap


def merge_gain(
    parent_scores: Sequence[float], merged_score: float, *, higher_is_better: bool = True
) -> dict[str, Any]:
    """Expected score (parents' mean), best parent, and the merge's gains over both.

    For lower-is-better metrics (perplexity) the gains are signed so that positive = better.
    """
    if len(parent_scores) < 2:
        raise ValueError("a merge analysis needs at least two parent scores")
    sign = 1.0 if higher_is_better else -1.0
    expected = sum(parent_scores) / len(parent_scores)
    best = max(parent_scores) if higher_is_better else min(parent_scores)
    gain_expected = sign * (merged_score - expected)
    gain_best = sign * (merged_score - best)
    return {
        "expected": expected,
        "best_parent": best,
        "merged": merged_score,
        "gain_over_expected": gain_expected,
        "gain_over_best": gain_best,
        "relative_gain_over_expected": gain_expected / abs(expected) if expected else None,
        "beats_expected": gain_expected > 0,
        "synergy": gain_best > 0,
    }


def parent_diversity(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> float:
    """Fraction of questions that exactly one of the two parents answers correctly."""
    if len(correct_a) != len(correct_b) or not correct_a:
        raise ValueError(
            "parent diversity needs the same, non-empty list of questions for both parents"
        )
    return sum(1 for a, b in zip(correct_a, correct_b, strict=True) if bool(a) != bool(b)) / len(
        correct_a
    )


def synergy_report(
    merged: Sequence[bool],
    parents: dict[str, Sequence[bool]],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy-based synergy of one merge: gains, parent diversity, paired interval vs best parent."""
    names = list(parents)
    scores = {name: sum(map(bool, values)) / len(values) for name, values in parents.items()}
    merged_score = sum(map(bool, merged)) / len(merged)
    report = merge_gain([scores[n] for n in names], merged_score)
    best_name = max(names, key=lambda n: scores[n])
    report["parents"] = scores
    report["best_parent_name"] = best_name
    report["vs_best_parent"] = paired_bootstrap(
        [float(bool(v)) for v in merged],
        [float(bool(v)) for v in parents[best_name]],
        resamples=resamples,
        seed=seed,
    )
    if len(names) == 2:
        report["parent_diversity"] = parent_diversity(parents[names[0]], parents[names[1]])
    return report
