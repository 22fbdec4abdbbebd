"""Confidence intervals and comparisons for benchmark scores.

Percentile bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13): resample
the questions with replacement, recompute the score, take the 2.5th and 97.5th percentiles. The
paired bootstrap (Koehn, EMNLP 2004, "Statistical significance tests for machine translation
evaluation") resamples the same question indices for two models, so that question difficulty
cancels out of their difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


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


def ratio_bootstrap_ci(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Interval of sum(num)/sum(den) resampling whole units (documents for perplexity's NLL/token)."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if num.size == 0:
        return (float("nan"), float("nan"))
    picks = bootstrap_indices(num.size, resamples, seed)
    return percentile_interval(num[picks].sum(axis=1) / den[picks].sum(axis=1), level)


def paired_bootstrap(
    correct_a: Sequence[float],
    correct_b: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> dict[str, float]:
    """Difference mean(a) - mean(b) on the same questions, its interval, and P(resampled diff <= 0)."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same questions: {a.size} vs {b.size} scores")
    if a.size == 0:
        raise ValueError("paired bootstrap needs at least one question")
    picks = bootstrap_indices(a.size, resamples, seed)
    diffs = a[picks].mean(axis=1) - b[picks].mean(axis=1)
    low, high = percentile_interval(diffs, level)
    return {
        "difference": float(a.mean() - b.mean()),
        "ci95": [low, high],
        "p_not_better": float((diffs <= 0).mean()),
        "n": int(a.size),
    }


def relative_improvement(score: float, baseline: float) -> float | None:
    """(P - P_base) / P_base, the study's relative improvement; None when the baseline is 0."""
    if baseline == 0:
        return None
    return (score - baseline) / baseline
