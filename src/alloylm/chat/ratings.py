"""The judge's statistics: the study's Table 3 scores and Bradley-Terry ratings from pairwise verdicts.

Pure functions of plain values; `chat/judge.py` feeds them.

- Table 3 (Lu, Luu & Buehler 2025, arXiv:2409.03444): each transcript gets 1-10 on four criteria;
  total (/40), average (total / criteria), and the "intelligence score" = average / best average
  x 10, so the best model scores 10.0 (an average of 9.5 as the best gives 10.0; 8.25 gives 8.7).
- Bradley-Terry (Bradley & Terry 1952): P(i beats j) = p_i / (p_i + p_j), fitted with Hunter's
  MM algorithm (Hunter 2004, "MM algorithms for generalized Bradley-Terry models", Ann. Statist.
  32(1), eq. 3): p_i <- W_i / sum_j n_ij / (p_i + p_j). A tie (or "both bad") counts as half a win
  for each side, as in Chatbot Arena's fits. Ratings are on the Elo scale, 1000 + 400 log10 of the
  strength over the models' geometric mean; intervals come from a bootstrap over comparisons.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OUTCOMES = ("a", "b", "tie", "both_bad")


# ---------------------------------------------------------------- Table 3
def intelligence_scores(averages: Mapping[str, float]) -> dict[str, float]:
    """average / best average x 10 for each model (unrounded); the best model gets 10."""
    if not averages:
        return {}
    best = max(averages.values())
    if best <= 0:
        return {name: 0.0 for name in averages}
    return {name: value / best * 10 for name, value in averages.items()}


@dataclass(frozen=True)
class Grade:
    """One model's grades over k judge samples: per criterion the mean, and the totals' spread."""

    model: str
    criteria: dict[str, float]  # mean over samples, per criterion
    totals: list[float]  # the total of each sample
    samples: int

    @property
    def total(self) -> float:
        return sum(self.criteria.values())

    @property
    def average(self) -> float:
        return self.total / len(self.criteria) if self.criteria else 0.0

    @property
    def total_sd(self) -> float:
        return statistics.stdev(self.totals) if len(self.totals) > 1 else 0.0


def grade(model: str, samples: Sequence[Mapping[str, float]], criteria: Sequence[str]) -> Grade:
    """A Grade from k parsed judge replies (each a {criterion: score})."""
    means = {c: statistics.fmean(float(s[c]) for s in samples) for c in criteria} if samples else {}
    totals = [sum(float(s[c]) for c in criteria) for s in samples]
    return Grade(model, means, totals, len(samples))


def table3(grades: Sequence[Grade], max_score: int = 10) -> list[dict[str, Any]]:
    """Rows of the study's Table 3, best first: criteria, total /(criteria x max), average,
    intelligence score, and the spread of the total over the judge's samples."""
    scores = intelligence_scores({g.model: g.average for g in grades if g.samples})
    rows = []
    for g in grades:
        rows.append(
            {
                "model": g.model,
                **{c: round(v, 2) for c, v in g.criteria.items()},
                "total": round(g.total, 2),
                "out_of": max_score * len(g.criteria),
                "average": round(g.average, 3),
                "intelligence_score": round(scores[g.model], 1) if g.model in scores else None,
                "intelligence_score_exact": scores.get(g.model),
                "samples": g.samples,
                "total_sd": round(g.total_sd, 2),
                "total_min": min(g.totals) if g.totals else None,
                "total_max": max(g.totals) if g.totals else None,
            }
        )
    return sorted(rows, key=lambda r: -(r["intelligence_score_exact"] or -1))


# ---------------------------------------------------------------- Bradley-Terry
Comparison = tuple[str, str, str]  # (model a, model b, outcome in OUTCOMES)


