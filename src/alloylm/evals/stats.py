"""Confidence intervals and comparisons for benchmark scores.

Percentile bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13): resample
the questions with replacement, recompute the score, take the 2.5th and 97.5th percentiles. The
paired bootstrap (Koehn, EMNLP 2004, "Statistical significance tests for machine translation
evaluation") resamples the same question indices for two models, so that question difficulty
cancels out of their difference. A bootstrap p-value is the share of resampled differences on the
wrong side of 0 (Efron & Tibshirani ch. 16); the two-sided p is twice the smaller tail, so p < 0.05
exactly when the 95% percentile interval excludes 0.

Few units: no interval below 2 units (a single document or question has no spread to resample),
and below 30 units the percentile interval is marked approximate: with 8 documents a nominal 95%
interval covers about 88% of the time (issue 23; Schenker & Gentleman 2001 on why per-model
intervals cannot replace a paired one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
MIN_UNITS_FOR_INTERVAL = 2
APPROXIMATE_BELOW = 30


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) question indices drawn with replacement; one seed -> one table."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    correct: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `correct` (0/1 per question)."""
    scores = np.asarray(correct, dtype=float)
    if scores.size == 0:
        return (float("nan"), float("nan"))
    means = scores[bootstrap_indices(scores.size, resamples, seed)].mean(axis=1)
    return percentile_interval(means, level)


def interval_note(units: int, what: str = "documents") -> tuple[bool, str | None]:
    """(approximate?, note) for an interval over `units` resampled units; see the module docstring."""
    if units < MIN_UNITS_FOR_INTERVAL:
        return False, f"{units} {what}: no interval (the bootstrap needs at least 2)"
    if units < APPROXIMATE_BELOW:
        return True, (
            f"approximate: only {units} {what}; a percentile bootstrap interval covers less "
            f"than it claims below {APPROXIMATE_BELOW}"
        )
    return False, None


def ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
    what: str = "documents",
) -> dict[str, object]:
    """Interval of sum(num)/sum(den) resampling whole units (documents for perplexity's NLL/token).

    {"ci95": [low, high] or [None, None], "approximate": bool, "ci_note": str or None}: no interval
    below 2 units, nor when a resample's denominators sum to 0 (the ratio is then undefined, e.g.
    extract F1 over passages with no fields); an approximate one below 30 units.
    """
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    approximate, note = interval_note(int(num.size), what)
    if num.size < MIN_UNITS_FOR_INTERVAL:
        return {"ci95": [None, None], "approximate": False, "ci_note": note}
    picks = bootstrap_indices(num.size, resamples, seed)
    totals = den[picks].sum(axis=1)
    if np.any(totals == 0):
        return {
            "ci95": [None, None],
            "approximate": False,
            "ci_note": f"no interval: {int((totals == 0).sum())} of {resamples} resamples have "
            "a denominator of 0 (the ratio is undefined there)",
        }
    low, high = percentile_interval(num[picks].sum(axis=1) / totals, level)
    return {"ci95": [low, high], "approximate": approximate, "ci_note": note}


