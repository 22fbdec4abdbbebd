"""Across all merges of a study: which attributes go with synergy, and do merges fall into groups?

The study (Lu, Luu & Buehler, arXiv 2409.03444) correlates merge attributes (Fig. 10: SFT yes/no,
DPO/ORPO, Base/Instruct, parent diversity, improvement, merged performance) and clusters the
merges on their expected score E and actual score A (Fig. 8: K-means with k = 2 on z-scored
(E, A), and a hierarchical-clustering dendrogram). With a handful of merges these are
descriptions, not tests: every function here says when there is not enough to compute it.

scipy and scikit-learn are imported inside the functions (they cost a second to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_POINTS = 3  # two points are always perfectly correlated and always form two clusters


def not_enough(what: str, have: int, need: int = MIN_POINTS) -> str:
    return f"not enough merges for {what}: needs {need}, the study has {have}"


def zscore(values: Sequence[float]) -> np.ndarray:
    """(x - mean) / std (population std); a constant column becomes all zeros, not NaN."""
    array = np.asarray(values, dtype=float)
    if array.size == 0 or np.ptp(array) == 0:  # std of equal floats can be 1e-17, not 0
        return np.zeros_like(array)
    return (array - array.mean()) / array.std()


def correlation_matrix(columns: dict[str, Sequence[float]]) -> dict[str, Any]:
    """Pearson r between every pair of columns (one value per merge in each).

    Constant columns (every merge has the same value, e.g. all are SFT models) have no correlation
    and are left out, named in `constant`. Returns names, the matrix (list of rows), p-values, n.
    """
    from scipy import stats

    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"correlation columns differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    if n < MIN_POINTS:
        return {
            "names": [],
            "r": [],
            "p": [],
            "n": n,
            "constant": [],
            "note": not_enough("a correlation matrix", n),
        }
    constant = [
        name for name, values in columns.items() if np.ptp(np.asarray(values, dtype=float)) == 0
    ]
    names = [name for name in columns if name not in constant]
    data = {name: np.asarray(columns[name], dtype=float) for name in names}
    r = [
        [1.0 if a == b else float(stats.pearsonr(data[a], data[b]).statistic) for b in names]
        for a in names
    ]
    p = [
        [0.0 if a == b else float(stats.pearsonr(data[a], data[b]).pvalue) for b in names]
        for a in names
    ]
    note = None
    if len(names) < 2:
        note = "fewer than two attributes vary across the merges: no correlation to show"
    return {"names": names, "r": r, "p": p, "n": n, "constant": constant, "note": note}


def correlation_interval(
    x: Sequence[float], y: Sequence[float], level: float = 0.95
) -> dict[str, Any]:
    """r, its p-value and (n >= 4) the Fisher-z interval, for stating one correlation in words."""
    from scipy import stats

    result = stats.pearsonr(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    out: dict[str, Any] = {"r": float(result.statistic), "p": float(result.pvalue), "n": len(x)}
    if len(x) >= 4:
        interval = result.confidence_interval(confidence_level=level)
        out["ci95"] = [float(interval.low), float(interval.high)]
    return out


def verdict_correlation(name_x: str, name_y: str, result: dict[str, Any]) -> str:
    """'diversity and gain over E: r = +0.62 [-0.55, 0.97], p = 0.27 over 5 merges: no evidence of a correlation'."""
    text = f"{name_x} and {name_y}: r = {result['r']:+.2f}"
    if "ci95" in result:
        low, high = result["ci95"]
        text += f" [{low:+.2f}, {high:+.2f}]"
    text += f", p = {result['p']:.2g} over {result['n']} merges"
    if "ci95" in result and (result["ci95"][0] > 0 or result["ci95"][1] < 0):
        return text + ": the interval excludes 0"
    return text + ": no evidence of a correlation"


def kmeans_two(
    expected: Sequence[float], actual: Sequence[float], *, seed: int = 0
) -> dict[str, Any]:
    """K-means with k = 2 on z-scored (E, A), as in the study's Fig. 8.

    Labels are renumbered so that cluster 0 holds the first merge: the same data give the same
    labels whatever the solver's internal numbering.
    """
    n = len(expected)
    if n < MIN_POINTS:
        return {"labels": [], "points": [], "note": not_enough("K-means clustering", n)}
    points = np.column_stack([zscore(expected), zscore(actual)])
    if len(np.unique(points.round(12), axis=0)) < 2:
        return {
            "labels": [],
            "points": points.tolist(),
            "note": "every merge has the same E and A: nothing to cluster",
        }
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(points)
    labels = [int(v) for v in model.labels_]
    if labels[0] != 0:
        labels = [1 - v for v in labels]
        centres = model.cluster_centers_[::-1]
    else:
        centres = model.cluster_centers_
    return {
        "labels": labels,
        "points": points.tolist(),
        "centres": centres.tolist(),
        "inertia": float(model.inertia_),
        "note": None,
    }


def hierarchical_linkage(points: Sequence[Sequence[float]], method: str = "ward") -> dict[str, Any]:
    """scipy's linkage matrix (rows: cluster i, cluster j, distance, size) of the z-scored points."""
    n = len(points)
    if n < MIN_POINTS:
        return {"linkage": [], "note": not_enough("a dendrogram", n)}
    from scipy.cluster.hierarchy import linkage

    return {
        "linkage": linkage(np.asarray(points, dtype=float), method=method).tolist(),
        "method": method,
        "note": None,
    }