def win_matrix(comparisons: Sequence[Comparison], models: Sequence[str]) -> list[list[float]]:
    """wins[i][j]: times model i beat model j, a tie or 'both bad' counting 1/2 to each."""
    index = {name: i for i, name in enumerate(models)}
    wins = [[0.0] * len(models) for _ in models]
    for a, b, outcome in comparisons:
        i, j = index[a], index[b]
        if outcome == "a":
            wins[i][j] += 1
        elif outcome == "b":
            wins[j][i] += 1
        elif outcome in ("tie", "both_bad"):
            wins[i][j] += 0.5
            wins[j][i] += 0.5
        else:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
    return wins


def bradley_terry(
    wins: Sequence[Sequence[float]],
    *,
    prior: float = 0.0,
    iterations: int = 2000,
    tolerance: float = 1e-10,
) -> list[float]:
    """Strengths p (geometric mean 1) maximising the Bradley-Terry likelihood of `wins`.

    Hunter's MM update. `prior` adds that many virtual wins each way between every pair that
    was compared, which keeps the estimate finite when a model never wins (the MLE then does
    not exist: Hunter 2004, Assumption 1). A model never compared keeps strength 1.
    """
    import numpy as np

    w = np.asarray(wins, dtype=float)
    compared = (w + w.T) > 0
    w = w + prior * compared
    np.fill_diagonal(w, 0.0)
    games = w + w.T
    total_wins = w.sum(1)
    played = games.sum(1) > 0
    p = np.ones(len(w))
    for _ in range(iterations):
        denominator = (games / (p[:, None] + p[None, :])).sum(1)
        new = np.where(played, np.maximum(total_wins, 1e-300) / np.where(played, denominator, 1), p)
        new = new / np.exp(np.log(new).mean())
        change = float(np.max(np.abs(np.log(new) - np.log(p))))
        p = new
        if change < tolerance:
            break
    return [float(v) for v in p]


def elo_ratings(strengths: Sequence[float]) -> list[float]:
    """1000 + 400 log10(p_i / geometric mean of p): Elo's scale (400 points = 10:1 odds)."""
    logs = [math.log10(max(p, 1e-300)) for p in strengths]
    centre = statistics.fmean(logs)
    return [1000 + 400 * (value - centre) for value in logs]


def bradley_terry_ratings(
    comparisons: Sequence[Comparison],
    models: Sequence[str] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    prior: float = 0.5,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Per model: Elo-scale rating, strength, percentile-bootstrap interval (comparisons resampled
    with replacement), wins/losses/ties; best first."""
    if models is None:
        models = sorted({name for a, b, _ in comparisons for name in (a, b)})
    models = list(models)
    if not comparisons:
        return []
    point = bradley_terry(win_matrix(comparisons, models), prior=prior)
    ratings = elo_ratings(point)
    rng = random.Random(seed)
    draws: list[list[float]] = [[] for _ in models]
    for _ in range(resamples):
        sample = [comparisons[rng.randrange(len(comparisons))] for _ in comparisons]
        resampled = elo_ratings(bradley_terry(win_matrix(sample, models), prior=prior))
        for i, value in enumerate(resampled):
            draws[i].append(value)
    tail = (1 - confidence) / 2
    rows = []
    for i, name in enumerate(models):
        record = {"wins": 0, "losses": 0, "ties": 0}
        for a, b, outcome in comparisons:
            if name not in (a, b):
                continue
            if outcome in ("tie", "both_bad"):
                record["ties"] += 1
            elif (outcome == "a") == (name == a):
                record["wins"] += 1
            else:
                record["losses"] += 1
        low, high = (
            (percentile(draws[i], tail), percentile(draws[i], 1 - tail))
            if resamples
            else (None, None)
        )
        rows.append(
            {
                "model": name,
                "rating": round(ratings[i], 1),
                "ci_low": None if low is None else round(low, 1),
                "ci_high": None if high is None else round(high, 1),
                "strength": point[i],
                **record,
            }
        )
    return sorted(rows, key=lambda r: -r["rating"])


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 1]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
