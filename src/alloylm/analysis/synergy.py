"""When does a merge beat its parents? Pure functions over scores and per-question correctness.

The study (Lu, Luu & Buehler, arXiv 2409.03444, Fig. 4-6) compares a merged model's score P_M with
the expected score of its parents, the mean (P_A + P_B) / 2, and with the best parent: a merge
"shows synergy" when P_M exceeds the best parent, i.e. it has capabilities that neither parent has
alone. Whether the gain is real on a finite benchmark is a paired question: the same questions are
answered by both models, so the interval comes from a paired bootstrap over questions.
Parent diversity is one of the study's explanations of when synergy appears: the study's
diversity is |P_A - P_B| (`score_diversity`); the per-question disagreement (how often exactly one
parent is right, `disagreement_rate`) says how different the parents' answers are.

`analyse_merge` is what the study report uses: it tests the merge against *both* parents with
the intersection-union test of `alloylm.analysis.verdicts.versus_both_parents` (Berger 1982) and
reports both paired differences. (An earlier percentile bootstrap of m - max(a, b), with the best
parent re-chosen per resample, said "falls short" about twice as often as it claimed: issue 23.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alloylm.analysis.verdicts import format_pp as _format_pp
from alloylm.analysis.verdicts import versus_both_parents
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


# --- the study's per-merge analysis (issue 10) ---------------------------------------------------


def score_diversity(parent_a: float, parent_b: float) -> float:
    """The study's diversity of two parents, |P1 - P2| (a difference of scores, not of answers)."""
    return abs(parent_a - parent_b)


def disagreement_rate(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> float:
    """Per-question disagreement of two parents: the share of questions exactly one gets right."""
    return parent_diversity(correct_a, correct_b)


def gap_to_expected(
    merged: Sequence[float],
    parent_a: Sequence[float],
    parent_b: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """P_merged - E with E = (P1 + P2) / 2, paired over questions.

    E is the mean of per-question parent means, so P_merged - E is the mean of
    m_i - (a_i + b_i) / 2 and the ordinary paired bootstrap applies.
    """
    mean_of_parents = [(float(x) + float(y)) / 2 for x, y in zip(parent_a, parent_b, strict=True)]
    return paired_bootstrap(
        [float(v) for v in merged], mean_of_parents, resamples=resamples, seed=seed
    )


def emergent_and_lost(
    merged: dict[str, bool], parent_a: dict[str, bool], parent_b: dict[str, bool]
) -> dict[str, list[str]]:
    """Question ids only the merge gets right ("emergent") and those only the merge gets wrong
    ("lost": both parents right, the merge wrong), over the questions all three answered."""
    shared = [key for key in merged if key in parent_a and key in parent_b]
    return {
        "emergent": [k for k in shared if merged[k] and not parent_a[k] and not parent_b[k]],
        "lost": [k for k in shared if not merged[k] and parent_a[k] and parent_b[k]],
    }


def analyse_merge(
    merged: dict[str, bool],
    parent_a: dict[str, bool],
    parent_b: dict[str, bool],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the study reports for one merge on one benchmark, keyed by question id.

    Only questions all three models answered are compared (the same questions, paired).
    """
    shared = [key for key in merged if key in parent_a and key in parent_b]
    if not shared:
        raise ValueError("the merge and its parents share no question")
    m = [float(bool(merged[k])) for k in shared]
    a = [float(bool(parent_a[k])) for k in shared]
    b = [float(bool(parent_b[k])) for k in shared]
    p1, p2, pm = sum(a) / len(a), sum(b) / len(b), sum(m) / len(m)
    changed = emergent_and_lost(merged, parent_a, parent_b)
    parents = versus_both_parents(m, a, b, resamples=resamples, seed=seed)
    return {
        "n": len(shared),
        "P1": p1,
        "P2": p2,
        "E": (p1 + p2) / 2,
        "P_merged": pm,
        "vs_expected": gap_to_expected(m, a, b, resamples=resamples, seed=seed),
        "vs_parents": parents,
        # the paired difference to the parent that is better on the full set (for tables)
        "vs_best_parent": parents["vs_a"] if p1 >= p2 else parents["vs_b"],
        "diversity": score_diversity(p1, p2),
        "disagreement_rate": disagreement_rate(a, b),
        "emergent": changed["emergent"],
        "lost": changed["lost"],
    }


# --- words: see alloylm.analysis.verdicts, which owns every verdict --------------------------------
format_pp = _format_pp
