"""When does a merge beat its parents? Pure functions over scores and per-question correctness.

The study (Lu, Luu & Buehler, arXiv 2409.03444, Fig. 4-6) compares a merged model's score P_M with
the expected score of its parents, the mean (P_A + P_B) / 2, and with the best parent: a merge
"shows synergy" when P_M exceeds the best parent, i.e. it has capabilities that neither parent has
alone. Whether the gain is real on a finite benchmark is a paired question: the same questions are
answered by both models, so the interval comes from a paired bootstrap over questions.
Parent diversity is one of the study's explanations of when synergy appears: the study's
diversity is |P_A - P_B| (`score_diversity`); the per-question disagreement (how often exactly one
parent is right, `disagreement_rate`) says how different the parents' answers are.

`analyse_merge` is what the study report uses: its interval against the best parent re-chooses the
best parent in every resample (`gap_to_best_of_two`), where the older `synergy_report` pairs the
merge with the parent that is best on the full set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

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


def gap_to_best_of_two(
    merged: Sequence[float],
    parent_a: Sequence[float],
    parent_b: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """P_merged - max(P1, P2) with a paired bootstrap interval over questions.

    Each resample draws one set of question indices for all three models and takes the better
    parent *of that resample*, so the interval also carries the uncertainty of which parent is
    best (fixing the best parent from the full set would make the merge look better than it is).
    """
    from alloylm.evals.stats import bootstrap_indices, percentile_interval

    m, a, b = (np.asarray(v, dtype=float) for v in (merged, parent_a, parent_b))
    if not (m.shape == a.shape == b.shape):
        raise ValueError(
            f"the merge and its parents need the same questions: {m.size}, {a.size}, {b.size} scores"
        )
    if m.size == 0:
        raise ValueError("a merge analysis needs at least one question")
    picks = bootstrap_indices(m.size, resamples, seed)
    diffs = m[picks].mean(axis=1) - np.maximum(a[picks].mean(axis=1), b[picks].mean(axis=1))
    low, high = percentile_interval(diffs, level)
    return {
        "difference": float(m.mean() - max(a.mean(), b.mean())),
        "ci95": [low, high],
        "p_not_better": float((diffs <= 0).mean()),
        "n": int(m.size),
    }


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
    return {
        "n": len(shared),
        "P1": p1,
        "P2": p2,
        "E": (p1 + p2) / 2,
        "P_merged": pm,
        "vs_expected": gap_to_expected(m, a, b, resamples=resamples, seed=seed),
        "vs_best_parent": gap_to_best_of_two(m, a, b, resamples=resamples, seed=seed),
        "diversity": score_diversity(p1, p2),
        "disagreement_rate": disagreement_rate(a, b),
        "emergent": changed["emergent"],
        "lost": changed["lost"],
    }


# --- verdicts: every number in words, with its interval ------------------------------------------


def format_pp(value: float, ci95: Sequence[float]) -> str:
    """'+2.1 pp [0.4, 3.9]' for a difference of two accuracies (fractions)."""
    low, high = ci95
    return f"{value * 100:+.1f} pp [{low * 100:.1f}, {high * 100:.1f}]"


def verdict_vs_best_parent(gap: dict[str, Any], best_parent: str | None = None) -> str:
    """'beats its best parent by +2.1 pp [0.4, 3.9]' when the interval excludes 0 from below, etc."""
    low, high = gap["ci95"]
    amount = format_pp(gap["difference"], gap["ci95"])
    who = f" ({best_parent})" if best_parent else ""
    if low > 0:
        return f"beats its best parent{who} by {amount}"
    if high < 0:
        return f"falls short of its best parent{who}: {amount}"
    return f"no evidence of synergy: {amount} against its best parent{who}"


def verdict_vs_expected(gap: dict[str, Any]) -> str:
    low, high = gap["ci95"]
    amount = format_pp(gap["difference"], gap["ci95"])
    if low > 0:
        return f"beats its parents' mean by {amount}"
    if high < 0:
        return f"falls below its parents' mean: {amount}"
    return f"no evidence it differs from its parents' mean: {amount}"


def verdict_vs_baseline(paired: dict[str, Any], baseline: str) -> str:
    low, high = paired["ci95"]
    amount = format_pp(paired["difference"], paired["ci95"])
    if low > 0:
        return f"better than {baseline} by {amount}"
    if high < 0:
        return f"worse than {baseline}: {amount}"
    return f"no evidence of a difference from {baseline}: {amount}"