def ratio_bootstrap_ci(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> tuple[float | None, float | None]:
    """`ratio_interval`'s (low, high); (None, None) where it gives no interval."""
    low, high = ratio_interval(
        numerators, denominators, resamples=resamples, seed=seed, level=level
    )["ci95"]  # type: ignore[misc]
    return low, high


def tail_p_values(diffs: np.ndarray) -> dict[str, float]:
    """Bootstrap p-values of resampled differences: p_greater = P*(d <= 0) (evidence that the
    difference is > 0), p_less = P*(d >= 0), p = min(1, 2 min(p_greater, p_less))."""
    p_greater = float((diffs <= 0).mean())
    p_less = float((diffs >= 0).mean())
    return {"p_greater": p_greater, "p_less": p_less, "p": min(1.0, 2 * min(p_greater, p_less))}


def paired_bootstrap(
    correct_a: Sequence[float],
    correct_b: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, float]:
    """Difference mean(a) - mean(b) on the same questions, its interval, and its bootstrap
    p-values (`tail_p_values`; p_not_better = p_greater, kept for older readers)."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same questions: {a.size} vs {b.size} scores")
    if a.size == 0:
        raise ValueError("paired bootstrap needs at least one question")
    picks = bootstrap_indices(a.size, resamples, seed)
    diffs = a[picks].mean(axis=1) - b[picks].mean(axis=1)
    low, high = percentile_interval(diffs, level)
    tails = tail_p_values(diffs)
    return {
        "difference": float(a.mean() - b.mean()),
        "ci95": [low, high],
        "p_not_better": tails["p_greater"],
        **tails,
        "n": int(a.size),
    }


def paired_ratio_bootstrap(
    nll_a: Sequence[float],
    tokens_a: Sequence[float],
    nll_b: Sequence[float],
    tokens_b: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, object]:
    """Perplexity ratio ppl_a / ppl_b of two models on the same documents, paired.

    log(ppl_a / ppl_b) = NLL_a/token - NLL_b/token. Every resample draws the same documents for
    both models (Koehn 2004's paired bootstrap, applied to the ratio estimator), so a document
    that is hard for both cancels out; an overlap test of two per-model intervals ignores this
    pairing and rejects far less often than it claims (Schenker & Gentleman 2001, Am. Stat.
    55:182). Documents are few (8 held-out sections in study_cpu), where a percentile interval
    covers 87% instead of 95% (benchmarks/calibration.py); so the interval is t-based: the
    bootstrap standard error of the log ratio, times sqrt(n / (n - 1)), with Student's t on n - 1
    degrees of freedom (Efron & Tibshirani 1993, ch. 12), and p = 2 P(T > |log ratio| / se).
    Returns the ratio, its interval (ratio scale), p-values of the log ratio (`p_less`: evidence
    that a is lower), and an approximate flag / note below 30 documents.
    """
    from scipy import stats

    na, ta = np.asarray(nll_a, dtype=float), np.asarray(tokens_a, dtype=float)
    nb, tb = np.asarray(nll_b, dtype=float), np.asarray(tokens_b, dtype=float)
    if not (na.shape == ta.shape == nb.shape == tb.shape):
        raise ValueError(f"a paired ratio needs the same documents: {na.size} vs {nb.size}")
    log_ratio = float(na.sum() / max(ta.sum(), 1) - nb.sum() / max(tb.sum(), 1))
    n = int(na.size)
    approximate, note = interval_note(n)
    out: dict[str, object] = {
        "ratio": float(np.exp(log_ratio)),
        "log_ratio": log_ratio,
        "n": n,
        "approximate": approximate,
        "ci_note": note,
        "interval": f"t-based ({n - 1} df), bootstrap standard error",
    }
    if n < MIN_UNITS_FOR_INTERVAL or ta.sum() == 0 or tb.sum() == 0:
        return {**out, "ci95": [None, None], "p_greater": 1.0, "p_less": 1.0, "p": 1.0}
    picks = bootstrap_indices(n, resamples, seed)
    ta_sum, tb_sum = ta[picks].sum(axis=1), tb[picks].sum(axis=1)
    valid = (ta_sum > 0) & (tb_sum > 0)
    diffs = (
        na[picks].sum(axis=1)[valid] / ta_sum[valid] - nb[picks].sum(axis=1)[valid] / tb_sum[valid]
    )
    se = float(diffs.std(ddof=1)) * float(np.sqrt(n / (n - 1))) if diffs.size > 1 else 0.0
    if se == 0.0:  # every resample gives the same log ratio
        p_one = 0.0 if log_ratio != 0 else 1.0
        return {**out, "ci95": [out["ratio"], out["ratio"]], "se": 0.0,
                "p_greater": 1.0 if log_ratio <= 0 else 0.0,
                "p_less": 1.0 if log_ratio >= 0 else 0.0, "p": p_one}  # fmt: skip
    half = float(stats.t.ppf(1 - (1 - level) / 2, n - 1)) * se
    tail = float(stats.t.sf(log_ratio / se, n - 1))  # P(T >= t): small when a is clearly higher
    return {
        **out,
        "ci95": [float(np.exp(log_ratio - half)), float(np.exp(log_ratio + half))],
        "se": se,
        "p_greater": tail,  # evidence that the log ratio is > 0 (a's perplexity higher)
        "p_less": 1.0 - tail,
        "p": min(1.0, 2 * min(tail, 1.0 - tail)),
    }


def relative_improvement(
    score: float, baseline: float, *, higher_is_better: bool = True
) -> float | None:
    """(P - P_base) / P_base, the study's relative improvement; None when the baseline is 0.

    For a lower-is-better metric (perplexity) the sign is flipped, (P_base - P) / P_base, so that a
    positive improvement always means better (as `merge_gain` signs its gains).
    """
    if baseline == 0:
        return None
    sign = 1.0 if higher_is_better else -1.0
    return sign * (score - baseline) / baseline


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6:65): sort p ascending,
    p_adj(i) = max over j <= i of min(1, (m - j + 1) p(j)). Rejecting where p_adj < alpha controls
    the family-wise error rate at alpha under any dependence between the tests."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def difference_words(
    difference: float, significant: bool, *, better: str = "better", worse: str = "worse"
) -> str:
    """The verdict words of a paired difference: 'better' / 'worse' when it survived its test,
    else 'no evidence of a difference'."""
    if not significant:
        return "no evidence of a difference"
    return better if difference > 0 else worse
